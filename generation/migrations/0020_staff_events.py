from django.db import migrations, models


class Migration(migrations.Migration):
    """Staff actions name one of a fixed list of events; rows from before keep their own words."""

    dependencies = [("generation", "0019_request_digest")]

    operations = [
        migrations.AlterField(
            model_name="staffaction",
            name="action",
            field=models.CharField(max_length=40, choices=[
                ("publish image", "publish image"), ("unpublish image", "unpublish image"),
                ("delete image", "delete image"), ("hide image", "hide image"), ("dismiss report", "dismiss report"),
                ("suspend user", "suspend user"), ("unsuspend user", "unsuspend user"),
                ("adjust credits", "adjust credits"), ("scan models", "scan models"), ("scan add-ons", "scan add-ons"),
                ("publish add-on", "publish add-on"), ("unpublish add-on", "unpublish add-on"),
                ("delete add-on", "delete add-on"), ("change add-on", "change add-on"), ("trace image", "trace image"),
                ("admin add", "admin add"), ("admin change", "admin change"), ("admin delete", "admin delete")]),
        ),
    ]
