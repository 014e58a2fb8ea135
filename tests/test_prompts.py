"""The prompt language: a table-driven parser suite (AUTOMATIC1111's examples and the seed's
inline negatives), then what each construct does to the conditioning a pipeline receives."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from studio.prompts.conditioning import CHUNK, Conditioner, chunk_size, chunk_tokens
from studio.prompts.syntax import (merge_negatives, parse_attention, parse_prompts, schedule,
                            take_inline_negatives, take_lora_tags)

W = 1.1

ATTENTION = [
    ("normal text", [("normal text", 1.0)]),
    ("an (important) word", [("an ", 1.0), ("important", W), (" word", 1.0)]),
    ("(unbalanced", [("unbalanced", W)]),
    ("\\(literal\\]", [("(literal]", 1.0)]),
    ("(unnecessary)(parens)", [("unnecessaryparens", W)]),
    ("a (((house:1.3)) [on] a (hill:0.5), sun, (((sky))).",
     [("a ", 1.0), ("house", 1.3 * W * W), (" ", W), ("on", W / W), (" a ", W), ("hill", W * 0.5),
      (", sun, ", W), ("sky", W ** 4), (".", W)]),
    ("[[bad]]", [("bad", 1 / W / W)]),
    ("(red:1.5) circle", [("red", 1.5), (" circle", 1.0)]),
    ("(red: 1.5 ) circle", [("red", 1.5), (" circle", 1.0)]),
    ("(negative:-1)", [("negative", -1.0)]),
    ("closing) only]", [("closing) only]", 1.0)]),
    ("a:b", [("a:b", 1.0)]),
    ("(a:1.2.3)", [("a:1.2.3", W)]),
    ("cat BREAK dog", [("cat", 1.0), ("BREAK", -1.0), ("dog", 1.0)]),
    ("(cat BREAK dog)", [("cat", W), ("BREAK", -1.0), ("dog", W)]),
    ("BREAKFAST", [("BREAKFAST", 1.0)]),
    ("", [("", 1.0)]),
]


@pytest.mark.parametrize("text,expected", ATTENTION)
def test_emphasis(text, expected):
    got = parse_attention(text)
    assert [t for t, _ in got] == [t for t, _ in expected]
    assert [w for _, w in got] == pytest.approx([w for _, w in expected])


SCHEDULES = [
    ("a [red:blue:0.5] circle", 10, [(5, "a red circle"), (10, "a blue circle")]),
    ("a [red:blue:3] circle", 10, [(3, "a red circle"), (10, "a blue circle")]),
    ("a [blue:4] circle", 10, [(4, "a  circle"), (10, "a blue circle")]),
    ("a [red::4] circle", 10, [(4, "a red circle"), (10, "a  circle")]),
    ("[red|blue]", 4, [(1, "red"), (2, "blue"), (3, "red"), (4, "blue")]),
    ("[a|b|c]", 3, [(1, "a"), (2, "b"), (3, "c")]),
    ("(a [red:blue:0.5]:1.2)", 4, [(2, "(a red:1.2)"), (4, "(a blue:1.2)")]),
    ("[red:[green:blue:0.75]:0.25]", 8, [(2, "red"), (6, "green"), (8, "blue")]),
    ("[a:b:20]", 10, [(10, "a")]),                       # past the last step: never switches
    ("[a:b:0.0]", 10, [(10, "b")]),                      # fraction 0: the second from the start
    ("no editing here", 10, [(10, "no editing here")]),
    ("[unclosed:edit:0.5", 10, [(10, "[unclosed:edit:0.5")]),
    ("[a:b:x]", 10, [(10, "[a:b:x]")]),                  # not a number: literal text
    ("\\[a:b:0.5\\]", 10, [(10, "\\[a:b:0.5\\]")]),
]


@pytest.mark.parametrize("text,steps,expected", SCHEDULES)
def test_prompt_editing_and_alternation(text, steps, expected):
    assert schedule(text, steps) == expected


INLINE = [
    ("a woman, (-bad anatomy), (realistic perspectives)",
     "a woman, (realistic perspectives)", ["bad anatomy"]),
    ("hands (-bad hands -unnatural hands)", "hands", ["bad hands", "unnatural hands"]),
    ("(-bad hands:1.3) portrait", "portrait", ["(bad hands:1.3)"]),
    ("(-bad hands -bent fingers:1.2), photo", "photo", ["(bad hands:1.2)", "(bent fingers:1.2)"]),
    ("(-bad hands, -bad feet)", "", ["bad hands", "bad feet"]),
    ("a T-shirt, sci-fi city, (sci-fi:1.2)", "a T-shirt, sci-fi city, (sci-fi:1.2)", []),
    ("(-bad hands, good light)", "(-bad hands, good light)", []),   # not every item is negative
    ("(- spaced)", "(- spaced)", []),
    ("(-1.5)", "(-1.5)", []),
    ("\\(-not a group\\)", "\\(-not a group\\)", []),
]


@pytest.mark.parametrize("text,positive,negatives", INLINE)
def test_inline_negatives(text, positive, negatives):
    assert take_inline_negatives(text) == (positive, negatives)


def test_lora_tags_and_negative_merging():
    assert take_lora_tags("a <lora:ink:0.8> cat <lora:glow>") == ("a cat", [("ink", "0.8"), ("glow", "1")])
    parsed = parse_prompts("portrait (-bad hands) <lora:ink:0.5>", "Bad Hands, blurry")
    assert parsed.positive_text == "portrait" and parsed.loras == [("ink", "0.5")]
    assert parsed.negative == "Bad Hands, blurry"            # not repeated
    assert merge_negatives("a, (b, c:1.2)", ["a", "d"]) == "a, (b, c:1.2), d"


@pytest.mark.parametrize("text", ["(((", ")))", "[[[:", "[a|", "(a:", "<lora:", "\\", "[:::]", "(-)",
                                  "[a:b:c:d]", "((a)[b:c:0.5]", "🎨 (ünïcödé:1.2) \x00"])
def test_malformed_input_never_raises(text):
    parse_attention(text)
    schedule(text, 20)
    parse_prompts(text, text)


# ---------------------------------------------------------------------------------------------
# chunks

def test_chunks_of_75_with_break_and_comma_backtrack():
    ids = list(range(100, 180))                               # 80 tokens, no comma
    chunks = chunk_tokens([(ids, 1.0)], comma_id=7)
    assert [len(c.tokens) for c in chunks] == [75, 5]
    assert [len(c.tokens) for c in chunk_tokens([(ids[:10], 1.0), None, (ids[:3], 2.0)], 7)] == [10, 3]
    # a comma 10 tokens before the end: the words after it move to the next chunk
    with_comma = ids[:65] + [7] + ids[:15]
    chunks = chunk_tokens([(with_comma, 1.0)], comma_id=7)
    assert [len(c.tokens) for c in chunks] == [66, 15] and chunks[0].tokens[-1] == 7
    assert [len(c.tokens) for c in chunk_tokens([([], 1.0)], 7)] == [0]
    assert [len(c.tokens) for c in chunk_tokens([(ids, 1.0)], 7, size=30)] == [30, 30, 20]


@pytest.mark.parametrize("length, size", [(77, 75), (32, 30), (int(1e30), 75), (None, 75)])
def test_chunk_size_follows_a_short_tokenizer(length, size):
    class Tok:
        model_max_length = length
    assert chunk_size(Tok()) == size


# ---------------------------------------------------------------------------------------------
# conditioning on real (tiny) pipelines

@pytest.fixture(scope="module")
def pipes():
    from tests.ldm_layout import tiny_pipeline
    return {"sd1": tiny_pipeline("sd1"), "sd2": tiny_pipeline("sd2"), "sdxl": tiny_pipeline("sdxl")}


@pytest.mark.parametrize("family", ["sd1", "sd2", "sdxl"])
def test_plain_prompts_match_diffusers_exactly(pipes, family):
    pipe = pipes[family]
    ours = Conditioner(pipe, "a red circle on a blue background", "blurry", 10).pipeline_kwargs()
    if family in ("sd1", "sd2"):   # SD 2.x: OpenCLIP's "!" padding
        pe, ne = pipe.encode_prompt("a red circle on a blue background", "cpu", 1, True, "blurry")
        assert torch.equal(ours["prompt_embeds"], pe) and torch.equal(ours["negative_prompt_embeds"], ne)
    else:
        pe, ne, pp, npool = pipe.encode_prompt("a red circle on a blue background", device="cpu",
                                               negative_prompt="blurry")
        assert torch.equal(ours["prompt_embeds"], pe) and torch.equal(ours["negative_prompt_embeds"], ne)
        assert torch.equal(ours["pooled_prompt_embeds"], pp)
        empty = Conditioner(pipe, "x", "", 10).pipeline_kwargs()
        assert not empty["negative_prompt_embeds"].any()      # SDXL: empty negative is zeros


def test_emphasis_changes_the_embeddings_keeping_the_mean(pipes):
    pipe = pipes["sd1"]
    plain = Conditioner(pipe, "a red circle", "", 4).pipeline_kwargs()["prompt_embeds"]
    strong = Conditioner(pipe, "a (red:1.5) circle", "", 4).pipeline_kwargs()["prompt_embeds"]
    assert not torch.allclose(plain, strong)
    # the tiny encoder's final layer norm (weight 1, bias 0) leaves a mean of ~1e-8: compare it on
    # the scale of the embeddings, not relative to that float noise
    assert abs(strong.mean().item() - plain.mean().item()) <= 1e-4 * plain.abs().mean().item()
    # only the emphasised token's position changes before the mean is restored: the others
    # differ by one common factor
    ratio = strong[0, 0] / plain[0, 0]
    assert torch.allclose(ratio, ratio[0].expand_as(ratio), rtol=1e-3)


def test_long_prompt_and_break_make_more_chunks(pipes):
    pipe = pipes["sd1"]
    long = ", ".join(["red circle"] * 40)                     # > 75 tokens
    e = Conditioner(pipe, long, "", 4).pipeline_kwargs()
    assert e["prompt_embeds"].shape[1] == 2 * (CHUNK + 2)
    assert e["negative_prompt_embeds"].shape == e["prompt_embeds"].shape     # padded to match
    e = Conditioner(pipe, "red BREAK circle", "", 4).pipeline_kwargs()
    assert e["prompt_embeds"].shape[1] == 2 * (CHUNK + 2)


def test_a_32_token_tokenizer_gets_32_token_chunks_as_the_pipeline_does(pipes):
    """The embedded model was trained on captions padded to 32 tokens (its tokenizer's
    model_max_length): the studio's conditioning must pad to 32 too, exactly as diffusers does."""
    import copy
    base = pipes["sd1"]
    tok = copy.deepcopy(base.tokenizer)
    tok.model_max_length = 32
    pipe = type(base)(**{**base.components, "tokenizer": tok})
    ours = Conditioner(pipe, "a red circle on a blue background", "blurry", 4).pipeline_kwargs()
    pe, ne = pipe.encode_prompt("a red circle on a blue background", "cpu", 1, True, "blurry")
    assert pe.shape[1] == 32
    assert torch.equal(ours["prompt_embeds"], pe) and torch.equal(ours["negative_prompt_embeds"], ne)
    long = Conditioner(pipe, ", ".join(["red circle"] * 12), "", 4).pipeline_kwargs()   # 35 tokens
    assert long["prompt_embeds"].shape[1] == 2 * 32


def _unet_inputs(pipe, **call):
    """The encoder_hidden_states the UNet receives at each step."""
    seen = []
    hook = pipe.unet.register_forward_pre_hook(
        lambda m, args, kwargs: seen.append(kwargs["encoder_hidden_states"].detach().clone()),
        with_kwargs=True)
    try:
        pipe(**call)
    finally:
        hook.remove()
    return seen


def test_prompt_editing_switches_at_the_middle_step(pipes):
    pipe = pipes["sd1"]
    steps = 6
    cond = Conditioner(pipe, "a [red:blue:0.5] circle", "", steps)
    red = Conditioner(pipe, "a red circle", "", steps).pipeline_kwargs()["prompt_embeds"]
    blue = Conditioner(pipe, "a blue circle", "", steps).pipeline_kwargs()["prompt_embeds"]
    seen = _unet_inputs(pipe, num_inference_steps=steps, height=64, width=64, output_type="np",
                        generator=torch.Generator().manual_seed(0), **cond.pipeline_kwargs(),
                        callback_on_step_end=lambda p, i, t, kw: cond.update(p, i, kw, 1),
                        callback_on_step_end_tensor_inputs=cond.tensor_inputs())
    positives = [s[1:] for s in seen]                        # [negative, positive] under CFG
    assert len(positives) == steps
    assert all(torch.equal(p, red) for p in positives[:3])
    assert all(torch.equal(p, blue) for p in positives[3:])


def test_alternation_changes_every_step(pipes):
    pipe = pipes["sdxl"]
    cond = Conditioner(pipe, "a [red|blue] circle", "", 4)
    seen = _unet_inputs(pipe, num_inference_steps=4, height=64, width=64, output_type="np",
                        generator=torch.Generator().manual_seed(0), **cond.pipeline_kwargs(),
                        callback_on_step_end=lambda p, i, t, kw: cond.update(p, i, kw, 1),
                        callback_on_step_end_tensor_inputs=cond.tensor_inputs())
    pos = [s[1:] for s in seen]
    assert torch.equal(pos[0], pos[2]) and torch.equal(pos[1], pos[3]) and not torch.equal(pos[0], pos[1])


# ---------------------------------------------------------------------------------------------
# through the studio

def test_constructs_change_the_image_and_inline_negatives_equal_a_typed_negative(studio):
    from studio.outputs.metadata import read_metadata
    from studio.requests import make_request

    def image(**kw):
        r = studio.local.run(make_request(**{"seed": 3, "steps": 4, **kw})).images[0]
        return np.asarray(r.image, dtype=np.int16), r
    plain, _ = image(prompt="a red circle")
    strong, _ = image(prompt="a (red:1.5) circle")
    edited, rec = image(prompt="a [red:blue:0.5] circle")
    assert not np.array_equal(plain, strong) and not np.array_equal(plain, edited)
    meta = read_metadata(rec.path)[1]
    assert meta["request"]["prompt"] == "a [red:blue:0.5] circle"        # as typed
    assert [s[1] for s in meta["parsed"]["schedule"]] == ["a red circle", "a blue circle"]
    inline, rec = image(prompt="a circle (-red -square:1.2)")
    typed, _ = image(prompt="a circle", negative_prompt="(red:1.2), (square:1.2)")
    assert np.array_equal(inline, typed)
    assert read_metadata(rec.path)[1]["parsed"]["moved_to_negative"] == ["(red:1.2)", "(square:1.2)"]


def test_typed_negative_presets_and_inline_negatives_do_not_repeat_terms(studio):
    from studio.requests import make_request
    out = studio.explain_prompt(make_request(prompt="hands (-extra fingers -blurry)",
                                             negative_prompt="Bad Hands, blurry",
                                             negative_presets=["bad hands"], steps=4))
    terms = [t.strip().lower() for t in out["negative prompt"].split(",")]
    assert terms.count("bad hands") == 1 and terms.count("blurry") == 1 and terms.count("extra fingers") == 1


def test_explain_prompt(studio):
    from studio.requests import make_request
    out = studio.explain_prompt(make_request(prompt="(a (red:1.5) [circle]) BREAK [x|y] (-blur)",
                                             negative_presets=["bad hands"], steps=4))
    assert out["moved to the negative prompt"] == ["blur"]
    assert out["negative prompt"].startswith("bad hands") and out["negative prompt"].endswith("blur")
    assert len(out["per step"]) == 4                       # alternation: a segment per step
    assert ["red", pytest.approx(1.65)] in [list(f) for f in out["per step"][0]["fragments"]]
    assert len(out["per step"][0]["chunks"]) == 2          # BREAK


# ---------------------------------------------------------------------------------------------
# variants and wildcards (dynamicprompts)

def test_variants_expand_per_seed_and_keep_reference_tags(tmp_path):
    from studio.errors import InvalidRequest
    from studio.prompts.wildcards import expand_all, expand_random, has_variants
    (tmp_path / "colors.txt").write_text("red\nblue\n# a comment\ngreen\n")
    text = "a {red|blue|green} circle {image} {image:ref}"
    assert has_variants(text) and not has_variants("a circle {image}")
    a = expand_random(text, [1, 2, 3, 1], tmp_path)
    assert a[0] == a[3] and all(p.endswith("circle {image} {image:ref}") for p in a)
    assert expand_random("__colors__ square", [5], tmp_path)[0] in ("red square", "blue square", "green square")
    assert sorted(expand_all("{red|blue} {circle|square}", tmp_path, 10)) == [
        "blue circle", "blue square", "red circle", "red square"]
    with pytest.raises(InvalidRequest, match="no wildcard file"):
        expand_random("__nope__", [1], tmp_path)
    with pytest.raises(InvalidRequest, match="more than 3 combinations"):
        expand_all("{a|b} {c|d}", tmp_path, 3)


def test_each_variant_image_can_be_made_again_alone(studio):
    from studio.outputs.metadata import read_metadata
    from studio.requests import make_request
    batch = studio.local.run(make_request(prompt="a {red|blue|green|white} circle", seed=10, steps=3,
                                    batch_size=2, batch_count=2)).images
    variants = [read_metadata(i.path)[1]["parsed"]["variant"] for i in batch]
    assert all(v.startswith("a ") and "{" not in v for v in variants)
    third = batch[2]
    alone = studio.local.run(make_request(prompt="a {red|blue|green|white} circle", seed=third.seed,
                                    steps=3)).images[0]
    assert read_metadata(alone.path)[1]["parsed"]["variant"] == variants[2]
    # same prompt and seed; batched matmuls differ from single ones only in the last bits
    diff = np.abs(np.asarray(alone.image, dtype=np.int16) - np.asarray(third.image, dtype=np.int16))
    assert diff.max() <= 3, diff.max()
    assert "Wildcard prompt" in third.parameters


def test_every_combination(studio):
    from studio.outputs.metadata import read_metadata
    from studio.requests import make_request
    result = studio.local.run(make_request(prompt="a {red|blue} {circle|square}", variants="all", seed=1,
                                     steps=2, batch_size=3))
    variants = sorted(read_metadata(i.path)[1]["parsed"]["variant"] for i in result.images)
    assert variants == ["a blue circle", "a blue square", "a red circle", "a red square"]
    assert [i.seed for i in result.images] == [1, 2, 3, 4]
