"""Registering checkpoints."""

import json

from django.conf import settings
from django.db import transaction

from generation.engine.sources import resolve_source
from generation.engine.testmodel import TEST_MODEL_NAME, make_test_model
from generation.models import Checkpoint


def checkpoint_register(*, name: str, source: str, family: str = "sd1", make_default: bool = False,
                        is_test_model: bool = False) -> Checkpoint:
    """Register (or update) a checkpoint. A hub id is downloaded now, with a progress bar."""
    folder = resolve_source(source)  # ValueError with a clear message when it can't be used
    unet_config = json.loads((folder / "unet" / "config.json").read_text())
    side = int(unet_config.get("sample_size", 64)) * 8
    with transaction.atomic():
        checkpoint, _ = Checkpoint.objects.update_or_create(name=name, defaults=dict(
            source=str(source), family=family, default_width=side, default_height=side, enabled=True,
            is_test_model=is_test_model))
        if make_default or not Checkpoint.objects.filter(is_default=True).exists():
            Checkpoint.objects.filter(is_default=True).exclude(pk=checkpoint.pk).update(is_default=False)
            Checkpoint.objects.filter(pk=checkpoint.pk).update(is_default=True)
    return Checkpoint.objects.get(pk=checkpoint.pk)


def checkpoint_ensure_test_model() -> Checkpoint:
    """Build the built-in test model if it is missing and register it."""
    folder = settings.SDWEB["MODELS_DIR"] / TEST_MODEL_NAME
    if not (folder / "model_index.json").is_file():
        make_test_model(folder)
    return checkpoint_register(name=TEST_MODEL_NAME, source=str(folder), is_test_model=True)
