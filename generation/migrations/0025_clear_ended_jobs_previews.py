"""A job's live preview is shown only while it runs: ended jobs no longer keep theirs (every
gallery, Explore and job list read loaded it with each image's job)."""

from django.db import migrations


def clear(apps, schema_editor):
    apps.get_model("generation", "Job").objects.exclude(status__in=("queued", "running")).exclude(
        preview=None).update(preview=None)


class Migration(migrations.Migration):
    dependencies = [("generation", "0024_teams_roles")]
    operations = [migrations.RunPython(clear, migrations.RunPython.noop)]
