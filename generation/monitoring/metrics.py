"""Prometheus figures. Job figures come from the database, so they are right whichever process
ran the jobs; each worker serves its own process figures (pipeline cache, GPU memory)."""

import logging
from datetime import timedelta

from django.db.models import Count, F, FloatField, Q, Sum
from django.db.models.fields.json import KT
from django.db.models.functions import Cast
from django.utils import timezone
from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

from generation.credits.models import CreditEntry
from generation.jobs.models import Job

log = logging.getLogger(__name__)
BUCKETS = (0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600)
PHASES = ("load", "denoise", "decode", "total")


def _histogram(family: HistogramMetricFamily, labels: list, queryset, value, duration=False) -> None:
    """Add one histogram to `family`, counted by the database: `value` is the expression measured,
    in seconds (or a duration, with `duration`)."""
    bound = (lambda b: timedelta(seconds=b)) if duration else (lambda b: b)
    counts = queryset.annotate(v=value).aggregate(
        n=Count("pk", filter=Q(v__isnull=False)), total=Sum("v"),
        **{f"le{k}": Count("pk", filter=Q(v__lte=bound(b))) for k, b in enumerate(BUCKETS)})
    total = counts["total"] or 0
    family.add_metric(labels, [(str(b), counts[f"le{k}"]) for k, b in enumerate(BUCKETS)] + [("+Inf", counts["n"])],
                      total.total_seconds() if duration and total else total)


def _seconds(key: str):
    return Cast(KT(f"timings__{key}"), FloatField())


class DatabaseCollector:
    def collect(self):
        jobs = Job.objects.all()
        by_status = dict(jobs.values_list("status").annotate(n=Count("pk")).order_by())
        family = GaugeMetricFamily("sdweb_jobs", "Jobs by status.", labels=["status"])
        for status, _ in Job.STATUSES:
            family.add_metric([status], by_status.get(status, 0))
        yield family
        yield GaugeMetricFamily("sdweb_queue_depth", "Jobs waiting for a worker.", value=by_status.get(Job.QUEUED, 0))
        oldest = jobs.filter(status=Job.QUEUED).order_by("created_at").values_list("created_at", flat=True).first()
        yield GaugeMetricFamily("sdweb_queue_oldest_wait_seconds", "How long the oldest queued job has waited.",
                                value=(timezone.now() - oldest).total_seconds() if oldest else 0)
        waits = HistogramMetricFamily("sdweb_queue_wait_seconds", "From submit to the start of the last attempt.")
        _histogram(waits, [], jobs.exclude(started_at=None), F("started_at") - F("created_at"), duration=True)
        yield waits
        succeeded = jobs.filter(status=Job.SUCCEEDED)
        latency = HistogramMetricFamily("sdweb_generation_seconds", "Engine time of succeeded jobs, by phase.",
                                        labels=["phase"])
        for phase in PHASES:
            _histogram(latency, [phase], succeeded, _seconds(phase))
        yield latency
        hour_ago = timezone.now() - timedelta(hours=1)
        ended = dict(jobs.filter(finished_at__gte=hour_ago).values_list("status").annotate(n=Count("pk")).order_by())
        done = ended.get(Job.SUCCEEDED, 0) + ended.get(Job.FAILED, 0)
        yield GaugeMetricFamily("sdweb_failure_ratio_1h", "Failed / (failed + succeeded), jobs ended in the last hour.",
                                value=ended.get(Job.FAILED, 0) / done if done else 0)
        yield CounterMetricFamily("sdweb_previews_sent", "Live previews sent to pages.",
                                  value=jobs.aggregate(n=Sum("previews_sent"))["n"] or 0)
        credits = dict(CreditEntry.objects.values_list("kind").annotate(n=Sum("amount")).order_by())
        yield CounterMetricFamily("sdweb_credits_charged", "Credits charged for jobs.",
                                  value=-(credits.get(CreditEntry.CHARGE) or 0))
        yield CounterMetricFamily("sdweb_credits_refunded", "Credits refunded for failed, cancelled or withheld work.",
                                  value=credits.get(CreditEntry.REFUND) or 0)
        images = CounterMetricFamily("sdweb_images_generated", "Images made by succeeded jobs.", labels=["checkpoint"])
        for name, count in succeeded.values_list("checkpoint__name").annotate(n=Sum("num_images")).order_by():
            images.add_metric([name], count)
        yield images
        totals = succeeded.aggregate(seconds=Sum(_seconds("total")), images=Sum("num_images"))
        yield GaugeMetricFamily("sdweb_gpu_seconds_per_image", "Engine seconds per image made, all time.",
                                value=(totals["seconds"] or 0) / totals["images"] if totals["images"] else 0)


def render_database_metrics() -> bytes:
    from prometheus_client import generate_latest

    registry = CollectorRegistry()
    registry.register(DatabaseCollector())
    return generate_latest(registry)


class WorkerCollector:
    """This worker process: its pipeline cache, and GPU memory when it has a GPU."""

    def collect(self):
        from generation.engine.loading import PIPELINES  # torch: only worker processes collect this

        info = PIPELINES.info()
        yield CounterMetricFamily("sdweb_worker_pipeline_cache_hits", "Runs that found their model loaded.",
                                  value=info["hits"])
        yield CounterMetricFamily("sdweb_worker_pipeline_loads", "Models loaded from disk.", value=info["misses"])
        yield CounterMetricFamily("sdweb_worker_pipeline_load_seconds", "Time spent loading models.",
                                  value=info["load_seconds"])
        yield GaugeMetricFamily("sdweb_worker_pipeline_resident_bytes", "Bytes of models held.",
                                value=info["resident_bytes"])
        import torch

        if torch.cuda.is_available():
            yield GaugeMetricFamily("sdweb_worker_gpu_memory_allocated_bytes", "torch's allocated GPU memory.",
                                    value=torch.cuda.memory_allocated())
            yield GaugeMetricFamily("sdweb_worker_gpu_memory_reserved_bytes", "torch's reserved GPU memory.",
                                    value=torch.cuda.memory_reserved())
            try:
                yield GaugeMetricFamily("sdweb_worker_gpu_utilisation_ratio", "GPU busy share (NVML).",
                                        value=torch.cuda.utilization() / 100)
            except Exception:  # NVML (the nvidia-ml-py package) is not installed
                pass


def serve_worker_metrics(port: int) -> None:
    """Serve this process's figures on `port`; a taken port is logged, not fatal to the worker."""
    registry = CollectorRegistry()
    registry.register(WorkerCollector())
    try:
        start_http_server(port, registry=registry)
    except OSError as error:
        log.warning("worker metrics not served on port %s: %s", port, error)
