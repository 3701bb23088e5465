"""Trigram indexes for the audit search (PostgreSQL only: `contains` and `icontains` become LIKE
'%word%', which no b-tree helps). pg_trgm is a trusted extension since PostgreSQL 13: the
database's owner may create it. On SQLite (the embedded default, small) the search reads the table."""

from django.db import migrations

INDEXES = [
    ("audit_search_trgm", "search_text gin_trgm_ops"),
    ("audit_reason_trgm", "upper(reason) gin_trgm_ops"),  # icontains is UPPER(reason) LIKE UPPER('%word%')
]


def create(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    schema_editor.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
    for name, expression in INDEXES:
        schema_editor.execute(f"CREATE INDEX IF NOT EXISTS {name} ON generation_promptaudit USING gin ({expression})")


def drop(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    for name, _ in INDEXES:
        schema_editor.execute(f"DROP INDEX IF EXISTS {name}")


class Migration(migrations.Migration):

    dependencies = [("generation", "0016_indexes_at_size")]

    operations = [migrations.RunPython(create, drop)]
