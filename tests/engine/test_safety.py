import pytest

from generation.engine import DiffusersSafetyChecker, read_watermark
from generation.engine.request import JobError
from tests.support import tiny_safety_checker


class FlagSecond:
    def check(self, images):
        return [k == 1 for k in range(len(images))]


class Broken:
    def check(self, images):
        raise OSError("weights missing")


def test_a_flagged_image_is_withheld_and_reported(run):
    result = run(num_images=3, seed=10, checker=FlagSecond(), watermark_payloads=[b"a" * 8, b"b" * 8, b"c" * 8])
    assert result.flagged == [1]
    assert result.indexes == [0, 2] and result.seeds == [10, 12]
    assert [read_watermark(im) for im in result.images] == [b"a" * 8, b"c" * 8]


def test_a_checker_error_fails_the_run(run):
    with pytest.raises(JobError, match="safety checker failed"):
        run(checker=Broken())


def test_diffusers_safety_checker_withholds_what_it_flags(run, tmp_path):
    strict = DiffusersSafetyChecker(tiny_safety_checker(tmp_path / "strict", threshold=-100.0))
    result = run(num_images=2, checker=strict)
    assert result.images == [] and result.flagged == [0, 1]


def test_diffusers_safety_checker_passes_what_it_clears(run, tmp_path):
    lenient = DiffusersSafetyChecker(tiny_safety_checker(tmp_path / "lenient", threshold=100.0))
    result = run(num_images=2, checker=lenient)
    assert len(result.images) == 2 and result.flagged == []

