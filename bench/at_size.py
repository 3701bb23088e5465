"""Pages at size, on PostgreSQL: a fresh database filled by `manage.py fill_at_size` (1 000 users,
100 000 images, 1 000 000 audit rows by default), then each page's server time (Django's test
client in this process: no network; requests interleaved across pages, median and p95) and the
plan of every query it runs (EXPLAIN): a sequential scan of a big table is named.

    .venv/bin/python bench/at_size.py
    .venv/bin/python bench/at_size.py --images 20000 --audit 50000 --requests 5 --json   (tests/production)
"""

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlencode

ROOT = Path(__file__).resolve().parent.parent
POSTGRES = os.environ.get("SDWEB_TEST_POSTGRES", "postgres://postgres@127.0.0.1:5432/test")
BIG_TABLES = ("gallery_image", "generation_job", "generation_promptaudit", "generation_auditimage")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--images", type=int, default=100_000)
    parser.add_argument("--audit", type=int, default=1_000_000)
    parser.add_argument("--requests", type=int, default=30, help="timed requests per page")
    parser.add_argument("--json", action="store_true", help="print the results as one JSON object")
    args = parser.parse_args()

    import psycopg

    database = f"sdweb_size_{os.getpid()}"
    with psycopg.connect(POSTGRES, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{database}"')
    try:
        os.environ.update(DATABASE_URL=POSTGRES.rsplit("/", 1)[0] + "/" + database,
                          SDWEB_VAR_DIR=tempfile.mkdtemp(prefix="sdweb-size-"),
                          DJANGO_SETTINGS_MODULE="sdweb.settings")
        results = measure(args)
    finally:
        from django.db import connections

        connections.close_all()
        with psycopg.connect(POSTGRES, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
    if args.json:
        print(json.dumps(results))
        return
    print(f"\n{args.users} users, {args.images} images, {args.audit} audit rows; {args.requests} requests a page")
    print(f"{'page':<28}{'p50 ms':>8}{'p95 ms':>8}{'queries':>9}  sequential scans of big tables")
    for name, row in results.items():
        print(f"{name:<28}{row['p50_ms']:>8.1f}{row['p95_ms']:>8.1f}{row['queries']:>9}  {', '.join(row['scans']) or '-'}")


def measure(args) -> dict:
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from django.contrib.auth.models import User
    from django.core.management import call_command
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext, setup_test_environment

    from gallery.models import Image
    from gallery.selectors import cursor
    from generation.provenance.audit import audit_verify

    setup_test_environment()
    call_command("migrate", verbosity=0)
    started = time.perf_counter()
    call_command("fill_at_size", users=args.users, images=args.images, audit=args.audit)
    print(f"filled in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    checked, problem = audit_verify()
    assert problem is None, problem
    print(f"audit chain intact: {checked} rows", file=sys.stderr)

    owner = User.objects.filter(username__startswith="size-").order_by("pk").first()
    staff = User.objects.create_superuser("size-staff", password="x")
    order = ("-created_at", "index", "id")
    mine = Image.objects.filter(owner=owner).order_by(*order)
    shared = Image.objects.filter(is_public=True).order_by(*order)
    midnight = Image.objects.order_by(*order)[args.images // 2].created_at.replace(hour=0, minute=0, second=0,
                                                                                   microsecond=0)
    pages = {
        "gallery": (owner, "/gallery/"),
        "gallery, last page": (owner, f"/gallery/?before={cursor(mine[max(0, mine.count() - 10)])}"),
        "gallery search": (owner, "/gallery/?q=lighthouse"),
        "explore": (None, "/explore/"),
        "explore, deep": (None, f"/explore/?before={cursor(shared[shared.count() * 9 // 10])}"),
        "image page": (owner, f"/images/{mine[0].hex_id}/"),
        "audit review": (staff, "/admin/generation/promptaudit/"),
        "audit review, one day": (staff, "/admin/generation/promptaudit/?" + urlencode(
            {"created_at__gte": midnight.isoformat(), "created_at__lt": (midnight + timedelta(days=1)).isoformat()})),
        "audit review, one user": (staff, f"/admin/generation/promptaudit/?username={owner.username}"),
        "audit search": (staff, f"/admin/generation/promptaudit/?q=take+{args.audit // 3}"),  # one row has it
        "audit search, common words": (staff, "/admin/generation/promptaudit/?q=harbour+in+fog%2C+take+77"),
        "dashboard": (staff, "/staff/dashboard/"),
    }
    clients = {}
    for who, _ in pages.values():
        if who not in clients:
            clients[who] = Client()
            if who is not None:
                clients[who].force_login(who)

    results = {}
    for name, (who, url) in pages.items():  # once each: status, queries and their plans
        with CaptureQueriesContext(connection) as queries:
            response = clients[who].get(url)
        assert response.status_code == 200, (name, response.status_code)
        scans = set()
        for query in queries.captured_queries:
            if query["sql"].lstrip().upper().startswith("SELECT"):
                with connection.cursor() as cursor_:
                    cursor_.execute("EXPLAIN " + query["sql"])
                    plan = "\n".join(line for (line,) in cursor_.fetchall())
                scans |= {table for table in BIG_TABLES if f"Seq Scan on {table} " in plan + " "}
        results[name] = {"queries": len(queries.captured_queries), "scans": sorted(scans), "times": []}
    for _ in range(args.requests):  # interleaved: a noisy moment slows every page alike
        for name, (who, url) in pages.items():
            started = time.perf_counter()
            clients[who].get(url)
            results[name]["times"].append(1000 * (time.perf_counter() - started))
    for row in results.values():
        times = sorted(row.pop("times"))
        row |= {"p50_ms": statistics.median(times), "p95_ms": times[max(0, round(0.95 * len(times)) - 1)]}
    return results


if __name__ == "__main__":
    main()
