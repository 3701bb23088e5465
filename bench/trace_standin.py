"""Where the stand-in GPU idles: with BENCH_TRACE=1, bench/standin.py records each gap in its launch
queue, and the worker (a Celery pool process) the spans of its phases (claim, requests, text
encoding, denoising, decode, saves, hand-over); written to $SDWEB_VAR_DIR/trace-<pid>.json every 2 s.
This prints, for the gaps, how much of their time each phase overlapped.

    BENCH_TRACE=1 .venv/bin/python bench/throughput.py --standin-ms 25 --stack production --users 32 ...
    .venv/bin/python bench/trace_standin.py /tmp/sdweb-throughput-*/trace-*.json
"""

import functools
import json
import os
import sys
import threading
import time
from pathlib import Path

SPANS, GAPS = [], []
LOCK = threading.Lock()


def wrap(owner, name, label):
    original = getattr(owner, name)

    @functools.wraps(original)
    def wrapper(*a, **k):
        start = time.monotonic()
        try:
            return original(*a, **k)
        finally:
            with LOCK:
                SPANS.append((label, threading.get_ident(), start, time.monotonic()))

    setattr(owner, name, wrapper)


def patch(**kwargs):
    from generation.engine import batch, previews
    from generation.jobs import finish, worker

    for owner, name in [(worker, "job_run_next"), (worker, "jobs_claim"), (worker, "jobs_run"), (worker, "_outcomes"),
                        (worker, "_request"), (worker.RunTracker, "save"), (worker, "flush"), (finish.Finisher, "submit"),
                        (worker, "jobs_reap"), (worker, "engine_configure"), (batch, "load_pipeline"), (batch, "encode_many"),
                        (batch, "denoise"), (batch, "_decoded"), (batch, "checked_result"),
                        (previews.PreviewMaker, "wait"), (worker, "generate_batch"), (worker, "job_event_soon"),
                        (worker.RunTracker, "stopped")]:
        wrap(owner, name, name)
    out = Path(os.environ["SDWEB_VAR_DIR"]) / f"trace-{os.getpid()}.json"

    def dump():
        while True:
            time.sleep(2)
            with LOCK:
                out.write_text(json.dumps({"spans": SPANS, "gaps": GAPS}))

    threading.Thread(target=dump, daemon=True).start()


def analyse(path):
    data = json.loads(Path(path).read_text())
    gaps = [g for g in data["gaps"] if g[1] - g[0] > 0.0005]
    total = sum(b - a for a, b in gaps)
    print(f"{len(gaps)} gaps, {total:.2f} s, mean {1000 * total / max(1, len(gaps)):.1f} ms")
    by = {}
    for label, _, s, e in data["spans"]:
        for a, b in gaps:
            o = min(b, e) - max(a, s)
            if o > 0:
                by[label] = by.get(label, 0) + o
    for label, seconds in sorted(by.items(), key=lambda x: -x[1]):
        print(f"{label:>20} {seconds:8.2f} s {100 * seconds / total:5.1f} %")
    sizes = sorted(b - a for a, b in gaps)
    print("gap p50 %.1f ms p90 %.1f ms max %.1f ms" % (1000 * sizes[len(sizes) // 2], 1000 * sizes[int(.9 * len(sizes))],
                                                      1000 * sizes[-1]))


if __name__ == "__main__":
    for name in sys.argv[1:]:
        print(name)
        analyse(name)
