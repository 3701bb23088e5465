"""The audit chain under concurrent submissions, on PostgreSQL: PROCESSES writers (processes, as
web processes are) submit at the same moment, ROUNDS times (a barrier releases them). Each
submission is a transaction with a row written beside its audit row, as job_submit's is. Prints
the time a submission's audit takes alone and at once, and how long writers waited for the chain's
lock (`locked_chain`) against how long one seal or append holds it; verify_audit must pass after.

    .venv/bin/python bench/audit_chain.py
"""

import argparse
import multiprocessing
import os
import tempfile
import time

POSTGRES = os.environ.get("SDWEB_TEST_POSTGRES", "postgres://postgres@127.0.0.1:5432/test")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--processes", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args()

    import psycopg

    database = f"sdweb_chain_{os.getpid()}"
    with psycopg.connect(POSTGRES, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{database}"')
    os.environ.update(DATABASE_URL=POSTGRES.rsplit("/", 1)[0] + "/" + database,
                      SDWEB_VAR_DIR=tempfile.mkdtemp(prefix="sdweb-chain-"), DJANGO_SETTINGS_MODULE="sdweb.settings")
    try:
        import django

        django.setup()
        from django.core.management import call_command

        from generation.provenance.audit import audit_verify

        call_command("migrate", verbosity=0)
        context = multiprocessing.get_context("spawn")
        alone = run(context, [(0, 30, None)])
        barrier = context.Barrier(args.processes)
        together = run(context, [(k, args.rounds, barrier) for k in range(args.processes)])
        checked, problem = audit_verify()
    finally:
        from django.db import connections

        connections.close_all()
        with psycopg.connect(POSTGRES, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')

    def ms(values, q):
        values = sorted(values)
        return 1000 * values[round(q * (len(values) - 1))]

    print(f"alone: a submission's audit p50 {ms([t for t, _, _ in alone], .5):.1f} ms, holding the chain "
          f"p50 {ms([h for _, _, h in alone], .5):.1f} ms")
    print(f"{args.processes} at once x {args.rounds}: a submission's audit p50 {ms([t for t, _, _ in together], .5):.1f} ms, "
          f"p95 {ms([t for t, _, _ in together], .95):.1f} ms; waiting for the chain p50 "
          f"{ms([w for _, w, _ in together], .5):.1f} ms, p95 {ms([w for _, w, _ in together], .95):.1f} ms, "
          f"max {ms([w for _, w, _ in together], 1):.1f} ms; holding it p50 {ms([h for _, _, h in together], .5):.1f} ms, "
          f"p95 {ms([h for _, _, h in together], .95):.1f} ms")
    print(f"verify_audit: {checked} rows, {problem or 'intact'}")


def run(context, writers: list[tuple]) -> list[tuple[float, float, float]]:
    results = context.Queue()
    processes = [context.Process(target=writer, args=(*one, results)) for one in writers]
    for process in processes:
        process.start()
    seen = [one for _ in processes for one in results.get()]
    for process in processes:
        process.join()
    return seen


def writer(k: int, rounds: int, barrier, results) -> None:
    """Puts (seconds the submission took, seconds waited for the chain's lock, seconds holding it) for each round."""
    import django

    django.setup()
    from django.contrib.auth.models import User
    from django.db import connection, transaction

    from generation.accounts.models import StaffAction
    from generation.provenance import audit

    user = User.objects.get_or_create(username=f"writer{k}")[0]
    waits, locked = [], audit.locked_chain

    def timed_lock(*args):
        started = time.perf_counter()
        chain = locked(*args)
        if chain is not None:  # None: another writer was sealing, and seals this row too
            waits.append((time.perf_counter() - started, time.perf_counter()))
        return chain

    audit.locked_chain = timed_lock
    seen = []
    for round in range(rounds):
        if barrier is not None:
            barrier.wait()
        waits.clear()
        started = time.perf_counter()
        with transaction.atomic():
            StaffAction.objects.create(staff=None, staff_name="bench", action="bench", target=user.username)
            audit.audit_append(user=user, client_ip="10.0.0.1", decision="accepted",
                               params={"prompt": f"a lighthouse by {user.username}, round {round}", "steps": 20})
        ended = time.perf_counter()
        # Held from getting the lock until the transaction that took it committed.
        seen.append((ended - started, sum(w for w, _ in waits), ended - waits[-1][1] if waits else 0.0))
    connection.close()
    results.put(seen)


if __name__ == "__main__":
    main()
