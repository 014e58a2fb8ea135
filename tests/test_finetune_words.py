"""Pivotal tuning (studio/finetune/words.py): the new words' own vectors learned beside the LoRA,
carried in the file as AUTOMATIC1111's bundled embeddings, and put in the words' token rows by
the studio's loader only while the LoRA is in the prompt (studio/models/addons.py)."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from studio.config import EMBEDDED_MODEL, Settings
from studio.finetune.export import KEY_RULE, write_lora
from studio.finetune.words import WordRows, bundle_tensors, learn_words, word_ids

A1111_BUNDLE = r"^bundle_emb\.(?P<name>[^.]+)\.(?P<rest>string_to_param\.\*|clip_l|clip_g)$"   # networks.py's reading


@pytest.fixture(scope="module")
def clip():
    from transformers import CLIPTextModel, CLIPTokenizer
    return (CLIPTextModel.from_pretrained(EMBEDDED_MODEL, subfolder="text_encoder", dtype=torch.float32),
            CLIPTokenizer.from_pretrained(EMBEDDED_MODEL, subfolder="tokenizer"))


def test_only_the_new_words_rows_learn_and_start_from_the_class_word(clip):
    import copy
    te, tok = copy.deepcopy(clip[0]), clip[1]
    before = te.get_input_embeddings().weight.detach().clone()
    spans, rows = learn_words(te, tok, ["azure"], like=["blue"])
    assert isinstance(te.get_input_embeddings(), WordRows) and spans == [("azure", word_ids(tok, "azure"))]
    assert torch.equal(rows.rows[0], before[word_ids(tok, "blue")[0]])          # starts as "blue"
    ids = tok(["an azure circle", "a red circle"], padding="max_length", max_length=77, return_tensors="pt").input_ids
    out = te(ids)[0]
    out[0].sum().backward()
    assert rows.rows.grad.abs().sum() > 0 and rows.base.weight.grad is None   # the model's table stays
    with torch.no_grad():
        plain = clip[0](ids)[0]
    assert torch.equal(out[1], plain[1])                        # a prompt without the word: the model's own
    assert not torch.allclose(out[0], plain[0])
    tensors = bundle_tensors([("string_to_param.*", spans, rows)])
    assert list(tensors) == ["bundle_emb.azure.string_to_param.*"] and tensors[next(iter(tensors))].shape == (1, 64)
    assert all(KEY_RULE.match(k) and re.match(A1111_BUNDLE, k) for k in tensors)


def _bundle_lora(path, word: str, vectors: torch.Tensor):
    """A LoRA whose one UNet layer does nothing (lora_up 0) and whose file carries `word`'s vectors."""
    from diffusers import UNet2DConditionModel
    proj = UNet2DConditionModel.from_pretrained(EMBEDDED_MODEL, subfolder="unet").down_blocks[0].attentions[0].proj_in
    shape, name = proj.weight.shape, "lora_unet_down_blocks_0_attentions_0_proj_in"
    tensors = {f"{name}.lora_down.weight": torch.randn(4, *shape[1:]).half(),
               f"{name}.lora_up.weight": torch.zeros(shape[0], 4, *shape[2:]).half(),
               f"{name}.alpha": torch.tensor(4.0).half()}
    return write_lora(path, {**tensors, f"bundle_emb.{word}.string_to_param.*": vectors}, {})


def test_the_studio_puts_a_loras_words_in_while_it_is_used_and_takes_them_out_after(tmp_path, clip):
    """With the LoRA: prompts with the word change, prompts without it are bit for bit the model's;
    the weight moves the row part of the way; without the LoRA the word is the model's own again."""
    from studio.serving.studio import Studio

    te, tok = clip
    (azure,) = word_ids(tok, "azure")
    red = te.get_input_embeddings().weight[word_ids(tok, "red")[0]].detach()
    _bundle_lora(tmp_path / "models" / "loras" / "w.safetensors", "azure", red[None].clone())
    studio = Studio.from_settings(Settings(models_dir=tmp_path / "models", outputs=tmp_path / "outputs"))

    def pixels(prompt, loras=()):
        request = studio.make_request("txt2img", prompt=prompt, seed=5, steps=8, loras=list(loras))
        return np.asarray(studio.submit(request, user="t", save=False).result().images[0].image)

    word, other = "a large azure circle on a black background", "a large green square on a white background"
    base_word, base_other = pixels(word), pixels(other)
    as_red = pixels("a large red circle on a black background")
    with_lora = pixels(word, [("w.safetensors", 1.0)])
    assert np.array_equal(pixels(other, [("w.safetensors", 1.0)]), base_other)
    assert np.array_equal(with_lora, as_red)                   # "azure" now means what "red" means
    table = studio.local.manager.base().text_encoder.get_input_embeddings().weight
    pixels(word, [("w.safetensors", 0.5)])
    own = torch.from_numpy(np.asarray(te.get_input_embeddings().weight[azure].detach()))
    assert torch.allclose(table[azure].float().cpu(), own + 0.5 * (red - own), atol=1e-6)
    assert np.array_equal(pixels(word), base_word)             # without the LoRA: the model's own word


def test_a_word_with_another_number_of_vectors_becomes_a_token(tmp_path, clip):
    """Another trainer's made-up token (two vectors for a word written with one token, or one
    written with several): loaded as a textual-inversion token, as A1111 does."""
    from studio.serving.studio import Studio

    te, tok = clip
    _bundle_lora(tmp_path / "models" / "loras" / "p.safetensors", "zqxw", torch.randn(5, 64) * 0.3)
    studio = Studio.from_settings(Settings(models_dir=tmp_path / "models", outputs=tmp_path / "outputs"))
    request = studio.make_request("txt2img", prompt="a zqxw circle", seed=1, steps=4, loras=[("p.safetensors", 1.0)])
    studio.submit(request, user="t", save=False).result()
    assert "zqxw" in studio.local.manager.base().tokenizer.get_vocab()


def test_a_run_with_the_words_rate_writes_their_vectors_learned_from_the_class_word(tmp_path):
    from safetensors.torch import load_file

    from tests.test_finetune import _job, _train
    job, datasets = _job(tmp_path, steps=6, batch=2, sample_every=100, embedding_lr=5e-3, text_encoder_lr=0.0,
                         class_words="blue")
    assert _train(job, tmp_path, datasets) == "done"
    tensors = load_file(str(tmp_path / "models" / "loras" / "azure.safetensors"))
    vectors = tensors["bundle_emb.azure.string_to_param.*"]
    assert vectors.shape == (1, 64) and not any(k.startswith("lora_te") for k in tensors)
    from transformers import CLIPTextModel, CLIPTokenizer
    te = CLIPTextModel.from_pretrained(EMBEDDED_MODEL, subfolder="text_encoder", dtype=torch.float32)
    blue = te.get_input_embeddings().weight.detach()[word_ids(CLIPTokenizer.from_pretrained(EMBEDDED_MODEL,
                                                                                   subfolder="tokenizer"), "blue")[0]]
    moved = float((vectors[0] - blue).abs().max())
    assert 0 < moved < 0.5                                     # learned from "blue", 6 steps at 5e-3


def test_textual_inversion_writes_an_embedding_file_the_studio_uses_by_name(tmp_path):
    """UNet and text-encoder rates 0, the words' rate set: no LoRA, an embedding file A1111 reads
    (one tensor, `emb_params`) named after the run, used by writing its name in the prompt."""
    from safetensors.torch import load_file

    from studio.errors import InvalidRequest
    from studio.finetune.settings import make_settings
    from studio.serving.studio import Studio
    from tests.test_finetune import _job, _train
    with pytest.raises(InvalidRequest, match="Nothing to train"):
        make_settings({"name": "a", "dataset": "b", "lr": 0, "text_encoder_lr": 0, "embedding_lr": 0})
    job, datasets = _job(tmp_path, steps=6, batch=2, sample_every=6, lr=0.0, text_encoder_lr=0.0, embedding_lr=5e-3,
                         name="azure-ti")
    assert _train(job, tmp_path, datasets) == "done", job.status()
    assert not (tmp_path / "models" / "loras" / "azure-ti.safetensors").exists()
    path = tmp_path / "models" / "embeddings" / "azure-ti.safetensors"
    tensors = load_file(str(path))
    assert list(tensors) == ["emb_params"] and tensors["emb_params"].shape == (1, 64)
    assert {r["step"] for r in job.samples()} == {0, 6}               # samples drawn with the words alone
    studio = Studio.from_settings(Settings(models_dir=tmp_path / "models", outputs=tmp_path / "outputs"))

    def picture(prompt):
        result = studio.submit(studio.make_request("txt2img", prompt=prompt, seed=2, steps=6), user="t",
                               save=False).result().images[0]
        return np.asarray(result.image), result.parameters

    used, parameters = picture("a large azure-ti circle on a black background")
    assert "azure-ti" in parameters and not np.array_equal(used, picture("a large circle on a black background")[0])
