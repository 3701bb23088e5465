"""The generation engine: pure ML, no Django. Workers, benchmarks and tests call it directly."""

__version__ = "0.1.0"

from .loading import PIPELINES, load_pipeline, model_hash, pick_device, pick_dtype  # noqa: E402
from .metadata import format_parameters, parse_parameters, read_png_marking, read_png_parameters, save_png  # noqa: E402
from .previews import PreviewSettings  # noqa: E402
from .prompts import parse_attention  # noqa: E402
from .request import GenerationRequest, Limits  # noqa: E402
from .run import GenerationCancelled, GenerationResult, generate  # noqa: E402
from .safety import DiffusersSafetyChecker, ImageChecker  # noqa: E402
from .schedulers import SCHEDULERS, resolve_scheduler  # noqa: E402
from .testmodel import TEST_MODEL_NAME, make_test_model  # noqa: E402
from .watermark import embed_watermark, read_watermark  # noqa: E402

__all__ = [
    "PIPELINES", "SCHEDULERS", "TEST_MODEL_NAME", "DiffusersSafetyChecker", "GenerationCancelled",
    "GenerationRequest", "GenerationResult", "ImageChecker", "Limits", "PreviewSettings",
    "embed_watermark", "format_parameters", "generate", "load_pipeline", "make_test_model",
    "model_hash", "parse_attention", "parse_parameters", "pick_device", "pick_dtype",
    "read_png_marking", "read_png_parameters", "read_watermark", "resolve_scheduler", "save_png",
]
