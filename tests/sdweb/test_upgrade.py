"""An existing studio's database upgrades with `migrate` and keeps every row.

`tests/data/main-be719a9.sql` is an embedded (SQLite) database made by main at commit be719a9,
the last commit before the code moved into domain packages: three users, an invite, an API key, a
prompt filter rule, a style, a staff credit grant, three finished jobs (four images, fingerprints,
public and hidden images, a report), a refused submission and a queued job; dumped with
`sqlite3 sdweb.sqlite3 .dump`."""

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DUMP = ROOT / "tests" / "data" / "main-be719a9.sql"


def row_counts(path) -> dict[str, int]:
    """Rows of each table of ours (sqlite_sequence, SQLite's own counters, gains a row when a
    migration rebuilds a table, as altering a field does on SQLite)."""
    with sqlite3.connect(path) as db:
        tables = [name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
                  if not name.startswith("sqlite_")]
        return {table: db.execute(f'SELECT COUNT(*) FROM "{table}"').fetchone()[0] for table in tables}


def manage(folder, *args, code: str = ""):
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "sdweb.settings", "SDWEB_VAR_DIR": str(folder),
           "DATABASE_URL": f"sqlite:///{folder / 'sdweb.sqlite3'}", "SDWEB_FINISH_PROCESSES": "0"}
    command = [sys.executable, "-c", code] if code else [sys.executable, "manage.py", *args]
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def test_a_database_from_before_the_domains_upgrades_with_migrate_and_keeps_every_row(tmp_path):
    with sqlite3.connect(tmp_path / "sdweb.sqlite3") as db:
        db.executescript(DUMP.read_text())
    before = row_counts(tmp_path / "sdweb.sqlite3")
    assert before["generation_job"] == 4 and before["gallery_image"] == 4 and before["generation_promptaudit"] == 5

    migrated = manage(tmp_path, "migrate", "--no-input")
    assert migrated.returncode == 0, migrated.stderr[-3000:]
    after = row_counts(tmp_path / "sdweb.sqlite3")
    registry = ("django_migrations", "django_content_type", "auth_permission")  # Django's own: a row more per new model
    kept = {table: after.get(table) for table in before if table not in registry}
    assert kept == {table: n for table, n in before.items() if table not in registry}
    assert all(after[table] >= before[table] for table in registry)

    # Every model reads all of its rows through today's code, and the audit chain still verifies.
    read = manage(tmp_path, code=(
        "import django; django.setup(); from django.apps import apps; "
        "import json; print(json.dumps({m._meta.db_table: len(list(m.objects.all())) for m in apps.get_models()}))"))
    assert read.returncode == 0, read.stderr[-3000:]
    counted = json.loads(read.stdout.strip().splitlines()[-1])
    assert {table: counted[table] for table in counted if table in before and table not in registry} == {
        table: before[table] for table in counted if table in before and table not in registry}
    assert counted["generation_job"] == 4
    verified = manage(tmp_path, "verify_audit")
    assert verified.returncode == 0, verified.stdout + verified.stderr[-2000:]
    assert "5" in verified.stdout


def test_the_models_and_the_migrations_agree():
    """No model change is waiting for a migration (a moved model must not ask for one)."""
    checked = subprocess.run([sys.executable, "manage.py", "makemigrations", "--check", "--dry-run"], cwd=ROOT,
                             env={**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings"}, capture_output=True,
                             text=True, timeout=300)
    assert checked.returncode == 0, checked.stdout + checked.stderr[-2000:]
