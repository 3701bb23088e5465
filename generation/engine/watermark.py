"""Invisible watermark: an 8-byte payload per image (its identifier), so any image can be traced.

The mark lives in luminance, which every JPEG keeps at full resolution (4:2:0 halves only the
chroma planes). Each 12x12 pixel block carries one sign: its correlation with a one-period sine
pattern is pushed to at least a strength in that sign, changing only blocks whose own content
disagrees. The change is shaped by perceptual masking: each pixel's share grows with the local
contrast around it (measured as SSIM measures it), so flat areas get a change under one grey
level and textured ones up to MAX_WEIGHT times more, where the eye (and SSIM) can't tell. The
blocks form a 16x16 tile (192 px) repeated over the image: 52 cells hold a fixed sync pattern,
204 hold the payload + CRC-32 under a rate-1/2 convolutional code, whitened by a fixed key.

Reading folds the block correlations at every pixel modulo the tile, so a crop only rolls the
fold: one FFT correlation with the sync pattern finds the block grid and the tile phase together.
A mirror image or a copy turned by quarter turns, or by up to MAX_TURN degrees, is undone by
trying each (1° steps: a read tolerates about 0.75° off), then a resize by trying the sizes the
image plausibly had (common factors, multiples of 64, then 2 % steps), within a time budget.
Soft-decision Viterbi decodes the cells, and a read counts only when the CRC-32 passes. Images
marked before this scheme (invisible-watermark's dwtDctSvd in the U plane, CRC-16) are still read
by `read_legacy_watermark`.
"""

import binascii
import functools
import importlib.util
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

PAYLOAD_BYTES = 8
MIN_SIDE = 256
BLOCK = 12
TILE = 16  # blocks per tile side
STRENGTH = 4.5  # the correlation a flat block is pushed to, in luminance levels (textured: up to MAX_WEIGHT x)
MAX_WEIGHT = 10.0
PREVIEW_STRENGTH = 16.0  # for small lossy previews (thumbnails), where SSIM matters less than surviving WebP
_SSIM_C2 = (0.03 * 255) ** 2  # SSIM's contrast constant: below this local variance an area counts as flat
_READ_CLIP = 6.0  # a block's correlation counts at most this much when read (its content's can be far more)
_MESSAGE_BITS = (PAYLOAD_BYTES + 4) * 8  # the payload and its CRC-32
_GENERATORS = (0o171, 0o133)  # the classic rate-1/2, constraint-length-7 convolutional code
_MEMORY = 6
_CODED_BITS = (_MESSAGE_BITS + _MEMORY) * 2  # six zero bits end the code in state 0
_SYNC_THRESHOLD = 7.0  # z-score of the sync peak over all positions of the tile
MAX_TURN = 12  # degrees a copy may have been turned (beside quarter turns) and still read


def _layout():
    """Which tile cells hold the sync pattern, which coded bit each other cell holds, and the
    fixed whitening signs: one layout for every image, from a fixed seed."""
    rng = np.random.default_rng(0x5D3EB)
    cells = rng.permutation(TILE * TILE)
    sync_cells, data_cells = cells[: TILE * TILE - _CODED_BITS], cells[TILE * TILE - _CODED_BITS:]
    sync_signs = rng.choice([-1.0, 1.0], size=sync_cells.size)
    key = rng.choice([-1.0, 1.0], size=data_cells.size)
    return sync_cells, sync_signs, data_cells, key


SYNC_CELLS, SYNC_SIGNS, DATA_CELLS, KEY = _layout()
_WAVE = np.sin(2 * np.pi * (np.arange(BLOCK) + 0.5) / BLOCK)
PATTERN = np.outer(_WAVE, _WAVE) / np.linalg.norm(np.outer(_WAVE, _WAVE))  # unit norm: correlation == amplitude


def _code_outputs(registers: np.ndarray) -> np.ndarray:
    """The two coded signs (+1/-1) for each 7-bit shift-register value."""
    return np.stack([np.vectorize(lambda r, g=g: bin(r & g).count("1") % 2)(registers) for g in _GENERATORS],
                    axis=-1) * 2.0 - 1


def _encode(bits: np.ndarray) -> np.ndarray:
    state, registers = 0, []
    for bit in np.concatenate([bits, np.zeros(_MEMORY, dtype=int)]):
        register = (int(bit) << _MEMORY) | state
        registers.append(register)
        state = register >> 1
    return _code_outputs(np.array(registers)).ravel()


_NEXT = np.arange(1 << _MEMORY)
_PREVIOUS = np.stack([(_NEXT << 1) & _NEXT.max(), ((_NEXT << 1) & _NEXT.max()) | 1])  # the two states that lead to each state
_BRANCH_SIGNS = _code_outputs(((_NEXT >> (_MEMORY - 1)) << _MEMORY) | _PREVIOUS)  # (2, 64, 2)


def _viterbi(soft: np.ndarray) -> np.ndarray:
    """The message bits whose coded signs correlate best with `soft` (soft-decision Viterbi)."""
    steps = soft.reshape(-1, 2)
    metric = np.full(1 << _MEMORY, -np.inf)
    metric[0] = 0.0
    choices = np.zeros((len(steps), 1 << _MEMORY), dtype=np.intp)
    for t, pair in enumerate(steps):
        candidates = metric[_PREVIOUS] + _BRANCH_SIGNS @ pair
        choices[t] = np.argmax(candidates, axis=0)
        metric = candidates[choices[t], _NEXT]
    state, bits = 0, []
    for t in range(len(steps) - 1, -1, -1):
        bits.append(state >> (_MEMORY - 1))
        state = _PREVIOUS[choices[t, state], state]
    return np.array(bits[::-1][:_MESSAGE_BITS], dtype=bool)


@dataclass(frozen=True)
class WatermarkReading:
    payload: bytes
    method: str  # "luma tile" or "legacy dwtDctSvd"
    confidence: float  # 0..1: the share of coded cells that agree with the decoded payload
    sync: float | None = None  # z-score of the grid found
    scale: float = 1.0  # how much the image was resized before reading (1.0: not at all)
    corrected_bits: int = 0
    turned: str = ""  # how the copy had been turned or mirrored ("": not at all)
    undo: tuple = (False, 0, 0)  # (mirror it, then quarter turns, then degrees): the copy as it was marked

    def untouched(self, image: Image.Image) -> Image.Image:
        """`image` turned back as the read found it had to be (see `undo`), as the watermark was read."""
        mirrored, quarters, degrees = self.undo
        image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if mirrored else image
        image = image.rotate(90 * quarters, expand=True) if quarters else image
        return image.rotate(degrees, resample=Image.BICUBIC) if degrees else image


def _message(payload: bytes) -> np.ndarray:
    data = payload + zlib.crc32(payload).to_bytes(4, "big")
    return np.unpackbits(np.frombuffer(data, dtype=np.uint8))


def _luma(rgb: np.ndarray) -> np.ndarray:
    return rgb[..., 0] * 0.299 + rgb[..., 1] * 0.587 + rgb[..., 2] * 0.114


def embed_watermark(image: Image.Image, payload: bytes, *, strength: float = STRENGTH) -> Image.Image:
    if not isinstance(payload, bytes) or len(payload) != PAYLOAD_BYTES:
        raise ValueError(f"a watermark payload is exactly {PAYLOAD_BYTES} bytes")
    if min(image.size) < MIN_SIDE:
        raise ValueError(f"images under {MIN_SIDE}x{MIN_SIDE} can't carry the watermark")
    rgb = np.asarray(image.convert("RGB"), dtype=np.float64)
    height, width = (s - s % BLOCK for s in rgb.shape[:2])
    luma = _luma(rgb)[:height, :width]
    blocks = luma.reshape(height // BLOCK, BLOCK, width // BLOCK, BLOCK)
    # 1. the sign every block should carry, from its place in the tile
    tile = np.zeros(TILE * TILE)
    tile[SYNC_CELLS] = SYNC_SIGNS
    tile[DATA_CELLS] = _encode(_message(payload)) * KEY
    rows, cols = blocks.shape[0], blocks.shape[2]
    wanted = np.tile(tile.reshape(TILE, TILE), (-(-rows // TILE), -(-cols // TILE)))[:rows, :cols]
    # 2. move each block's correlation to at least its strength in that sign, and no further than
    #    needed; a block against it may be fought up to three times its strength (more where the
    #    whole block is textured: noise-like pictures need it, and hide it)
    weight = _masking(luma).reshape(blocks.shape)
    gain = np.einsum("iajb,ab->ij", weight, PATTERN**2)  # correlation per unit of change (PATTERN**2 sums to 1)
    target = strength * gain
    have = np.einsum("iajb,ab->ij", blocks, PATTERN)
    cap = 3 * target + 6 * strength * weight.min(axis=(1, 3)) ** 2
    change = np.clip(wanted * target - have, -cap, cap) * (have * wanted < target) / gain
    delta = (np.einsum("ij,ab->iajb", change, PATTERN) * weight).reshape(height, width)
    # 3. the same change on R, G and B is a change of luminance alone; where a channel is already
    #    at 0 or 255, the others make up its share
    marked = rgb.copy()
    marked[:height, :width] = np.clip(marked[:height, :width] + delta[..., None], 0, 255)
    short = delta - _luma(marked[:height, :width] - rgb[:height, :width])
    room = np.where(short[..., None] > 0, marked[:height, :width] < 255, marked[:height, :width] > 0)
    weight = (room * np.array([0.299, 0.587, 0.114])).sum(axis=-1)
    marked[:height, :width] += room * (short / np.maximum(weight, 0.114))[..., None]
    return Image.fromarray(np.clip(np.rint(marked), 0, 255).astype(np.uint8))


def _masking(luma: np.ndarray) -> np.ndarray:
    """Each pixel's share of the mark: 1 where the picture is flat, growing with the local contrast
    (SSIM's window: a change costs SSIM in proportion to it over 2 variance + C2)."""
    import cv2  # OpenCV comes with invisible-watermark

    mean = cv2.GaussianBlur(luma, (11, 11), 1.5)
    variance = np.maximum(cv2.GaussianBlur(luma * luma, (11, 11), 1.5) - mean * mean, 0)
    return np.clip(np.sqrt(1 + 2 * variance / _SSIM_C2), 1, MAX_WEIGHT)


def _correlations(luma: np.ndarray) -> np.ndarray:
    """The correlation of the block starting at every pixel with PATTERN (a separable filter: rows,
    then columns; two passes of filter2D are faster than sepFilter2D)."""
    import cv2  # OpenCV comes with invisible-watermark

    kernel = (_WAVE / np.linalg.norm(_WAVE)).astype(np.float32)
    full = np.ascontiguousarray(luma, dtype=np.float32)
    for shape in ((1, BLOCK), (BLOCK, 1)):
        full = cv2.filter2D(full, cv2.CV_32F, kernel.reshape(shape), anchor=(0, 0), borderType=cv2.BORDER_CONSTANT)
    return full[: luma.shape[0] - BLOCK + 1, : luma.shape[1] - BLOCK + 1]


def _fold(values: np.ndarray) -> np.ndarray:
    """Sum of the correlations at each position modulo the tile: a crop only rolls it."""
    import cv2  # OpenCV comes with invisible-watermark

    period = BLOCK * TILE
    # clipped: a block of the picture's own strong content counts no more than a marked one
    clipped = cv2.max(cv2.min(values, _READ_CLIP), -_READ_CLIP)
    folded = np.zeros((period, period), dtype=np.float32)
    for row in range(0, clipped.shape[0], period):
        for col in range(0, clipped.shape[1], period):
            part = clipped[row:row + period, col:col + period]
            folded[: part.shape[0], : part.shape[1]] += part
    return folded


@functools.cache
def _sync_template_dft() -> np.ndarray:
    import cv2  # OpenCV comes with invisible-watermark

    period = BLOCK * TILE
    template = np.zeros((period, period), dtype=np.float32)
    rows, cols = np.divmod(SYNC_CELLS, TILE)
    template[rows * BLOCK, cols * BLOCK] = SYNC_SIGNS
    return cv2.dft(template, flags=cv2.DFT_COMPLEX_OUTPUT)


def _find_grid(folded: np.ndarray) -> tuple[float, int, int]:
    """(z-score, row, column) of the best tile origin: the folded correlations' circular
    correlation with the sync pattern, through the DFT."""
    import cv2  # OpenCV comes with invisible-watermark

    spectrum = cv2.mulSpectrums(cv2.dft(folded, flags=cv2.DFT_COMPLEX_OUTPUT), _sync_template_dft(), 0, conjB=True)
    scores = cv2.idft(spectrum, flags=cv2.DFT_SCALE | cv2.DFT_REAL_OUTPUT)
    _, top, _, (col, row) = cv2.minMaxLoc(scores)
    mean, spread = (float(v[0, 0]) for v in cv2.meanStdDev(scores))
    return (top - mean) / (spread or 1.0), int(row), int(col)


def _decode(folded: np.ndarray, row: int, col: int) -> tuple[bytes, float, int] | None:
    """Payload, agreement and corrected coded bits read at that tile origin, or None when the CRC fails."""
    cell_rows, cell_cols = np.divmod(DATA_CELLS, TILE)
    period = BLOCK * TILE
    soft = folded[(row + cell_rows * BLOCK) % period, (col + cell_cols * BLOCK) % period] * KEY
    data = np.packbits(_viterbi(soft)).tobytes()
    payload, check = data[:PAYLOAD_BYTES], data[PAYLOAD_BYTES:]
    if zlib.crc32(payload).to_bytes(4, "big") != check:
        return None
    agree = np.sign(soft) == _encode(_message(payload))
    return payload, float(agree.mean()), int((~agree).sum())


def _sizes_to_try(width: int, height: int) -> list[tuple[int, int]]:
    """The sizes the image may have had when it was marked, most likely first: as it is, the usual
    factors, the multiples of 64 at its aspect ratio (the sizes people make), then a sweep of 2 %
    steps (a resized crop), which the grid search tolerates to about 1 % either way."""
    factors = [1.0, 2.0, 1.25, 0.8, 1.5, 4 / 3, 0.75, 4.0, 3.0, 2.5, 1 / 0.9, 0.9, 1.2, 1 / 1.2, 0.5]
    ours = sorted((side / width for side in range(MIN_SIDE, 2049, 64)), key=lambda f: abs(np.log(f)))
    sweep = [1.02**k for k in sorted(range(-35, 36), key=abs) if k]
    sizes = ((round(width * f), round(height * f)) for f in factors + ours + sweep if 0.45 < f < 4.5)
    return [s for s in dict.fromkeys(sizes) if min(s) >= BLOCK * TILE // 2]


def read_watermark(image: Image.Image, *, budget_s: float = 2.0) -> bytes | None:
    """The payload alone: see `watermark_reading`."""
    reading = watermark_reading(image, budget_s=budget_s)
    return reading.payload if reading else None


def watermark_reading(image: Image.Image, *, budget_s: float = 2.0) -> WatermarkReading | None:
    """What the image's watermark says, or None when it carries no readable sdweb watermark.
    Tries the image as it is, then the old mark, then the ways it may have been turned, then the
    sizes it may have had, until `budget_s`."""
    deadline = time.monotonic() + budget_s
    luma = _luma(np.asarray(image.convert("RGB"), dtype=np.float32))
    for n, (candidate, scale, turned, undo) in enumerate(_hypotheses(luma)):
        if n == 1 and (legacy := read_legacy_watermark(image)):
            return WatermarkReading(legacy, "legacy dwtDctSvd", 1.0)
        if n and time.monotonic() > deadline:
            return None
        folded = _fold(_correlations(candidate()))
        sync, row, col = _find_grid(folded)
        if sync >= _SYNC_THRESHOLD and (decoded := _decode(folded, row, col)):
            payload, agreement, corrected = decoded
            return WatermarkReading(payload, "luma tile", round(agreement, 3), round(sync, 1), scale, corrected, turned,
                                    undo)
    return None


def _hypotheses(luma: np.ndarray):
    """(the luminance as it may have been marked, made when asked; its scale; how it was turned; how
    to turn it back: WatermarkReading.undo),
    most likely first: as it is; mirrored or turned by quarter turns; turned back in 1° steps up to
    MAX_TURN either way, also mirrored (a read tolerates about 0.75° off); then the sizes it may
    have had (`_sizes_to_try`)."""
    import cv2  # OpenCV comes with invisible-watermark

    height, width = luma.shape
    yield (lambda: luma), 1.0, "", (False, 0, 0)
    for quarter, mirrored in ((0, True), (2, False), (2, True), (1, False), (3, False), (1, True), (3, True)):
        yield ((lambda q=quarter, m=mirrored: np.rot90(luma[:, ::-1] if m else luma, q)), 1.0,
               _turn_name(-90 * quarter, mirrored), (mirrored, quarter, 0))
    for degrees in sorted((d for d in range(-MAX_TURN, MAX_TURN + 1) if d), key=abs):
        for mirrored in (False, True):
            def turned_back(d=degrees, m=mirrored):
                source = luma[:, ::-1] if m else luma
                matrix = cv2.getRotationMatrix2D((width / 2, height / 2), d, 1.0)
                return cv2.warpAffine(source, matrix, (width, height), flags=cv2.INTER_CUBIC)
            yield turned_back, 1.0, _turn_name(-degrees, mirrored).replace("turned", "turned about"), (mirrored, 0, degrees)
    for size in _sizes_to_try(width, height)[1:]:
        yield ((lambda size=size: cv2.resize(luma, size, interpolation=cv2.INTER_CUBIC)), round(size[0] / width, 3), "",
               (False, 0, 0))


def _turn_name(degrees: int, mirrored: bool) -> str:
    turned = f"turned {degrees % 360 if abs(degrees) >= 90 else degrees}°" if degrees else ""
    return ", ".join(part for part in ("mirrored" if mirrored else "", turned) if part)


# The mark images carried before November 2026: read-only, so those images still trace.
_LEGACY_BITS = (PAYLOAD_BYTES + 2) * 8
_LEGACY_CRC_INIT = 0xFFFF  # not 0: a flat image reads as all-zero bits, which a zero-start CRC would pass


@functools.cache
def _dwt_dct_svd():
    """invisible-watermark's dwtDctSvd method (to make old marks in tests and the benchmark), loaded
    from its own file: the package's __init__ imports its RivaGAN method, which imports torch."""
    package = importlib.util.find_spec("imwatermark")  # finds the package without running it
    spec = importlib.util.spec_from_file_location(
        "sdweb_imwatermark_dwtdctsvd", Path(package.submodule_search_locations[0]) / "dwtDctSvd.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.EmbedDwtDctSvd


def _bgr(image: Image.Image) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(image.convert("RGB"))[:, :, ::-1])


def embed_legacy_watermark(image: Image.Image, payload: bytes) -> Image.Image:
    """The old mark, for tests and the benchmark's comparison only: images are no longer made with it."""
    data = payload + binascii.crc_hqx(payload, _LEGACY_CRC_INIT).to_bytes(2, "big")
    bits = list(np.unpackbits(np.frombuffer(data, dtype=np.uint8)))
    marked = _dwt_dct_svd()(bits, wmLen=_LEGACY_BITS).encode(_bgr(image))
    return Image.fromarray(np.ascontiguousarray(marked[:, :, ::-1]))


def read_legacy_watermark(image: Image.Image) -> bytes | None:
    if min(image.size) < MIN_SIDE:
        return None
    data = np.packbits(_legacy_bits(image)).tobytes()
    payload, check = data[:PAYLOAD_BYTES], data[PAYLOAD_BYTES:]
    return payload if binascii.crc_hqx(payload, _LEGACY_CRC_INIT).to_bytes(2, "big") == check else None


def _legacy_bits(image: Image.Image) -> np.ndarray:
    """The old mark's bits, as dwtDctSvd reads them, vectorised: each 4x4 block of the U plane's Haar
    approximation votes for its bit (block n for bit n mod the mark's length) by whether its largest
    singular value modulo 36 lies in the upper half. (dwtDctSvd takes it after a DCT, which, being
    orthonormal, leaves singular values as they are.)"""
    import cv2  # OpenCV comes with invisible-watermark
    import pywt  # comes with invisible-watermark

    u_plane = cv2.cvtColor(_bgr(image), cv2.COLOR_BGR2YUV)[..., 1]
    height, width = (side - side % 4 for side in u_plane.shape)
    band, _ = pywt.dwt2(u_plane[:height, :width], "haar")
    rows, cols = (side // 4 for side in band.shape)
    blocks = band[: rows * 4, : cols * 4].reshape(rows, 4, cols, 4).transpose(0, 2, 1, 3).reshape(-1, 4, 4)
    votes = np.linalg.svd(blocks, compute_uv=False)[:, 0] % 36 > 18
    bit = np.arange(votes.size) % _LEGACY_BITS
    share = np.bincount(bit, weights=votes, minlength=_LEGACY_BITS) / np.bincount(bit, minlength=_LEGACY_BITS)
    return share * 255 > 127
