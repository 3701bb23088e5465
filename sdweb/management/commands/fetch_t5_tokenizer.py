import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

WHEEL = "invokeai==6.14.2"  # its wheel on PyPI carries T5's tokenizer files (Apache-2.0, as T5 is)
INSIDE = "invokeai/backend/t5/tokenizer/"
FILES = ("tokenizer.json", "tokenizer_config.json")  # and special_tokens_map.json where the wheel has it


class Command(BaseCommand):
    help = ("Put T5's tokenizer, which FLUX.1's text encoder reads prompts with, into the text-encoder folder's "
            "t5_tokenizer/: taken out of InvokeAI's wheel, downloaded from PyPI (not installed) or given with --wheel.")

    def add_arguments(self, parser):
        parser.add_argument("--wheel", default="", help="a wheel already downloaded (pip download --no-deps "
                                                        f"{WHEEL}): nothing is fetched")

    def handle(self, wheel, **options):
        target = Path(settings.SDWEB["TEXT_ENCODERS_DIR"]) / "t5_tokenizer"
        with tempfile.TemporaryDirectory() as folder:
            if not wheel:
                self.stdout.write(f"Downloading {WHEEL} from PyPI (about 13 MB; only three files are kept)...")
                fetched = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", folder,
                                          WHEEL], capture_output=True, text=True)
                if fetched.returncode:
                    raise CommandError(f"pip could not download {WHEEL}: {fetched.stderr.strip()[-300:]}")
                wheel = next(Path(folder).glob("*.whl"))
            try:
                with zipfile.ZipFile(wheel) as archive:
                    files = {name: archive.read(INSIDE + name) for name in FILES}
                    if INSIDE + "special_tokens_map.json" in archive.namelist():
                        files["special_tokens_map.json"] = archive.read(INSIDE + "special_tokens_map.json")
            except (OSError, zipfile.BadZipFile, KeyError) as error:
                raise CommandError(f"{Path(wheel).name} is not a wheel holding {INSIDE}: {error}") from None
        target.mkdir(parents=True, exist_ok=True)
        for name, data in files.items():
            (target / name).write_bytes(data)
        self.stdout.write(f"T5's tokenizer is in {target}")
