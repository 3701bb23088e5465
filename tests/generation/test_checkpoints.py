import pytest
from django.core.management import CommandError, call_command

from generation.models import Checkpoint


def test_add_model_registers_a_local_folder_with_its_native_size(db, test_model_folder, capsys):
    call_command("add_model", "tiny", test_model_folder, "--default")
    checkpoint = Checkpoint.objects.get(name="tiny")
    assert (checkpoint.source, checkpoint.is_default, checkpoint.default_width) == (test_model_folder, True, 256)
    assert "Registered tiny" in capsys.readouterr().out


def test_only_one_checkpoint_is_the_default(db, test_model_folder):
    call_command("add_model", "first", test_model_folder)
    call_command("add_model", "second", test_model_folder, "--default")
    assert list(Checkpoint.objects.filter(is_default=True).values_list("name", flat=True)) == ["second"]


@pytest.mark.parametrize("source, message", [
    ("/models/v1-5-pruned.ckpt", "pickle"),
    ("/no/such/folder", "unknown model"),
])
def test_add_model_refuses_what_it_cannot_use(db, source, message):
    with pytest.raises(CommandError, match=message):
        call_command("add_model", "bad", source)
    assert not Checkpoint.objects.exists()


def test_an_uncached_hub_model_offline_is_a_clear_error(db, monkeypatch, tmp_path):
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(CommandError, match="not in the local Hugging Face cache"):
        call_command("add_model", "sd15", "someorg/some-model")
