import pytest
import torch
from django.contrib.auth.models import User

from generation.engine import make_test_model

torch.set_num_threads(1)  # the README's `pytest -n 2`: two test workers share two cores

# `pytest -n 2` runs the tests that share a service or a started process on one test worker, and
# first (they take longest): the production ones share Redis and RabbitMQ, the browser journeys a studio.
SHARED = {"production": "services", "e2e": "browser"}


def _shared(nodeid: str) -> str | None:
    return SHARED.get(nodeid.split("/")[1]) if nodeid.startswith("tests/") else None


def pytest_collection_modifyitems(items):
    items.sort(key=lambda item: _shared(item.nodeid) is None)


def pytest_xdist_make_scheduler(config, log):
    from xdist.scheduler import LoadScopeScheduling

    class SharedTogether(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return _shared(nodeid) or nodeid

    return SharedTogether(config, log)


@pytest.fixture
def alice(db):
    """A user with the starting credits."""
    return User.objects.create_user("alice", "alice@example.com", "alice-password-1")


@pytest.fixture
def bob(db):
    """A user with no credits left."""
    from generation.credits.ledger import credits_change

    bob = User.objects.create_user("bob", "bob@example.com", "bob-password-1")
    credits_change(user=bob, kind="adjust", amount=-bob.credits.balance, reason="spent elsewhere")
    return bob


@pytest.fixture
def carol(db):
    """A stranger to everyone else's jobs."""
    return User.objects.create_user("carol", "carol@example.com", "carol-password-1")


@pytest.fixture
def admin(db):
    return User.objects.create_superuser("admin", "admin@example.com", "admin-password-1")


@pytest.fixture(scope="session")
def test_model_folder(tmp_path_factory):
    return str(make_test_model(tmp_path_factory.mktemp("studio-models") / "tiny"))


@pytest.fixture
def checkpoint(db, test_model_folder):
    from generation.library.checkpoints import checkpoint_register

    return checkpoint_register(name="sdweb-test-tiny", source=test_model_folder, is_test_model=True)


@pytest.fixture
def api(alice, checkpoint):
    """An API client authenticated as alice with an API key."""
    from rest_framework.test import APIClient

    from sdweb.shared.api_keys import api_key_create

    _, raw = api_key_create(user=alice, name="tests")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    return client


@pytest.fixture(autouse=True)
def fresh_cache():
    """Throttle counters live in the cache; each test starts with none."""
    from django.core.cache import cache

    cache.clear()


@pytest.fixture
def worker(checkpoint):
    """The embedded Celery worker thread, as `manage.py up` runs it (needs committed data:
    use it with transactional tests)."""
    from sdweb.embedded import start_worker_thread

    worker = start_worker_thread()
    yield worker
    worker.stop(in_sighandler=False)


@pytest.fixture
def make_job(checkpoint):
    """A finished job with its images, made through the real submit and run."""

    from generation.jobs.queue import job_claim
    from generation.jobs.submit import job_submit
    from generation.jobs.worker import job_run

    def make_job(user, prompt="a lighthouse at dusk", num_images=2, **fields):
        job = job_submit(user=user, params={"prompt": prompt, "negative_prompt": "", "checkpoint": checkpoint,
                                            "width": 256, "height": 256, "steps": 2, "guidance_scale": 7,
                                            "scheduler": "Euler a", "seed": 7, "num_images": num_images, **fields})
        job_run(job_claim())
        job.refresh_from_db()
        assert job.status == "succeeded", job.error
        return job

    return make_job


@pytest.fixture
def shared(client, alice, make_job):
    """Alice's image, made public by Alice; returns (image, share URL) and signs everyone out."""
    image = make_job(alice).images.first()
    client.force_login(alice)
    client.post(f"/images/{image.hex_id}/visibility/", {"public": "1"})
    image.refresh_from_db()
    client.logout()
    return image, f"/s/{image.share_slug}/"


@pytest.fixture(scope="session")
def tiny_families(tmp_path_factory):
    """A tiny model of every family, each as an LDM single file, its config folder and a diffusers folder."""
    from generation.engine.families import FAMILIES
    from generation.engine.testmodel import make_tiny_family

    folder = tmp_path_factory.mktemp("families")
    return {family: make_tiny_family(family, folder) for family in FAMILIES if not FAMILIES[family].transformer}


@pytest.fixture(scope="session")
def tiny_flux(tmp_path_factory):
    """Tiny FLUX.1 [dev] and [schnell] models in every layout (testmodel.make_tiny_flux); both share
    the text encoders and the VAE, as real ones do."""
    from generation.engine.testflux import make_tiny_flux

    folder = tmp_path_factory.mktemp("flux")
    return {family: make_tiny_flux(family, folder) for family in ("flux-dev", "flux-schnell")}


@pytest.fixture(scope="session")
def tiny_sd3(tmp_path_factory):
    """Tiny SD 3.5 Large and Medium models in every layout (testsd3.make_tiny_sd3), sharing their
    text encoders and VAE files."""
    from generation.engine.testsd3 import make_tiny_sd3

    folder = tmp_path_factory.mktemp("sd3")
    return {family: make_tiny_sd3(family, folder) for family in ("sd35-large", "sd35-medium")}


@pytest.fixture(scope="session")
def tiny_zimage(tmp_path_factory):
    """A tiny Z-Image Turbo in every layout (testzimage.make_tiny_zimage)."""
    from generation.engine.testzimage import make_tiny_zimage

    return make_tiny_zimage(tmp_path_factory.mktemp("zimage"))


@pytest.fixture(scope="session")
def addon_files(test_model_folder, tmp_path_factory):
    """A LoRA, an embedding and a ControlNet (with its config) that fit the test model."""
    from generation.engine.loading import load_pipeline
    from generation.engine.testmodel import make_tiny_addons

    return make_tiny_addons(load_pipeline(test_model_folder).pipe, tmp_path_factory.mktemp("addon-files"))


@pytest.fixture
def library(db, addon_files):
    """The operator's library: LoRA tiny-style, embedding tinyneg and ControlNet tiny-canny."""
    from generation.library.addons import addon_register

    return {"lora": addon_register(kind="lora", name="tiny-style", source=str(addon_files["lora"])),
            "embedding": addon_register(kind="embedding", name="tinyneg", source=str(addon_files["embedding"])),
            "controlnet": addon_register(kind="controlnet", name="tiny-canny", source=str(addon_files["controlnet"]),
                                         config=str(addon_files["controlnet_config"]))}


@pytest.fixture
def esrgan_folder(settings, tmp_path, checkpoint):
    """models/ESRGAN as people fill it: an original-layout .pth, a Real-ESRGAN .safetensors, a stray LoRA."""
    import torch
    from safetensors.torch import save_file

    from tests.support import esrgan_new_layout, esrgan_state

    folder = tmp_path / "ESRGAN"
    folder.mkdir()
    torch.save(esrgan_state(), folder / "4x-Tiny.pth")
    save_file(esrgan_new_layout(esrgan_state(ups=1, seed=2)), folder / "2x-TinyReal.safetensors")
    save_file({"lora_unet_x.lora_down.weight": torch.zeros(2, 2)}, folder / "stray.safetensors")
    settings.SDWEB = {**settings.SDWEB, "ESRGAN_DIR": folder}
    return folder
