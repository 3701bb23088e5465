"""Perceptual fingerprints: the trace's second way in, for copies whose watermark can't be read.

Two 64-bit hashes per image, imagehash's pHash (DCT of a 32x32 grey copy) and wHash (Haar
wavelet of an 8x8 copy): both shrug off re-encoding, resizing and brightness or contrast changes,
and a match needs their summed Hamming distance within MATCH_DISTANCE. A crop moves every
low-frequency coefficient, so a cropped copy is also tried as the image it was cut from: padded
back (edge pixels repeated) to the aspect ratios people make, on each side that may be missing,
and all round by 10 % and 20 %.
"""

from dataclasses import dataclass

import numpy as np
from PIL import Image

MATCH_DISTANCE = 20  # of 128 bits: edits measured up to ~12, unrelated photos from 26 (bench/provenance.py)
# Aspect ratios the studio's size presets make (SD 1.x and SDXL), width / height.
ASPECTS = sorted({1.0, 2 / 3, 3 / 2, 1152 / 896, 896 / 1152, 1216 / 832, 832 / 1216, 1344 / 768, 768 / 1344,
                  1536 / 640, 640 / 1536, 4 / 3, 3 / 4, 16 / 9, 9 / 16})
_CROPS = (0.03, 0.26)  # a crop hypothesis is tried when it removes this share of a side
ASPECT_TOLERANCE = 0.02  # a hypothesis about the original's aspect ratio compares only those


@dataclass(frozen=True)
class Fingerprint:
    phash: int  # signed 64-bit, as a database's bigint holds it
    whash: int
    width: int
    height: int

    def distance(self, other: "Fingerprint") -> int:
        return _bits(self.phash ^ other.phash) + _bits(self.whash ^ other.whash)


@dataclass(frozen=True)
class Hypothesis:
    """The query image taken as a copy of an original of `aspect` (None: any aspect, as it is)."""

    label: str
    fingerprint: Fingerprint
    aspect: float | None


def _bits(value: int) -> int:
    return (value & 0xFFFFFFFFFFFFFFFF).bit_count()


def _signed(image_hash) -> int:
    value = int(np.packbits(image_hash.hash.ravel()).view(">u8")[0])
    return value - (1 << 64) if value >= 1 << 63 else value


def _small(image: Image.Image) -> Image.Image:
    grey = image.convert("L")
    grey.thumbnail((256, 256), Image.LANCZOS)  # the hashes look at 64x64 at most
    return grey


def _hashed(small: Image.Image, size: tuple[int, int]) -> Fingerprint:
    import imagehash

    return Fingerprint(_signed(imagehash.phash(small)), _signed(imagehash.whash(small, image_scale=64)), *size)


def fingerprint(image: Image.Image) -> Fingerprint:
    return _hashed(_small(image), image.size)


def hypotheses(image: Image.Image) -> list[Hypothesis]:
    """The image as it is, then as each uncropped original it may have been cut from."""
    import cv2  # OpenCV comes with invisible-watermark

    small = _small(image)
    pixels = np.asarray(small)
    height, width = pixels.shape
    found = [Hypothesis("as it is", _hashed(small, image.size), None)]

    def padded(label, aspect, left=0, right=0, top=0, bottom=0):
        grown = cv2.copyMakeBorder(pixels, top, bottom, left, right, cv2.BORDER_REPLICATE)
        found.append(Hypothesis(label, _hashed(_small(Image.fromarray(grown)), image.size), aspect))

    for share in (0.1, 0.2):  # cut all round: the aspect ratio stays
        x, y = round(width * share / (1 - share) / 2), round(height * share / (1 - share) / 2)
        padded(f"cropped about {share:.0%} all round", width / height, x, x, y, y)
    for aspect in ASPECTS:  # cut on one side, or both, from an original of a size people make
        original_width, original_height = max(width, height * aspect), max(height, width / aspect)
        cut_x, cut_y = round(original_width - width), round(original_height - height)
        share = max(cut_x / original_width, cut_y / original_height)
        if not _CROPS[0] < share <= _CROPS[1]:
            continue
        about = f"cropped about {share:.0%}"
        if cut_y:
            padded(f"{about} at the top", aspect, top=cut_y)
            padded(f"{about} at the bottom", aspect, bottom=cut_y)
            padded(f"{about} at the top and bottom", aspect, top=cut_y // 2, bottom=cut_y - cut_y // 2)
        else:
            padded(f"{about} on the left", aspect, left=cut_x)
            padded(f"{about} on the right", aspect, right=cut_x)
            padded(f"{about} on both sides", aspect, left=cut_x // 2, right=cut_x - cut_x // 2)
    return found


def closest(query: list[Hypothesis], stored: Fingerprint) -> tuple[int, str]:
    """(distance, hypothesis label) of the hypothesis nearest to one stored fingerprint."""
    return min((hypothesis.fingerprint.distance(stored), hypothesis.label) for hypothesis in query
               if hypothesis.aspect is None or abs(stored.width / stored.height - hypothesis.aspect) <= ASPECT_TOLERANCE)


def nearest(query: list[Hypothesis], rows: np.ndarray) -> list[tuple[int, int, str]]:
    """(row index, distance, hypothesis label) of every row within MATCH_DISTANCE of a hypothesis,
    nearest first; `rows` is an (n, 4) int64 array of phash, whash, width, height."""
    best: dict[int, tuple[int, str]] = {}
    for hypothesis in query:
        fp = hypothesis.fingerprint
        distance = (np.bitwise_count(rows[:, 0] ^ np.int64(fp.phash)).astype(int)
                    + np.bitwise_count(rows[:, 1] ^ np.int64(fp.whash)))
        if hypothesis.aspect is not None:
            distance[np.abs(rows[:, 2] / rows[:, 3] - hypothesis.aspect) > ASPECT_TOLERANCE] = 999
        for index in np.flatnonzero(distance <= MATCH_DISTANCE):
            if int(index) not in best or distance[index] < best[int(index)][0]:
                best[int(index)] = (int(distance[index]), hypothesis.label)
    return sorted(((index, d, label) for index, (d, label) in best.items()), key=lambda match: match[1])

