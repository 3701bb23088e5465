"""The generation engine: pure ML, no Django. Workers, benchmarks and tests call it directly.

Names are imported on first use, so a web process that needs only the torch-free modules
(request checks, schedulers, infotext, model sources, watermark reading) never loads torch."""

import importlib

__version__ = "0.1.0"

_HOMES = {
    "PIPELINES": "loading", "load_pipeline": "loading", "pick_device": "loading", "pick_dtype": "loading",
    "model_hash": "sources", "resolve_source": "sources",
    "format_parameters": "metadata", "parse_parameters": "metadata", "read_png_marking": "metadata",
    "read_png_parameters": "metadata", "save_png": "metadata", "AI_GENERATED": "metadata",
    "PreviewSettings": "previews", "parse_attention": "prompts",
    "GenerationRequest": "request", "Limits": "request",
    "GenerationCancelled": "run", "GenerationResult": "run", "generate": "run",
    "batch_key": "request", "generate_batch": "batch",
    "DiffusersSafetyChecker": "safety", "ImageChecker": "safety",
    "SCHEDULERS": "schedulers", "resolve_scheduler": "schedulers",
    "TEST_MODEL_NAME": "testmodel", "make_test_model": "testmodel",
    "embed_watermark": "watermark", "read_watermark": "watermark", "watermark_reading": "watermark",
}
__all__ = sorted(_HOMES)


def __getattr__(name: str):
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_HOMES[name]}", __name__), name)
