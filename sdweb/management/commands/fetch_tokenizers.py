import gzip
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

WHEEL = "invokeai==6.14.2"  # its wheel on PyPI carries T5's and Qwen3's tokenizer files (Apache-2.0, as both models are)
TOKENIZERS = {  # folder in the text-encoder folder: where the wheel keeps it
    "t5_tokenizer": "invokeai/backend/t5/tokenizer/",
    "qwen3_tokenizer": "invokeai/backend/qwen3/tokenizer/",
}
FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja")  # (.json may be .gz)


class Command(BaseCommand):
    help = ("Put the tokenizers of T5 (FLUX.1's and SD 3.5's text encoder) and Qwen3 (Z-Image's) into the "
            "text-encoder folder's t5_tokenizer/ and qwen3_tokenizer/: taken out of InvokeAI's wheel, downloaded "
            "from PyPI (not installed) or given with --wheel.")

    def add_arguments(self, parser):
        parser.add_argument("--wheel", default="", help="a wheel already downloaded (pip download --no-deps "
                                                        f"{WHEEL}): nothing is fetched")

    def handle(self, wheel, **options):
        texts = Path(settings.SDWEB["TEXT_ENCODERS_DIR"])
        with tempfile.TemporaryDirectory() as folder:
            if not wheel:
                self.stdout.write(f"Downloading {WHEEL} from PyPI (about 13 MB; only the tokenizers are kept)...")
                fetched = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", folder,
                                          WHEEL], capture_output=True, text=True)
                if fetched.returncode:
                    raise CommandError(f"pip could not download {WHEEL}: {fetched.stderr.strip()[-300:]}")
                wheel = next(Path(folder).glob("*.whl"))
            found = {}
            try:
                with zipfile.ZipFile(wheel) as archive:
                    names = set(archive.namelist())
                    for target, inside in TOKENIZERS.items():
                        found[target] = {name: archive.read(inside + name) for name in FILES if inside + name in names}
                        if inside + "tokenizer.json.gz" in names:
                            found[target]["tokenizer.json"] = gzip.decompress(archive.read(inside + "tokenizer.json.gz"))
                        if not {"tokenizer.json", "tokenizer_config.json"} <= set(found[target]):
                            raise KeyError(inside)
            except (OSError, zipfile.BadZipFile, KeyError) as error:
                raise CommandError(f"{Path(wheel).name} is not a wheel holding {error}") from None
        for target, files in found.items():
            (texts / target).mkdir(parents=True, exist_ok=True)
            for name, data in files.items():
                (texts / target / name).write_bytes(data)
        self.stdout.write(f"T5's and Qwen3's tokenizers are in {texts}")
