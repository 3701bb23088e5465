import pytest
import torch

from generation.engine import load_pipeline, parse_attention
from generation.engine.prompts import BREAK, check_prompt_syntax, encode_prompts, prompt_schedule, tokenize_chunks

# The examples AUTOMATIC1111 documents for its attention syntax, and a few more edge cases.
A1111_EXAMPLES = [
    ("normal text", [("normal text", 1.0)]),
    ("an (important) word", [("an ", 1.0), ("important", 1.1), (" word", 1.0)]),
    ("(unbalanced", [("unbalanced", 1.1)]),
    ("\\(literal\\]", [("(literal]", 1.0)]),
    ("(unnecessary)(parens)", [("unnecessaryparens", 1.1)]),
    (
        "a (((house:1.3)) [on] a (hill:0.5), sun, (((sky))).",
        [("a ", 1.0), ("house", 1.1 * 1.3 * 1.1), (" ", 1.1), ("on", 1.0), (" a ", 1.1), ("hill", 0.55),
         (", sun, ", 1.1), ("sky", 1.1**4), (".", 1.1)],
    ),
    ("[faint]", [("faint", 1 / 1.1)]),
    ("[[fainter]]", [("fainter", 1 / 1.1**2)]),
    ("((nested (deep:2)))", [("nested ", 1.21), ("deep", 2.42)]),
    ("(word:0.5) rest", [("word", 0.5), (" rest", 1.0)]),
    ("(spaced : 1.25 )", [("spaced ", 1.25)]),
    ("closing only) and ]", [("closing only) and ]", 1.0)]),
    ("time: 10:30, ratio 3:2", [("time: 10:30, ratio 3:2", 1.0)]),
    ("a BREAK b", [("a", 1.0), ("BREAK", BREAK), ("b", 1.0)]),
    ("(a BREAK b)", [("a", 1.1), ("BREAK", BREAK), ("b", 1.1)]),
    ("BREAKFAST", [("BREAKFAST", 1.0)]),
    ("", [("", 1.0)]),
]


@pytest.mark.parametrize("prompt, expected", A1111_EXAMPLES)
def test_attention_is_parsed_as_a1111_parses_it(prompt, expected):
    parsed = parse_attention(prompt)
    assert [text for text, _ in parsed] == [text for text, _ in expected]
    assert [weight for _, weight in parsed] == pytest.approx([weight for _, weight in expected])


@pytest.mark.parametrize("prompt, what", [
    ("a cat AND a dog", "AND"),
    ("portrait <lora:add_detail:0.5:1:2>", "malformed LoRA tag"),
    ("portrait <hypernet:anime:1>", "hypernetwork"),
])
def test_syntax_this_engine_does_not_run_is_refused_by_name(prompt, what):
    with pytest.raises(ValueError, match=what):
        check_prompt_syntax(prompt)


@pytest.mark.parametrize("prompt", ["salt and pepper", "\\[cat:dog\\]", "ANDROID", "a <b> tag"])
def test_look_alikes_of_unsupported_syntax_are_accepted(prompt):
    check_prompt_syntax(prompt)


# A1111's definitions: [from:to:when] is `from` up to step when (int(when x steps) below 1), then
# `to`; [to:when] adds, [from::when] removes; [a|b] alternates one per step; they nest.
@pytest.mark.parametrize("prompt, steps, expected", [
    ("a [cat:dog:0.5] on a sofa", 10, [(5, "a cat on a sofa"), (10, "a dog on a sofa")]),
    ("a [cat:dog:3] on a sofa", 10, [(3, "a cat on a sofa"), (10, "a dog on a sofa")]),
    ("a [cat:dog:0] on a sofa", 4, [(4, "a dog on a sofa")]),
    ("a [cat:dog:99] on a sofa", 4, [(4, "a cat on a sofa")]),
    ("a [red:0.25] [big::0.5] car", 8, [(2, "a  big car"), (4, "a red big car"), (8, "a red  car")]),
    ("a [cat|dog|bird] x", 4, [(1, "a cat x"), (2, "a dog x"), (3, "a bird x"), (4, "a cat x")]),
    ("x [[a|b]:c:0.5] y", 6, [(1, "x a y"), (2, "x b y"), (3, "x a y"), (6, "x c y")]),
    ("([cat:dog:0.5]:1.2), <lora:x:0.5>", 4, [(2, "(cat:1.2), <lora:x:0.5>"), (4, "(dog:1.2), <lora:x:0.5>")]),
    ("(masterpiece:1.2), [blurry], [a:b], \\[a:b:0.5\\]", 3, [(3, "(masterpiece:1.2), [blurry], [a:b], \\[a:b:0.5\\]")]),
])
def test_prompt_editing_and_alternation_follow_a1111s_definitions(prompt, steps, expected):
    assert prompt_schedule(prompt, steps) == expected
    check_prompt_syntax(prompt)  # accepted


@pytest.fixture
def text_model(test_model):
    pipe = load_pipeline(test_model).pipe
    return pipe.tokenizer, pipe.text_encoder


def encode(text_model, prompt, negative=""):
    return encode_prompts(*text_model, prompt, negative, "cpu")


def test_a_150_token_prompt_becomes_a_two_chunk_embedding_and_nothing_is_cut(text_model):
    tokenizer, _ = text_model
    prompt = "x" * 150  # the test tokenizer spells one token per character
    chunks = tokenize_chunks(tokenizer, prompt)
    assert len(chunks) == 2 and sum(tok != tokenizer.pad_token_id for ids, _, _ in chunks for tok in ids) == 150
    positive, negative = encode(text_model, prompt)
    assert positive.shape == negative.shape == (1, 154, 32)


def test_break_starts_a_new_chunk(text_model):
    positive, _ = encode(text_model, "a red cat BREAK a blue sky")
    assert positive.shape == (1, 154, 32)
    tokenizer, _ = text_model
    first, second = tokenize_chunks(tokenizer, "a red cat BREAK a blue sky")
    assert tokenizer.decode([t for t in first[0] if t != tokenizer.pad_token_id]).replace(" ", "") == "aredcat"


def test_the_shorter_of_prompt_and_negative_is_padded_to_the_same_length(text_model):
    positive, negative = encode(text_model, "short", "y" * 200)
    assert positive.shape == negative.shape == (1, 231, 32)


def test_a_plain_prompt_encodes_exactly_as_diffusers_encodes_it(test_model, text_model):
    pipe = load_pipeline(test_model).pipe
    ours, _ = encode(text_model, "a lighthouse at dusk")
    theirs, _ = pipe.encode_prompt("a lighthouse at dusk", "cpu", 1, False)
    assert torch.equal(ours, theirs)


def test_weights_change_the_embedding_of_the_weighted_words_only_in_proportion(text_model):
    plain, _ = encode(text_model, "cat")
    heavy, _ = encode(text_model, "(cat:1.5)")
    assert not torch.equal(plain, heavy)
    # The weighted tokens (after the start token) are scaled relative to the rest.
    ratio = heavy[0, 1:4].norm() / heavy[0, 5:].norm()
    assert ratio / (plain[0, 1:4].norm() / plain[0, 5:].norm()) == pytest.approx(1.5, rel=1e-3)


def test_escaped_brackets_reach_the_model_as_brackets(text_model):
    tokenizer, _ = text_model
    (ids, weights, _), = tokenize_chunks(tokenizer, "\\(x\\)")
    assert tokenizer.decode([t for t in ids if t != tokenizer.pad_token_id]).replace(" ", "") == "(x)"
    assert set(weights) == {1.0}
