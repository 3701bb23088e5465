import pytest

from generation.engine import make_test_model


@pytest.fixture(scope="session")
def test_model_folder(tmp_path_factory):
    return str(make_test_model(tmp_path_factory.mktemp("studio-models") / "tiny"))


@pytest.fixture
def checkpoint(db, test_model_folder):
    from generation.services import checkpoint_register

    return checkpoint_register(name="sdweb-test-tiny", source=test_model_folder, is_test_model=True)
