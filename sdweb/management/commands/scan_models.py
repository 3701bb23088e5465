from django.conf import settings
from django.core.management.base import BaseCommand

from generation.library.addons import addons_scan
from generation.library.checkpoints import checkpoints_scan
from sdweb.management.commands.add_model import hash_progress


class Command(BaseCommand):
    help = ("Register every .safetensors checkpoint in the models folder (SDWEB_MODELS_DIR) and every LoRA, "
            "embedding, ControlNet and upscaler in the add-on folders (SDWEB_LORA_DIR, SDWEB_EMBEDDINGS_DIR, "
            "SDWEB_CONTROLNET_DIR, SDWEB_ESRGAN_DIR), "
            "named by file name; files already registered are hashed again only when they changed.")

    def handle(self, **options):
        for scan, what in ((checkpoints_scan, f"checkpoint(s) in {settings.SDWEB['MODELS_DIR'].name}/"),
                           (addons_scan, "add-on(s)")):
            found, skipped = scan(progress_for=lambda path: hash_progress(path, self.stderr))
            for entry in found:
                kind = f"{entry.get_kind_display()} " if hasattr(entry, "kind") else ""
                self.stdout.write(f"{kind}{entry.title}: {entry.get_family_display()}")
            for name, reason in skipped.items():
                self.stdout.write(f"skipped {name}: {reason}")
            self.stdout.write(f"{len(found)} {what}, {len(skipped)} skipped")
