"""AUTOMATIC1111 prompt syntax: attention weights, BREAK, and prompts longer than CLIP's window.

`(word)` multiplies attention by 1.1, `[word]` divides by 1.1, `(word:1.3)` sets a factor,
brackets nest and multiply, `\\(` is a literal bracket, and an unclosed bracket applies to the
rest of the prompt, all as A1111 reads them. Text is encoded in 75-token chunks (plus start and
end tokens), each chunk encoded on its own and the results concatenated; `BREAK` starts a new
chunk. Weights scale each token's embedding, then the chunk's mean is restored, as A1111 does.

Parsing and syntax checks are torch-free (the web side checks prompts); encoding loads torch.
"""

import re

CHUNK_TOKENS = 75
BREAK = float("-inf")  # the weight that marks a BREAK fragment; no product of weights reaches it

_TOKEN = re.compile(
    r"""
    (?P<escape>\\[()\[\]\\])
    | (?P<weight>:\s*(?P<value>[+-]?(?:\d+\.?\d*|\.\d+))\s*\))
    | (?P<bracket>[()\[\]])
    | (?P<text>[^\\()\[\]:]+|[\\:])
    """,
    re.VERBOSE,
)
_UNSUPPORTED = [
    (re.compile(r"\bAND\b"), "AND (composable prompts)", " Write 'and' in lower case to mean the word."),
    (re.compile(r"<\s*(lora|lyco)\s*:[^>]*>", re.I), "a LoRA tag", ""),
    (re.compile(r"<\s*hypernet\s*:[^>]*>", re.I), "a hypernetwork tag", ""),
    (re.compile(r"\[[^\[\]]*:[^\[\]]*\]"), "prompt editing [from:to:when]", ""),
    (re.compile(r"\[[^\[\]]*\|[^\[\]]*\]"), "alternation [a|b]", ""),
]


def check_prompt_syntax(text: str, *, field: str = "prompt") -> None:
    """Refuse A1111 syntax this engine does not run, rather than feed it to the model as words."""
    plain = re.sub(r"\\[()\[\]\\]", "_", text)
    for pattern, what, hint in _UNSUPPORTED:
        match = pattern.search(plain)
        if match:
            raise ValueError(f"{field} uses {what}, which is not supported yet: {match.group(0)!r}.{hint}")


def parse_attention(text: str) -> list[tuple[str, float]]:
    """Split a prompt into (text, weight) fragments; ("BREAK", BREAK) marks a chunk break."""
    fragments: list[list] = []
    round_open: list[int] = []
    square_open: list[int] = []

    def scale(start: int, factor: float) -> None:
        for fragment in fragments[start:]:
            if fragment[1] != BREAK:
                fragment[1] *= factor

    for match in _TOKEN.finditer(text):
        kind, token = match.lastgroup, match.group(0)
        if kind == "value":  # the inner group of `weight` wins lastgroup
            kind = "weight"
        if kind == "escape":
            fragments.append([token[1], 1.0])
        elif kind == "weight" and round_open:
            scale(round_open.pop(), float(match.group("value")))
        elif token == "(":
            round_open.append(len(fragments))
        elif token == "[":
            square_open.append(len(fragments))
        elif token == ")" and round_open:
            scale(round_open.pop(), 1.1)
        elif token == "]" and square_open:
            scale(square_open.pop(), 1 / 1.1)
        else:  # text, or a closing bracket with nothing to close
            parts = re.split(r"\s*\bBREAK\b\s*", token)
            for i, part in enumerate(parts):
                if i:
                    fragments.append(["BREAK", BREAK])
                if part:
                    fragments.append([part, 1.0])
    for start in round_open:
        scale(start, 1.1)
    for start in square_open:
        scale(start, 1 / 1.1)

    merged: list[list] = []
    for text_, weight in fragments:
        if merged and weight != BREAK and merged[-1][1] == weight:
            merged[-1][0] += text_
        else:
            merged.append([text_, weight])
    return [(t, w) for t, w in merged] or [("", 1.0)]


def tokenize_chunks(tokenizer, text: str) -> list[tuple[list[int], list[float]]]:
    """Token ids and weights in chunks of CHUNK_TOKENS (without start/end tokens)."""
    chunks, ids, weights = [], [], []

    def close_chunk():
        nonlocal ids, weights
        pad = CHUNK_TOKENS - len(ids)
        chunks.append((ids + [tokenizer.pad_token_id] * pad, weights + [1.0] * pad))
        ids, weights = [], []

    for fragment, weight in parse_attention(text):
        if weight == BREAK:
            if ids:
                close_chunk()
            continue
        for token in tokenizer(fragment, add_special_tokens=False).input_ids:
            if len(ids) == CHUNK_TOKENS:
                close_chunk()
            ids.append(token)
            weights.append(weight)
    if ids or not chunks:
        close_chunk()
    return chunks


def encode_prompts(tokenizer, text_encoder, prompt: str, negative_prompt: str, device) -> tuple:
    """(prompt_embeds, negative_prompt_embeds), each (1, 77 * chunks, dim), equal in length."""
    import torch

    positive = tokenize_chunks(tokenizer, prompt)
    negative = tokenize_chunks(tokenizer, negative_prompt)
    # Classifier-free guidance concatenates the two, so the shorter one gets empty chunks.
    empty = tokenize_chunks(tokenizer, "")[0]
    for chunks in (positive, negative):
        chunks.extend([empty] * (max(len(positive), len(negative)) - len(chunks)))
    with torch.no_grad():
        return (
            _encode_chunks(tokenizer, text_encoder, positive, device),
            _encode_chunks(tokenizer, text_encoder, negative, device),
        )


def _encode_chunks(tokenizer, text_encoder, chunks, device):
    import torch

    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    ids = torch.tensor([[bos, *chunk_ids, eos] for chunk_ids, _ in chunks], device=device)
    weights = torch.tensor([[1.0, *w, 1.0] for _, w in chunks], device=device)
    z = text_encoder(ids)[0]
    if not torch.all(weights == 1.0):
        original_mean = z.float().mean(dim=(1, 2), keepdim=True)
        z = z * weights.to(z.dtype).unsqueeze(-1)
        new_mean = z.float().mean(dim=(1, 2), keepdim=True)
        # A mean near zero (a text encoder whose final norm has no bias) would blow up the ratio.
        usable = new_mean.abs() > 1e-3 * z.float().abs().mean(dim=(1, 2), keepdim=True)
        z = z * torch.where(usable, original_mean / new_mean, torch.ones_like(new_mean)).to(z.dtype)
    return z.reshape(1, -1, z.shape[-1])
