"""The regional conditioning the embedded model is trained with (embedded/regional.py) is the
studio's own at generation (studio/control/regions.py), and the world's regions hold their objects."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from embedded.regional import RegionalTraining, encode
from embedded.world import object_box, regional_dataset, region_split, two_object_scene
from studio.control.regions import read_regions, regional_attention


def _unet():
    from diffusers import UNet2DConditionModel
    torch.manual_seed(0)
    return UNet2DConditionModel(sample_size=8, in_channels=4, out_channels=4, layers_per_block=1,
                                block_out_channels=(8, 16), down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                                up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=8,
                                attention_head_dim=2, norm_num_groups=4).eval()


@pytest.mark.parametrize("prompt,ratio", [("a ADDCOL b", 0.0), ("a ADDROW b", 0.0), ("whole ADDBASE a ADDROW b", 0.3)])
def test_training_mix_is_the_studios_regional_attention(prompt, ratio):
    """One picture conditioned by the trainer's (whole caption, region, region) chunks, boxes
    and ratio gives the UNet output the studio's regional prompt of the same regions gives."""
    unet, tokens = _unet(), 5
    regions = read_regions(prompt, "", ratio)
    g = torch.Generator().manual_seed(1)
    chunks = [torch.randn(1, tokens, 8, generator=g) for _ in range(3)]
    sample, t = torch.randn(1, 4, 8, 8, generator=g), torch.tensor([500])
    with torch.no_grad(), regional_attention(unet, regions, tokens, 8, 8):
        studio = unet(sample, t, encoder_hidden_states=torch.cat(chunks[3 - len(regions.texts):], 1)).sample
        trainer = RegionalTraining(np.array([regions.boxes], np.float32), np.array([ratio], np.float32))
    with torch.no_grad(), trainer.attending(unet):
        trainer.batch(torch.tensor([0]))
        trained = unet(sample, t, encoder_hidden_states=torch.cat(chunks, 1)).sample
    assert torch.allclose(studio, trained, atol=1e-5)
    with torch.no_grad():            # and not what the plain prompt gives
        assert not torch.allclose(unet(sample, t, encoder_hidden_states=chunks[1]).sample, trained, atol=1e-3)


def test_a_plain_picture_trains_as_plain_attention():
    """A picture of the regional set that is not regional (ratio 1, its caption in every chunk)
    gets exactly the UNet output of its caption alone."""
    unet = _unet()
    g = torch.Generator().manual_seed(2)
    text = torch.randn(2, 5, 8, generator=g)
    sample, t = torch.randn(2, 4, 8, 8, generator=g), torch.tensor([100, 900])
    trainer = RegionalTraining(np.tile(np.array([[0, 0, .3, 1], [.3, 0, 1, 1]], np.float32), (2, 1, 1)),
                               np.ones(2, np.float32))
    with torch.no_grad():
        plain = unet(sample, t, encoder_hidden_states=text).sample
        with trainer.attending(unet):
            trainer.batch(torch.tensor([0, 1]))
            trained = unet(sample, t, encoder_hidden_states=text.repeat(1, 3, 1)).sample
    assert torch.allclose(plain, trained, atol=1e-5)


def test_encode_lays_chunks_side_by_side():
    calls = []

    def text(tok):
        calls.append(tok.shape)
        return (tok.float()[..., None].repeat(1, 1, 4),)

    tok = torch.arange(2 * 3 * 5).reshape(2, 3, 5)
    out = encode(text, tok)
    assert out.shape == (2, 15, 4) and calls == [(6, 5)]
    assert torch.equal(out[1, 5:10, 0], tok[1, 1].float())


def test_each_region_holds_its_object_whole():
    rng = random.Random(3)
    for _ in range(300):
        scene, _ = two_object_scene(rng)
        for obj, (x0, y0, x1, y1) in zip(scene.objects, region_split(*scene.objects, rng)):
            bx0, by0, bx1, by1 = object_box(obj)
            assert x0 <= bx0 and y0 <= by0 and bx1 <= x1 and by1 <= y1


def test_regional_dataset_modes():
    """Plain pictures have their caption thrice and ratio 1; about a third of the two-object
    pictures each are regions alone (ratio 0) and regions under a base (0.2-0.7)."""
    images, texts, boxes, ratios = regional_dataset(600, seed=4, share=0.5)
    assert images.shape == (600, 64, 64, 3) and boxes.shape == (600, 2, 4)
    plain = ratios == 1
    assert all(len(set(texts[i])) == 1 for i in np.flatnonzero(plain))
    assert all(len(set(texts[i])) == 3 for i in np.flatnonzero(~plain))
    assert 0.1 < (ratios == 0).mean() < 0.25 and 0.1 < ((ratios > 0) & (ratios < 1)).mean() < 0.25
    assert ratios[(ratios > 0) & (ratios < 1)].min() >= 0.2 and ratios[ratios < 1].max() <= 0.7
