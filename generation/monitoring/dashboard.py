"""The staff dashboard's figures for a window of time, and its bar charts as SVG geometry."""

from datetime import timedelta

from django.db import connection
from django.db.models import Aggregate, Count, DurationField, F, FloatField, Q, Sum
from django.db.models.fields.json import KT
from django.db.models.functions import Cast, TruncDay, TruncHour
from django.utils import timezone

from generation.credits.models import CreditEntry
from generation.jobs.models import Job

CHART_WIDTH, CHART_HEIGHT = 480, 120


class Percentile(Aggregate):
    """PostgreSQL's PERCENTILE_DISC: the value at that share of the ordered values."""

    function, template = "PERCENTILE_DISC", "%(function)s(%(share)s) WITHIN GROUP (ORDER BY %(expressions)s)"

    def __init__(self, expression, share: float):
        super().__init__(expression, share=float(share), output_field=DurationField())


def _percentiles(queryset, start: str, end: str, shares: tuple) -> list[float | None]:
    """Percentiles of end - start in seconds, counted in the database: a busy week is many
    thousands of jobs. (SQLite, the small embedded default, has no percentile: read there.)"""
    queryset = queryset.exclude(**{f"{end}__isnull": True})
    duration = F(end) - F(start)
    if connection.vendor == "postgresql":
        found = queryset.aggregate(**{f"p{k}": Percentile(duration, share) for k, share in enumerate(shares)})
        return [value.total_seconds() if value is not None else None for value in found.values()]
    values = sorted((b - a).total_seconds() for a, b in queryset.values_list(start, end))
    return [values[min(len(values) - 1, round(share * (len(values) - 1)))] if values else None for share in shares]


def figures(hours: int) -> dict:
    since = timezone.now() - timedelta(hours=hours)
    jobs = Job.objects.filter(created_at__gte=since)
    counts = dict(jobs.values_list("status").annotate(n=Count("pk")).order_by())
    ended = counts.get(Job.SUCCEEDED, 0) + counts.get(Job.FAILED, 0)
    succeeded = jobs.filter(status=Job.SUCCEEDED)
    latency_median, latency_p95 = _percentiles(succeeded, "created_at", "finished_at", (0.5, 0.95))
    (wait_median,) = _percentiles(jobs, "created_at", "started_at", (0.5,))
    done = succeeded.aggregate(images=Sum("num_images"), engine=Sum(Cast(KT("timings__total"), FloatField())))
    images = done["images"] or 0
    credits = dict(CreditEntry.objects.filter(created_at__gte=since).values_list("kind").annotate(n=Sum("amount"))
                   .order_by())
    charged, refunded = -(credits.get(CreditEntry.CHARGE) or 0), credits.get(CreditEntry.REFUND) or 0
    return {
        "hours": hours, "submitted": sum(counts.values()), "counts": counts,
        "active": counts.get(Job.QUEUED, 0) + counts.get(Job.RUNNING, 0),
        "failure_rate": counts.get(Job.FAILED, 0) / ended if ended else None,
        "latency_median": latency_median, "latency_p95": latency_p95, "wait_median": wait_median, "images": images,
        "charged": charged, "refunded": refunded,
        "credits_per_image": (charged - refunded) / images if images else None,
        "gpu_seconds_per_image": (done["engine"] or 0) / images if images else None,
        "chart": chart(jobs, hours),
    }


def chart(jobs, hours: int) -> dict:
    """Jobs per hour (a day) or per day (a week): a bar each, its failed part drawn apart."""
    trunc, step, slots = (TruncHour, timedelta(hours=1), hours) if hours <= 24 else (TruncDay, timedelta(days=1),
                                                                                     hours // 24)
    now = timezone.now()
    rows = {row["slot"]: row for row in jobs.annotate(slot=trunc("created_at")).values("slot").annotate(
        total=Count("pk"), failed=Count("pk", filter=Q(status=Job.FAILED))).order_by()}
    current = now.replace(minute=0, second=0, microsecond=0)
    if hours > 24:
        current = current.replace(hour=0)
    slots_at = [current - step * k for k in reversed(range(slots))]
    peak = max([row["total"] for row in rows.values()] + [1])
    width = CHART_WIDTH / slots
    bars = []
    for k, at in enumerate(slots_at):
        row = rows.get(at, {"total": 0, "failed": 0})
        height, failed = CHART_HEIGHT * row["total"] / peak, CHART_HEIGHT * row["failed"] / peak
        bars.append({"x": round(k * width + 1, 1), "width": round(width - 2, 1), "y": round(CHART_HEIGHT - height, 1),
                     "height": round(height, 1), "failed_y": round(CHART_HEIGHT - failed, 1),
                     "failed_height": round(failed, 1), "label": f"{at:%H:00}" if hours <= 24 else f"{at:%a %d}",
                     "total": row["total"], "failed": row["failed"]})
    return {"bars": bars, "peak": peak, "width": CHART_WIDTH, "height": CHART_HEIGHT}
