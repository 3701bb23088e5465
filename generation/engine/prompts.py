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
    (re.compile(r"<\s*hypernet\s*:[^>]*>", re.I), "a hypernetwork tag", ""),
]


LORA_TAG = re.compile(r"<\s*(?:lora|lyco)\s*:([^>:]*)((?::[^>:]*){0,2})>", re.I)


def lora_tags(text: str) -> list[tuple[str, float, float]]:
    """(name, UNet weight, text-encoder weight) of each `<lora:name>`, `<lora:name:w>` or
    `<lora:name:unet:te>` in `text`; ValueError for a weight that is not a number."""
    found = []
    for match in LORA_TAG.finditer(text):
        name, weights = match.group(1).strip(), [w.strip() for w in match.group(2).split(":")[1:]]
        try:
            numbers = [float(w) for w in weights] or [1.0]
        except ValueError:
            raise ValueError(f"{match.group(0)!r}: a LoRA's weights are numbers, as in <lora:{name}:0.8>") from None
        found.append((name, numbers[0], numbers[-1]))
    return found


def without_lora_tags(text: str) -> str:
    """The prompt the text encoder reads: A1111 takes extra-network tags out of it."""
    return LORA_TAG.sub("", text)


def embedding_pattern(names):
    """A regex finding any of `names` as a word (case-insensitive, as CLIP's tokens are), longest first."""
    names = sorted({n for n in names if n}, key=len, reverse=True)
    return re.compile(r"(?<![\w-])(" + "|".join(map(re.escape, names)) + r")(?![\w-])", re.I) if names else None


def embeddings_named(names, *texts: str) -> set[str]:
    """Which of `names` the texts use (lower-cased): an embedding is used where its name is a word of
    either prompt. The submit check and the engine both ask this."""
    pattern = embedding_pattern(names)
    return {m.lower() for text in texts for m in pattern.findall(text)} if pattern else set()


def check_prompt_syntax(text: str, *, field: str = "prompt") -> None:
    """Refuse A1111 syntax this engine does not run, rather than feed it to the model as words."""
    plain = re.sub(r"\\[()\[\]\\]", "_", text)
    plain = LORA_TAG.sub("", plain)
    if match := re.search(r"<\s*(lora|lyco)\s*:[^>]*>?", plain, re.I):
        raise ValueError(f"{field} has a malformed LoRA tag {match.group(0)!r}: write <lora:name>, <lora:name:0.8> "
                         "or <lora:name:unet weight:text encoder weight>")
    for pattern, what, hint in _UNSUPPORTED:
        match = pattern.search(plain)
        if match:
            raise ValueError(f"{field} uses {what}, which is not supported yet: {match.group(0)!r}.{hint}")


def prompt_schedule(text: str, steps: int) -> list[tuple[int, str]]:
    """A1111's prompt editing and alternation as [(last step, the prompt for the steps up to it)],
    steps counted from 1: `[from:to:when]` is `from` up to step `when` (a fraction of the steps
    below 1: int(when × steps)) and `to` after it; `[to:when]` adds, `[from::when]` removes;
    `[a|b|c]` takes a, b, c, a, … one per step. They nest. A prompt without them is one entry."""
    tree = _parse_schedule(text)
    schedule: list[tuple[int, str]] = []
    for step in range(1, steps + 1):
        prompt = _at_step(tree, step, steps)
        if schedule and schedule[-1][1] == prompt:
            schedule[-1] = (step, prompt)
        else:
            schedule.append((step, prompt))
    return schedule or [(steps, text)]


def has_schedule(text: str) -> bool:
    return any(not isinstance(part, str) for part in _parse_schedule(text))


def _at_step(parts: list, step: int, steps: int) -> str:
    out = []
    for part in parts:
        if isinstance(part, str):
            out.append(part)
        elif part[0] == "edit":
            _, before, after, when = part
            out.append(_at_step(before if step <= (int(when * steps) if when < 1 else int(when)) else after,
                                step, steps))
        else:
            out.append(_at_step(part[1][(step - 1) % len(part[1])], step, steps))
    return "".join(out)


def _parse_schedule(text: str) -> list:
    """The prompt as a list of text and ("edit", before, after, when) / ("alternate", [options])."""
    parts, _ = _sequence(text, 0, ())
    return parts


def _sequence(text: str, at: int, stops: tuple) -> tuple[list, int]:
    parts: list = []
    while at < len(text) and text[at] not in stops:
        char = text[at]
        if char == "\\":
            parts.append(text[at:at + 2])
            at += 2
        elif char == "(":
            inner, end = _sequence(text, at + 1, (")",))
            closed = end < len(text)
            parts += ["(", *inner, *([")"] if closed else [])]
            at = end + closed
        elif char == "[":
            found, at = _bracket(text, at)
            parts += found
        else:
            parts.append(char)
            at += 1
    return _joined(parts), at


def _bracket(text: str, at: int) -> tuple[list, int]:
    """What `[` at `at` opens: an edit, an alternation, or a plain (de-emphasis) bracket."""
    pieces, separators, end = [], [], at + 1
    while True:
        piece, end = _sequence(text, end, (":", "|", "]"))
        pieces.append(piece)
        if end >= len(text):  # never closed: A1111 de-emphasises the rest
            return ["[", *[p for k, piece in enumerate(pieces) for p in ([separators[k - 1]] if k else []) + piece]], end
        if text[end] == "]":
            break
        separators.append(text[end])
        end += 1
    end += 1
    when = _number("".join(pieces[-1])) if separators and set(separators) == {":"} and all(
        isinstance(p, str) for p in pieces[-1]) else None
    if when is not None and len(pieces) == 3:
        return [("edit", pieces[0], pieces[1], when)], end
    if when is not None and len(pieces) == 2:
        return [("edit", [], pieces[0], when)], end
    if separators and set(separators) == {"|"}:
        return [("alternate", pieces)], end
    flat = [p for k, piece in enumerate(pieces) for p in ([separators[k - 1]] if k else []) + piece]
    return _joined(["[", *flat, "]"]), end


def _number(text: str) -> float | None:
    try:
        value = float(text.strip())
    except ValueError:
        return None
    return value if value >= 0 else None


def _joined(parts: list) -> list:
    out: list = []
    for part in parts:
        if isinstance(part, str) and out and isinstance(out[-1], str):
            out[-1] += part
        else:
            out.append(part)
    return out


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


def tokenize_chunks(tokenizer, text: str, embeddings: dict | None = None) -> list[tuple[list[int], list[float], list]]:
    """Token ids, weights and embedding inserts in chunks of CHUNK_TOKENS (without start/end
    tokens). `embeddings` {name: vectors (n, width)}: where a name is a word of the text, its n
    vectors take n places (held by a placeholder id) and go into the chunk whole, as in A1111."""
    pattern = embedding_pattern(embeddings or {})
    vectors_of = {name.lower(): vectors for name, vectors in (embeddings or {}).items()}
    chunks, ids, weights, inserts = [], [], [], []

    def close_chunk():
        nonlocal ids, weights, inserts
        pad = CHUNK_TOKENS - len(ids)
        chunks.append((ids + [tokenizer.pad_token_id] * pad, weights + [1.0] * pad, inserts))
        ids, weights, inserts = [], [], []

    for fragment, weight in parse_attention(without_lora_tags(text)):
        if weight == BREAK:
            if ids:
                close_chunk()
            continue
        for k, piece in enumerate(pattern.split(fragment) if pattern else [fragment]):
            if k % 2:  # an embedding's name
                vectors = vectors_of[piece.lower()]
                if len(vectors) > CHUNK_TOKENS:
                    raise ValueError(f"embedding {piece!r} has {len(vectors)} vectors; at most {CHUNK_TOKENS} fit")
                if len(ids) + len(vectors) > CHUNK_TOKENS:
                    close_chunk()
                inserts.append((len(ids), vectors))
                ids += [_PLACEHOLDER] * len(vectors)
                weights += [weight] * len(vectors)
                continue
            for token in tokenizer(piece, add_special_tokens=False).input_ids if piece else ():
                if len(ids) == CHUNK_TOKENS:
                    close_chunk()
                ids.append(token)
                weights.append(weight)
    if ids or not chunks:
        close_chunk()
    return chunks


_PLACEHOLDER = 0  # an ordinary token id (never start or end, which CLIP's pooling looks for)


def encode_prompts(tokenizer, text_encoder, prompt: str, negative_prompt: str, device, *, clip_skip: int = 1,
                   embeddings: dict | None = None) -> tuple:
    """SD 1.x/2.x: (prompt_embeds, negative_prompt_embeds), each (1, 77 * chunks, dim). `clip_skip`
    n takes the n-th last layer (then the final norm), as A1111 does for SD 1.x. `embeddings`
    {name: {vector width: vectors}} are textual inversions the prompts may name."""
    return encode_prompts_many(tokenizer, text_encoder, [(prompt, negative_prompt, embeddings)], device,
                               clip_skip=clip_skip)[0]


def encode_prompts_many(tokenizer, text_encoder, pairs: list[tuple], device, *, clip_skip: int = 1) -> list[tuple]:
    """encode_prompts for each (prompt, negative prompt, embeddings) of `pairs`, in one forward pass."""
    layer = None if clip_skip == 1 else -clip_skip
    return [(positive, negative) for (positive, _), (negative, _) in
            _encode_pairs([(tokenizer, text_encoder, layer)], pairs, device)]


def encode_prompts_xl(encoders, prompt: str, negative_prompt: str, device, *, embeddings: dict | None = None) -> tuple:
    """SDXL: `encoders` is [(tokenizer, text_encoder), ...] (two for the base, one for the refiner).
    Each encoder reads the same chunks and gives its penultimate layer, concatenated; the pooled
    embedding is the last encoder's, of the first chunk. An empty negative prompt is zeros, as
    SDXL was trained and A1111 runs it. Returns (embeds, negative_embeds, pooled, negative_pooled)."""
    return encode_prompts_xl_many(encoders, [(prompt, negative_prompt, embeddings)], device)[0]


def encode_prompts_xl_many(encoders, pairs: list[tuple], device) -> list[tuple]:
    """encode_prompts_xl for each (prompt, negative prompt, embeddings) of `pairs`, in one forward
    pass per encoder."""
    import torch

    encoded = []
    for (_, negative_prompt, _), ((positive, pooled), (negative, negative_pooled)) in zip(
            pairs, _encode_pairs([(tokenizer, encoder, -2) for tokenizer, encoder in encoders], pairs, device)):
        if not negative_prompt:
            negative, negative_pooled = torch.zeros_like(negative), torch.zeros_like(negative_pooled)
        encoded.append((positive, negative, pooled, negative_pooled))
    return encoded


def _encode_pairs(encoders, pairs: list[tuple], device) -> list:
    """_encode_pair for each (prompt, negative prompt, embeddings) of `pairs` (the jobs of a run),
    every text of every pair through each encoder in one forward pass: one launch of the encoder
    for the run, not two per job."""
    import torch

    results = [{text: [] for text in (prompt, negative)} for prompt, negative, _ in pairs]  # one pass when the same
    pooled = [{} for _ in pairs]
    for tokenizer, text_encoder, layer in encoders:
        empty, rows = tokenize_chunks(tokenizer, "")[0], []
        for k, (_, _, embeddings) in enumerate(pairs):
            vectors = _vectors_for(text_encoder, embeddings or {})
            chunks = {text: tokenize_chunks(tokenizer, text, vectors) for text in results[k]}
            # Classifier-free guidance concatenates the two, so the shorter one gets empty chunks.
            longest = max(len(c) for c in chunks.values())
            rows += [(k, text, c + [empty] * (longest - len(c))) for text, c in chunks.items()]
        with torch.no_grad():
            encoded = _encode_chunks(tokenizer, text_encoder, [chunks for *_, chunks in rows], device, layer)
        for (k, text, _), (z, first_pooled) in zip(rows, encoded):
            results[k][text].append(z)
            pooled[k][text] = first_pooled
    return [[(torch.cat(results[k][text], dim=-1), pooled[k][text]) for text in (prompt, negative)]
            for k, (prompt, negative, _) in enumerate(pairs)]


def _vectors_for(text_encoder, embeddings: dict) -> dict:
    """{name: vectors} of the width this text encoder reads; ValueError for an embedding of another family."""
    width = text_encoder.get_input_embeddings().embedding_dim
    for name, by_width in embeddings.items():
        if width not in by_width:
            raise ValueError(f"embedding {name!r} is for another family: its vectors are "
                             f"{', '.join(map(str, by_width))} wide, this model's text encoder reads {width}")
    return {name: by_width[width] for name, by_width in embeddings.items()}


def _encode_chunks(tokenizer, text_encoder, texts: list, device, layer) -> list:
    """One encoder over the chunks of several texts at once: for each text, (embeddings (1, 77 *
    chunks, dim), its first chunk's pooled projection or None). `layer` None is the last layer; -n
    the n-th last, normed only for CLIP-L with a clip skip (SDXL takes its penultimate layers raw)."""
    import torch

    chunks = [chunk for text in texts for chunk in text]
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    ids = torch.tensor([[bos, *chunk_ids, eos] for chunk_ids, _, _ in chunks], device=device)
    weights = torch.tensor([[1.0, *w, 1.0] for _, w, _ in chunks], device=device)

    def splice(module, args, output):  # each embedding's vectors over its placeholders
        output = output.clone()
        for row, (_, _, inserts) in enumerate(chunks):
            for at, vectors in inserts:
                output[row, 1 + at:1 + at + len(vectors)] = vectors.to(output.device, output.dtype)
        return output

    hook = text_encoder.get_input_embeddings().register_forward_hook(splice) if any(c[2] for c in chunks) else None
    try:
        out = text_encoder(ids, output_hidden_states=layer is not None)
    finally:
        if hook is not None:
            hook.remove()
    if layer is None:
        z = out[0]
    elif layer == -2 and hasattr(out, "text_embeds"):  # SDXL
        z = out.hidden_states[-2]
    else:
        z = text_encoder.final_layer_norm(out.hidden_states[layer])
    if not torch.all(weights == 1.0):  # each chunk keeps its own mean
        original_mean = z.float().mean(dim=(1, 2), keepdim=True)
        z = z * weights.to(z.dtype).unsqueeze(-1)
        new_mean = z.float().mean(dim=(1, 2), keepdim=True)
        # A mean near zero (a text encoder whose final norm has no bias) would blow up the ratio.
        usable = new_mean.abs() > 1e-3 * z.float().abs().mean(dim=(1, 2), keepdim=True)
        z = z * torch.where(usable, original_mean / new_mean, torch.ones_like(new_mean)).to(z.dtype)
    encoded, first = [], 0
    for text in texts:
        pooled = out.text_embeds[first:first + 1] if hasattr(out, "text_embeds") else None
        encoded.append((z[first:first + len(text)].reshape(1, -1, z.shape[-1]), pooled))
        first += len(text)
    return encoded
