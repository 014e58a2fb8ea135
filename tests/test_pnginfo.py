"""PNG Info: the reader (studio/outputs/pnginfo.py) on pictures the studio wrote and on hand-made
AUTOMATIC1111, ComfyUI and InvokeAI samples (their chunks as those tools write them)."""

from __future__ import annotations

import io
import json

from PIL import Image, PngImagePlugin

from studio.outputs.pnginfo import read_info
from studio.requests import make_request

A1111_TEXT = ("masterpiece, a (red:1.2) fox <lora:foxes:0.8>\nNegative prompt: blurry, bad hands\n"
              "Steps: 28, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 6.5, Seed: 1234567, "
              "Size: 512x768, Model hash: 6ce0161689, Model: v1-5-pruned-emaonly, Denoising strength: 0.4, "
              "Clip skip: 2, Lora hashes: \"foxes: 0123456789ab\", Version: v1.10.1")

COMFY_GRAPH = {
    "3": {"class_type": "KSampler", "inputs": {"seed": 42, "steps": 25, "cfg": 7.5, "sampler_name": "euler_ancestral",
                                               "scheduler": "normal", "denoise": 1.0, "model": ["4", 0],
                                               "positive": ["6", 0], "negative": ["7", 0], "latent_image": ["5", 0]}},
    "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "dreamshaper_8.safetensors"}},
    "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 640, "height": 448, "batch_size": 1}},
    "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a lighthouse at dusk", "clip": ["4", 1]}},
    "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "text, watermark", "clip": ["4", 1]}},
    "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
}

INVOKE3 = {"generation_mode": "txt2img", "positive_prompt": "a castle on a hill", "negative_prompt": "fog",
           "width": 768, "height": 512, "seed": 99, "steps": 30, "cfg_scale": 5.0, "scheduler": "dpmpp_2m_k",
           "model": {"name": "juggernaut", "base": "sdxl", "type": "main"}}
INVOKE2 = {"model_weights": "stable-diffusion-1.5", "image": {
    "prompt": [{"prompt": "a cat in a hat [blurry, lowres]", "weight": 1.0}], "steps": 40, "cfg_scale": 7.5,
    "seed": 7, "width": 512, "height": 512, "sampler": "k_euler_a"}}


def picture_bytes(chunks: dict[str, str]) -> bytes:
    """A small PNG carrying text chunks, as the tool that wrote it stored them."""
    info = PngImagePlugin.PngInfo()
    for key, value in chunks.items():
        info.add_text(key, value)
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), (9, 9, 9)).save(buffer, format="PNG", pnginfo=info)
    return buffer.getvalue()


def picture(chunks: dict[str, str]) -> Image.Image:
    return Image.open(io.BytesIO(picture_bytes(chunks)))


def test_a1111_parameters_fill_the_studio_fields():
    info = read_info(picture({"parameters": A1111_TEXT}))
    assert info.source == "AUTOMATIC1111" and info.model == "v1-5-pruned-emaonly"
    assert info.prompt == "masterpiece, a (red:1.2) fox <lora:foxes:0.8>"
    assert info.negative_prompt == "blurry, bad hands"
    assert info.fields == {"prompt": info.prompt, "negative_prompt": "blurry, bad hands", "scheduler": "DPM++ 2M Karras",
                           "steps": 28, "cfg_scale": 6.5, "seed": 1234567, "strength": 0.4, "clip_skip": 2,
                           "width": 512, "height": 768}
    params = info.a1111_parameters()
    assert params["Size-1"] == 512 and params["Size-2"] == 768 and params["Lora hashes"] == "foxes: 0123456789ab"
    assert info.infotext == A1111_TEXT
    # the fields are what a tab sends: they pass the studio's own boundary unchanged
    assert make_request(mode="txt2img", **info.fields).scheduler == "DPM++ 2M Karras"


def test_the_finishing_tools_keys_switch_them_on_with_their_settings():
    """ADetailer's, face restoration's and SD upscale's keys (each written under its field's
    label) come back as the tools' fields, so Send to a tab restores their panels; a picture
    without them leaves the tools off."""
    text = ("a red fox\nSteps: 20, Sampler: Euler, Seed: 3, Size: 64x64, ADetailer model: shapes, "
            "ADetailer prompt: \"a large red circle, centred\", ADetailer confidence: 0.3, ADetailer mask blur: 4, "
            "ADetailer denoising strength: 0.6, ADetailer inpaint only masked: True, "
            "Face restoration: GFPGANv1.4.pth, Face restoration visibility: 0.8, CodeFormer weight: 0.3, "
            "SD upscale scale: 2, SD upscale overlap: 64, SD upscale upscaler: Lanczos")
    fields = read_info(picture({"parameters": text})).fields
    assert fields["ad_enable"] is True and fields["ad_model"] == "shapes" and fields["ad_denoising_strength"] == 0.6
    assert fields["ad_prompt"] == "a large red circle, centred" and fields["ad_mask_blur"] == 4
    assert fields["restore_faces"] is True and fields["face_restorer"] == "GFPGANv1.4.pth"
    assert fields["face_visibility"] == 0.8 and fields["codeformer_weight"] == 0.3
    assert fields["sd_upscale"] is True and fields["sd_upscale_overlap"] == 64 and fields["sd_upscale_scale"] == 2
    plain = read_info(picture({"parameters": A1111_TEXT})).fields
    assert not {"ad_enable", "restore_faces", "sd_upscale"} & set(plain)


def test_a1111_in_a_jpeg_exif_user_comment():
    exif = Image.Exif()
    exif.get_ifd(0x8769)[0x9286] = b"UNICODE\x00" + A1111_TEXT.encode("utf-16-be")
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16)).save(buffer, format="JPEG", exif=exif.tobytes())
    buffer.seek(0)
    info = read_info(Image.open(buffer))
    assert info.source == "AUTOMATIC1111" and info.fields["seed"] == 1234567 and info.fields["steps"] == 28


def test_comfyui_graph():
    info = read_info(picture({"prompt": json.dumps(COMFY_GRAPH), "workflow": json.dumps({"nodes": []})}))
    assert info.source == "ComfyUI" and info.model == "dreamshaper_8.safetensors"
    assert (info.prompt, info.negative_prompt) == ("a lighthouse at dusk", "text, watermark")
    assert info.fields["scheduler"] == "Euler a" and info.fields["seed"] == 42 and info.fields["steps"] == 25
    assert info.fields["cfg_scale"] == 7.5 and (info.fields["width"], info.fields["height"]) == (640, 448)
    assert "workflow" in info.items and "prompt" in info.items


def test_invokeai_3_and_2():
    info = read_info(picture({"invokeai_metadata": json.dumps(INVOKE3)}))
    assert info.source == "InvokeAI" and info.model == "juggernaut"
    assert (info.prompt, info.negative_prompt) == ("a castle on a hill", "fog")
    assert info.fields["scheduler"] == "DPM++ 2M Karras" and info.fields["seed"] == 99
    assert (info.fields["width"], info.fields["height"], info.fields["cfg_scale"]) == (768, 512, 5.0)
    old = read_info(picture({"sd-metadata": json.dumps(INVOKE2)}))
    assert (old.prompt, old.negative_prompt) == ("a cat in a hat", "blurry, lowres")
    assert old.fields["scheduler"] == "Euler a" and old.fields["steps"] == 40 and old.model == "stable-diffusion-1.5"


def test_a_picture_without_metadata_and_broken_chunks():
    assert read_info(picture({})).source == ""
    broken = read_info(picture({"prompt": "{not json", "invokeai_metadata": "[1, 2]", "studio": "{}"}))
    assert broken.source == "" and broken.fields == {}
    # a ComfyUI graph with links where text should be, and a loop, finds nothing rather than failing
    looped = {"3": {"class_type": "KSampler", "inputs": {"positive": ["3", 0], "negative": 5, "seed": "x"}}}
    info = read_info(picture({"prompt": json.dumps(looped)}))
    assert info.source == "ComfyUI" and info.prompt == "" and "seed" not in info.fields


def test_the_studios_own_picture_restores_every_setting(studio):
    request = make_request(prompt="a blue {circle|square} __colors__", negative_prompt="red", steps=3,
                           seed=77, width=64, height=64, scheduler="Euler a", cfg_scale=5.5, clip_skip=2,
                           negative_presets=["bad hands"], known_presets=studio.local.presets.negative_names())
    result = studio.local.run(request)
    info = read_info(Image.open(result.images[0].path))
    assert info.source == "studio"
    fields = info.fields
    # the template as typed (variants unresolved), not the variant drawn, so the tab can make it again
    assert fields["prompt"] == "a blue {circle|square} __colors__" and fields["negative_prompt"] == "red"
    assert (fields["seed"], fields["steps"], fields["scheduler"], fields["cfg_scale"]) == (77, 3, "Euler a", 5.5)
    assert fields["negative_presets"] == ["bad hands"] and fields["clip_skip"] == 2
    assert info.infotext == result.images[0].parameters
