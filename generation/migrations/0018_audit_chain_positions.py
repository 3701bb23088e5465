"""Audit rows get their place in the chain (`position`), given when they are sealed after their
transaction commits; rows chained before this take theirs in id order, after the pruned ones."""

from django.db import migrations, models


def number_rows(apps, schema_editor):
    chain = apps.get_model("generation", "AuditChain").objects.filter(pk=1).first()
    pruned = chain.pruned if chain else 0
    schema_editor.execute(
        "UPDATE generation_promptaudit SET position = numbered.place FROM (SELECT id, ROW_NUMBER() OVER (ORDER BY id) + %s"
        " AS place FROM generation_promptaudit WHERE hash <> '') AS numbered WHERE numbered.id = generation_promptaudit.id",
        [pruned])
    apps.get_model("generation", "AuditChain").objects.update(base_position=models.F("pruned"))


class Migration(migrations.Migration):

    dependencies = [("generation", "0017_audit_search_trigrams")]

    operations = [
        migrations.AddField(
            model_name="promptaudit",
            name="position",
            field=models.BigIntegerField(blank=True, editable=False, help_text="The row's place in the chain, given when it is sealed", null=True, unique=True),
        ),
        migrations.RenameField(model_name="auditchain", old_name="base_id", new_name="base_position"),
        migrations.AlterField(
            model_name="auditchain",
            name="base_position",
            field=models.BigIntegerField(default=0, help_text="Rows up to this place in the chain were pruned"),
        ),
        migrations.RunPython(number_rows, migrations.RunPython.noop),
    ]
