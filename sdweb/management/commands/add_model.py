from pathlib import Path

from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from generation.engine.families import FAMILIES
from generation.library.checkpoints import checkpoint_register, vae_register


def hash_progress(path, stream):
    """A progress bar for hashing one file (multi-GB checkpoints take a while), shown only once
    hashing starts: a file hashed before is not hashed again."""
    bar = None

    def update(n: int) -> None:
        nonlocal bar
        bar = bar or tqdm(total=path.stat().st_size, unit="B", unit_scale=True, desc=f"hashing {path.name}",
                          file=stream, leave=False)
        bar.update(n)

    return update


class Command(BaseCommand):
    help = ("Register a checkpoint: a single .safetensors file (SD 1.x, 2.x, SDXL, refiner, inpainting: told from "
            "the file), a diffusers folder, or a Hugging Face id (downloaded now).")

    def add_arguments(self, parser):
        parser.add_argument("name")
        parser.add_argument("source", help="a .safetensors file, a diffusers folder, or a Hugging Face id")
        parser.add_argument("--family", choices=list(FAMILIES), default="",
                            help="only needed for SD 2.x v-prediction files without a .yaml beside them: sd2-v")
        parser.add_argument("--config", default="", help="a diffusers config folder for an unusual single file")
        parser.add_argument("--default", action="store_true", help="make it the default checkpoint")
        parser.add_argument("--vae", action="store_true", help="register a VAE file (its name: the file name)")

    def handle(self, name, source, family, config, default, vae, **options):
        path = Path(source)
        progress = hash_progress(path, self.stderr) if path.is_file() else None
        try:
            if vae:
                vae = vae_register(name=name, source=source, progress=progress)
                self.stdout.write(f"Registered the VAE {vae.title}")
                return
            checkpoint = checkpoint_register(name=name, source=source, family=family, config=config,
                                             make_default=default, progress=progress)
        except ValueError as error:
            raise CommandError(str(error))
        self.stdout.write(f"Registered {checkpoint.title}: {checkpoint.get_family_display()}"
                          + (", the default" if checkpoint.is_default else ""))
