import pytest

from generation.engine import GenerationRequest, generate, make_test_model


@pytest.fixture(scope="session")
def test_model(tmp_path_factory):
    return str(make_test_model(tmp_path_factory.mktemp("models") / "tiny"))


@pytest.fixture
def run(test_model):
    """generate() on the test model at 256 px and few steps; keyword arguments override."""

    def run(*, on_preview=None, should_cancel=None, watermark_payloads=None, preview=None, checker=None, **fields):
        request = GenerationRequest(**{"prompt": "a lighthouse at dusk", "model": test_model, "width": 256,
                                       "height": 256, "steps": 4, "seed": 1234, **fields})
        return generate(request, on_preview=on_preview, should_cancel=should_cancel,
                        watermark_payloads=watermark_payloads, preview=preview, checker=checker)

    return run
