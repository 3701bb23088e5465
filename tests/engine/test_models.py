import hashlib
import pickle
import shutil
from pathlib import Path

import pytest

from generation.engine import GenerationRequest, generate, load_pipeline, loading, make_test_model, model_hash
from generation.engine.loading import PipelineCache


def test_the_test_model_is_built_the_same_every_time(test_model, tmp_path):
    again = make_test_model(tmp_path / "again")
    for file in sorted(Path(test_model).rglob("*")):
        if file.is_file():
            assert file.read_bytes() == (again / file.relative_to(test_model)).read_bytes(), file


def test_the_test_model_has_the_latent_scale_factor_of_stable_diffusion(test_model):
    pipe = load_pipeline(test_model).pipe
    assert pipe.vae_scale_factor == 8 and pipe.unet.config.in_channels == 4


def test_the_model_hash_is_the_first_10_hex_digits_of_the_unet_weights_sha256(test_model):
    weights = Path(test_model, "unet", "diffusion_pytorch_model.safetensors").read_bytes()
    assert model_hash(Path(test_model)) == hashlib.sha256(weights).hexdigest()[:10]
    assert load_pipeline(test_model).hash == model_hash(Path(test_model))


class Boom:
    def __reduce__(self):
        return (Path.touch, (Path("/tmp/sdweb-pickle-ran"),))


@pytest.mark.parametrize("suffix", [".ckpt", ".bin", ".pt", ".pth"])
def test_pickle_checkpoints_are_refused_without_being_opened(tmp_path, suffix):
    Path("/tmp/sdweb-pickle-ran").unlink(missing_ok=True)
    checkpoint = tmp_path / f"model{suffix}"
    checkpoint.write_bytes(pickle.dumps(Boom()))
    with pytest.raises(ValueError, match="pickle"):
        load_pipeline(str(checkpoint))
    assert not Path("/tmp/sdweb-pickle-ran").exists()


def test_an_uncached_hub_model_offline_gets_an_error_naming_it_and_the_way_out(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(ValueError, match="'sdweb-tests/no-such-model'.*folder"):
        load_pipeline("sdweb-tests/no-such-model")


@pytest.mark.parametrize("source, message", [
    ("/no/such/folder", "unknown model"),
    ("not a model id", "unknown model"),
])
def test_unknown_models_are_refused(source, message):
    with pytest.raises(ValueError, match=message):
        load_pipeline(source)


def test_a_folder_without_model_index_is_refused(tmp_path):
    with pytest.raises(ValueError, match="model_index.json"):
        load_pipeline(str(tmp_path))


def test_an_unreadable_model_folder_is_a_clear_error(test_model, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(test_model, broken)
    (broken / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(b"not weights")
    with pytest.raises(ValueError, match="could not be loaded") as error:
        load_pipeline(str(broken))
    assert str(tmp_path) not in str(error.value)


def test_a_cache_hit_returns_the_resident_pipeline_without_loading_again(test_model, monkeypatch):
    cache = PipelineCache(budget_bytes=2**30)
    loads = []
    real_load = loading._load
    monkeypatch.setattr(loading, "_load", lambda *a: loads.append(a) or real_load(*a))
    first = cache.get(test_model)
    second = cache.get(test_model)
    assert second is first and len(loads) == 1
    assert (cache.info()["hits"], cache.info()["misses"]) == (1, 1)
    assert cache.info()["load_seconds"] > 0


def test_past_the_budget_the_least_recently_used_pipeline_leaves(test_model, tmp_path):
    other = tmp_path / "other"
    shutil.copytree(test_model, other)
    (other / "sdweb.json").unlink()
    one_model = load_pipeline(test_model).size_bytes
    cache = PipelineCache(budget_bytes=int(one_model * 1.5))
    cache.get(test_model)
    cache.get(str(other))
    assert cache.info()["resident"] == ["other"]
    cache.get(test_model)
    assert cache.info()["misses"] == 3


def test_the_same_folder_loads_and_generates_through_the_same_path_as_any_model(test_model, tmp_path):
    copy = tmp_path / "my-checkpoint"
    shutil.copytree(test_model, copy)
    (copy / "sdweb.json").unlink()
    request = GenerationRequest(prompt="x", model=str(copy), width=256, height=256, steps=2, seed=3)
    result = generate(request, checker=None)
    assert result.model_name == "my-checkpoint"
