"""The staff dashboard's figures for a window of time, and its bar charts as SVG geometry."""

import statistics
from datetime import timedelta

from django.db.models import Count, Q, Sum
from django.db.models.functions import TruncDay, TruncHour
from django.utils import timezone

from generation.models import CreditEntry, Job

CHART_WIDTH, CHART_HEIGHT = 480, 120


def _percentile(values: list[float], share: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    return values[min(len(values) - 1, round(share * (len(values) - 1)))]


def figures(hours: int) -> dict:
    since = timezone.now() - timedelta(hours=hours)
    jobs = Job.objects.filter(created_at__gte=since)
    counts = dict(jobs.values_list("status").annotate(n=Count("pk")).order_by())
    ended = counts.get(Job.SUCCEEDED, 0) + counts.get(Job.FAILED, 0)
    succeeded = jobs.filter(status=Job.SUCCEEDED)
    totals = [(j.finished_at - j.created_at).total_seconds() for j in succeeded.only("created_at", "finished_at")]
    engine = [j.timings["total"] for j in succeeded.only("timings") if "total" in j.timings]
    waits = [(j.started_at - j.created_at).total_seconds() for j in jobs.exclude(started_at=None)
             .only("created_at", "started_at")]
    images = succeeded.aggregate(n=Sum("num_images"))["n"] or 0
    credits = dict(CreditEntry.objects.filter(created_at__gte=since).values_list("kind").annotate(n=Sum("amount"))
                   .order_by())
    charged, refunded = -(credits.get(CreditEntry.CHARGE) or 0), credits.get(CreditEntry.REFUND) or 0
    return {
        "hours": hours, "submitted": sum(counts.values()), "counts": counts,
        "active": counts.get(Job.QUEUED, 0) + counts.get(Job.RUNNING, 0),
        "failure_rate": counts.get(Job.FAILED, 0) / ended if ended else None,
        "latency_median": _percentile(totals, 0.5), "latency_p95": _percentile(totals, 0.95),
        "wait_median": statistics.median(waits) if waits else None, "images": images,
        "charged": charged, "refunded": refunded,
        "credits_per_image": (charged - refunded) / images if images else None,
        "gpu_seconds_per_image": sum(engine) / images if images else None,
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
