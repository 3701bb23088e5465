from django.db import migrations


class Migration(migrations.Migration):
    """The idempotency hash is a digest; "fingerprint" is the perceptual hash the trace uses."""

    dependencies = [("generation", "0018_audit_chain_positions")]

    operations = [migrations.RenameField(model_name="job", old_name="request_fingerprint", new_name="request_digest")]
