"""The CLIP tokenizer of SD 1.x, SD 2.x and both SDXL encoders, built offline from CLIP's BPE
vocabulary, shipped with the package (vocab/README.md says where it comes from)."""

import functools
import gzip
from pathlib import Path

VOCAB_SIZE = 49408
BPE_FILE = Path(__file__).parent / "vocab" / "bpe_simple_vocab_16e6.txt.gz"


def _byte_symbols() -> list[str]:
    """CLIP's byte alphabet in its vocabulary order: printable Latin-1 bytes as themselves, then the
    other bytes moved above U+0100, in byte order."""
    printable = [*range(0x21, 0x7F), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    moved = [b for b in range(256) if b not in printable]
    return [chr(b) for b in printable] + [chr(0x100 + n) for n in range(len(moved))]


@functools.lru_cache(maxsize=2)
def clip_tokenizer(pad: str = "<|endoftext|>"):
    """A CLIPTokenizer equal to the hub's; SD 2.x and SDXL's second encoder pad with "!"."""
    from transformers import CLIPTokenizer

    lines = gzip.decompress(BPE_FILE.read_bytes()).decode("utf-8").split("\n")
    merges = [tuple(line.split()) for line in lines[1:49152 - 256 - 2 + 1]]  # CLIP's 48 894 merges
    symbols = _byte_symbols()
    tokens = symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    return CLIPTokenizer(vocab={t: i for i, t in enumerate(tokens)}, merges=merges, pad_token=pad,
                         model_max_length=77)
