from django.conf import settings
from django.core.management.base import BaseCommand

from generation.services.addons import addons_scan
from generation.services.checkpoints import checkpoints_scan
from sdweb.management.commands.add_model import hash_progress


class Command(BaseCommand):
    help = ("Register every .safetensors checkpoint in the models folder (SDWEB_MODELS_DIR) and every LoRA, "
            "embedding and ControlNet in the add-on folders (SDWEB_LORA_DIR, SDWEB_EMBEDDINGS_DIR, SDWEB_CONTROLNET_DIR), "
            "named by file name; files already registered are hashed again only when they changed.")

    def handle(self, **options):
        found, skipped = checkpoints_scan(progress_for=lambda path: hash_progress(path, self.stderr))
        for checkpoint in found:
            self.stdout.write(f"{checkpoint.title}: {checkpoint.get_family_display()}")
        for name, reason in skipped.items():
            self.stdout.write(f"skipped {name}: {reason}")
        self.stdout.write(f"{len(found)} checkpoint(s) in {settings.SDWEB['MODELS_DIR'].name}/, {len(skipped)} skipped")
        found, skipped = addons_scan(progress_for=lambda path: hash_progress(path, self.stderr))
        for addon in found:
            self.stdout.write(f"{addon.get_kind_display()} {addon.title}: {addon.get_family_display()}")
        for name, reason in skipped.items():
            self.stdout.write(f"skipped {name}: {reason}")
        self.stdout.write(f"{len(found)} add-on(s), {len(skipped)} skipped")
