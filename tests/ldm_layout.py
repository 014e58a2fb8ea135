"""Architecture-faithful tiny models of each Stable Diffusion family, and a writer of the original
single-file (LDM / AUTOMATIC1111) layout, for testing the studio's loading of real checkpoints.

The tiny models follow the real families' rules (same block types and layer layout, GroupNorm of
32 groups, SD 1.x's 8 heads, 64 channels per head for SD 2.x and SDXL, CLIP's 49,408-token vocabulary,
SD 2.x's extra final OpenCLIP layer, SDXL's two encoders and size conditioning) at small widths.
The writer maps diffusers names back to the original ones, written here from the LDM layout
(input_blocks / middle_block / output_blocks, encoder.down / decoder.up, OpenCLIP resblocks with
fused in_proj): a file it writes that diffusers' own converter reads back into the very same
tensors is a file in the layout the real checkpoints use.
"""

from __future__ import annotations

from pathlib import Path

import torch

from studio.models.checkpoints import TOKENIZER_FILES

VOCAB = 49408


def _tokenizer(pad: str = "<|endoftext|>"):
    from transformers import CLIPTokenizer
    return CLIPTokenizer(str(TOKENIZER_FILES / "vocab.json"), str(TOKENIZER_FILES / "merges.txt"),
                         model_max_length=77, pad_token=pad)


def _clip(hidden: int, layers: int, act: str, projection: int | None = None, seed: int = 0):
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection
    torch.manual_seed(seed)
    cfg = CLIPTextConfig(vocab_size=VOCAB, hidden_size=hidden, intermediate_size=hidden * 4,
                         num_hidden_layers=layers, num_attention_heads=max(1, hidden // 64),
                         max_position_embeddings=77, hidden_act=act, projection_dim=projection or hidden,
                         bos_token_id=49406, eos_token_id=49407, pad_token_id=49407 if act == "quick_gelu" else 0)
    return (CLIPTextModelWithProjection if projection else CLIPTextModel)(cfg).eval()


def tiny_pipeline(family: str, inpainting: bool = False, seed: int = 0):
    """A random-weight tiny pipeline of `family` (sd1 | sd2 | sdxl), the way the real one is built."""
    import diffusers
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, UNet2DConditionModel

    torch.manual_seed(seed)
    in_ch = 9 if inpainting else 4
    vae = AutoencoderKL(block_out_channels=(32, 64), down_block_types=("DownEncoderBlock2D",) * 2,
                        up_block_types=("UpDecoderBlock2D",) * 2, latent_channels=4, layers_per_block=1,
                        norm_num_groups=32, sample_size=64,
                        scaling_factor=0.13025 if family == "sdxl" else 0.18215)
    sched = EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                   steps_offset=1, prediction_type="v_prediction" if family == "sd2" and not inpainting else "epsilon")
    if family == "sd1":
        unet = UNet2DConditionModel(
            sample_size=16, in_channels=in_ch, out_channels=4, layers_per_block=1,
            block_out_channels=(32, 64), down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=64,
            attention_head_dim=8, norm_num_groups=32)
        text = _clip(64, 2, "quick_gelu")
        parts = dict(text_encoder=text, tokenizer=_tokenizer(), safety_checker=None,
                     feature_extractor=None, requires_safety_checker=False)
        cls = diffusers.StableDiffusionInpaintPipeline if inpainting else diffusers.StableDiffusionPipeline
    elif family == "sd2":
        unet = UNet2DConditionModel(
            sample_size=16, in_channels=in_ch, out_channels=4, layers_per_block=1,
            block_out_channels=(64, 128), down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=64,
            attention_head_dim=(1, 2), use_linear_projection=True, norm_num_groups=32,
            upcast_attention=not inpainting)  # SD 2.x 768-v: v-prediction, upcast
        text = _clip(64, 2, "gelu")
        parts = dict(text_encoder=text, tokenizer=_tokenizer("!"), safety_checker=None,
                     feature_extractor=None, requires_safety_checker=False)
        cls = diffusers.StableDiffusionInpaintPipeline if inpainting else diffusers.StableDiffusionPipeline
    elif family == "sdxl":
        # the two encoders differ in width, as CLIP-L (768) and OpenCLIP bigG (1280) do: the
        # loaders tell them apart by it
        text, text_2 = _clip(64, 2, "quick_gelu"), _clip(128, 2, "gelu", projection=128, seed=1)
        unet = UNet2DConditionModel(
            sample_size=16, in_channels=in_ch, out_channels=4, layers_per_block=1,
            block_out_channels=(32, 64, 128),
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
            transformer_layers_per_block=(1, 1, 2), cross_attention_dim=64 + 128,
            attention_head_dim=(1, 1, 2), use_linear_projection=True, norm_num_groups=32,
            addition_embed_type="text_time", addition_time_embed_dim=8,
            projection_class_embeddings_input_dim=128 + 6 * 8)
        parts = dict(text_encoder=text, text_encoder_2=text_2, tokenizer=_tokenizer(),
                     tokenizer_2=_tokenizer("!"))
        cls = diffusers.StableDiffusionXLInpaintPipeline if inpainting else diffusers.StableDiffusionXLPipeline
        if inpainting:
            parts["requires_aesthetics_score"] = False
    else:
        raise ValueError(family)
    pipe = cls(vae=vae, unet=unet, scheduler=sched, **parts)
    pipe.set_progress_bar_config(disable=True)
    return pipe


# ---------------------------------------------------------------------------------------------
# diffusers names -> original names

_RESNET = {"norm1": "in_layers.0", "conv1": "in_layers.2", "time_emb_proj": "emb_layers.1",
           "norm2": "out_layers.0", "conv2": "out_layers.3", "conv_shortcut": "skip_connection"}
_VAE_RESNET = {"norm1": "norm1", "conv1": "conv1", "norm2": "norm2", "conv2": "conv2",
               "conv_shortcut": "nin_shortcut"}
_VAE_ATTN = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}


def _move(src: dict, out: dict, old: str, new: str, rename: dict | None = None, conv: bool = False):
    """Copy every tensor under `old.` to `new.`, renaming the first part of the rest by `rename`."""
    found = False
    for key, value in src.items():
        if not key.startswith(old + "."):
            continue
        found = True
        rest = key[len(old) + 1:]
        if rename:
            for a, b in rename.items():
                if rest.startswith(a + "."):
                    rest = b + rest[len(a):]
                    break
        if conv and value.ndim == 2:
            value = value[:, :, None, None]
        out[f"{new}.{rest}"] = value
    return found


def _encoder_to_ldm(sd: dict, out: dict, cfg, p: str) -> None:
    """The UNet's encoder half (time and size embeddings, input blocks, middle block): what a
    ControlNet copies of it, under the same names."""
    per, levels = cfg.layers_per_block, len(cfg.block_out_channels)
    _move(sd, out, "time_embedding.linear_1", p + "time_embed.0")
    _move(sd, out, "time_embedding.linear_2", p + "time_embed.2")
    _move(sd, out, "add_embedding.linear_1", p + "label_emb.0.0")
    _move(sd, out, "add_embedding.linear_2", p + "label_emb.0.2")
    _move(sd, out, "conv_in", p + "input_blocks.0.0")
    for i in range(levels):
        for j in range(per):
            n = 1 + i * (per + 1) + j
            _move(sd, out, f"down_blocks.{i}.resnets.{j}", f"{p}input_blocks.{n}.0", _RESNET)
            _move(sd, out, f"down_blocks.{i}.attentions.{j}", f"{p}input_blocks.{n}.1")
        _move(sd, out, f"down_blocks.{i}.downsamplers.0.conv", f"{p}input_blocks.{(i + 1) * (per + 1)}.0.op")
    _move(sd, out, "mid_block.resnets.0", p + "middle_block.0", _RESNET)
    _move(sd, out, "mid_block.attentions.0", p + "middle_block.1")
    _move(sd, out, "mid_block.resnets.1", p + "middle_block.2", _RESNET)


def unet_to_ldm(sd: dict, cfg) -> dict:
    out: dict = {}
    p = "model.diffusion_model."
    per = cfg.layers_per_block
    levels = len(cfg.block_out_channels)
    _encoder_to_ldm(sd, out, cfg, p)
    for i in range(levels):
        for j in range(per + 1):
            n = i * (per + 1) + j
            _move(sd, out, f"up_blocks.{i}.resnets.{j}", f"{p}output_blocks.{n}.0", _RESNET)
            attn = _move(sd, out, f"up_blocks.{i}.attentions.{j}", f"{p}output_blocks.{n}.1")
        _move(sd, out, f"up_blocks.{i}.upsamplers.0.conv",
              f"{p}output_blocks.{i * (per + 1) + per}.{2 if attn else 1}.conv")
    _move(sd, out, "conv_norm_out", p + "out.0")
    _move(sd, out, "conv_out", p + "out.2")
    if len(out) != len(sd):
        raise AssertionError(f"UNet writer left {len(sd) - len(out)} tensors unmapped")
    return out


def vae_to_ldm(sd: dict, cfg) -> dict:
    out: dict = {}
    p = "first_stage_model."
    levels = len(cfg.block_out_channels)
    for part in ("encoder", "decoder"):
        _move(sd, out, f"{part}.conv_in", f"{p}{part}.conv_in")
        _move(sd, out, f"{part}.mid_block.resnets.0", f"{p}{part}.mid.block_1", _VAE_RESNET)
        _move(sd, out, f"{part}.mid_block.resnets.1", f"{p}{part}.mid.block_2", _VAE_RESNET)
        _move(sd, out, f"{part}.mid_block.attentions.0", f"{p}{part}.mid.attn_1", _VAE_ATTN, conv=True)
        _move(sd, out, f"{part}.conv_norm_out", f"{p}{part}.norm_out")
        _move(sd, out, f"{part}.conv_out", f"{p}{part}.conv_out")
    for i in range(levels):
        for j in range(cfg.layers_per_block):
            _move(sd, out, f"encoder.down_blocks.{i}.resnets.{j}", f"{p}encoder.down.{i}.block.{j}", _VAE_RESNET)
        _move(sd, out, f"encoder.down_blocks.{i}.downsamplers.0.conv", f"{p}encoder.down.{i}.downsample.conv")
        for j in range(cfg.layers_per_block + 1):
            _move(sd, out, f"decoder.up_blocks.{i}.resnets.{j}", f"{p}decoder.up.{levels - 1 - i}.block.{j}",
                  _VAE_RESNET)
        _move(sd, out, f"decoder.up_blocks.{i}.upsamplers.0.conv", f"{p}decoder.up.{levels - 1 - i}.upsample.conv")
    _move(sd, out, "quant_conv", p + "quant_conv")
    _move(sd, out, "post_quant_conv", p + "post_quant_conv")
    if len(out) != len(sd):
        raise AssertionError(f"VAE writer left {len(sd) - len(out)} tensors unmapped")
    return out


def _text_sd(model) -> dict:
    """transformers >= 5.6 flattened CLIPTextModel (no `text_model.` level); WithProjection not."""
    sd = model.state_dict()
    if any(k.startswith("text_model.") for k in sd):
        return {k[len("text_model."):]: v for k, v in sd.items() if k.startswith("text_model.")}
    return sd


def clip_to_ldm(model, prefix: str) -> dict:
    return {prefix + "text_model." + k: v for k, v in _text_sd(model).items() if "position_ids" not in k}


def openclip_to_ldm(model, prefix: str, extra_layer: bool) -> dict:
    sd = _text_sd(model)
    out = {prefix + "token_embedding.weight": sd["embeddings.token_embedding.weight"],
           prefix + "positional_embedding": sd["embeddings.position_embedding.weight"],
           prefix + "ln_final.weight": sd["final_layer_norm.weight"],
           prefix + "ln_final.bias": sd["final_layer_norm.bias"],
           prefix + "logit_scale": torch.tensor(4.6052)}
    hidden = sd["embeddings.token_embedding.weight"].shape[1]
    full = model.state_dict()
    out[prefix + "text_projection"] = (full["text_projection.weight"].T.contiguous()
                                       if "text_projection.weight" in full else torch.eye(hidden))
    layers = model.config.num_hidden_layers
    g = torch.Generator().manual_seed(7)
    for k in range(layers + (1 if extra_layer else 0)):
        b = f"{prefix}transformer.resblocks.{k}."
        if k < layers:
            a = f"encoder.layers.{k}."
            get = lambda n: sd[a + n]  # noqa: E731
        else:  # SD 2.x files carry OpenCLIP's last layer, which SD 2.x does not use
            ref = f"encoder.layers.{layers - 1}."
            get = lambda n: torch.randn(sd[ref + n].shape, generator=g) * 0.02  # noqa: E731
        out[b + "ln_1.weight"], out[b + "ln_1.bias"] = get("layer_norm1.weight"), get("layer_norm1.bias")
        out[b + "ln_2.weight"], out[b + "ln_2.bias"] = get("layer_norm2.weight"), get("layer_norm2.bias")
        out[b + "attn.in_proj_weight"] = torch.cat([get(f"self_attn.{x}_proj.weight") for x in "qkv"])
        out[b + "attn.in_proj_bias"] = torch.cat([get(f"self_attn.{x}_proj.bias") for x in "qkv"])
        out[b + "attn.out_proj.weight"] = get("self_attn.out_proj.weight")
        out[b + "attn.out_proj.bias"] = get("self_attn.out_proj.bias")
        out[b + "mlp.c_fc.weight"], out[b + "mlp.c_fc.bias"] = get("mlp.fc1.weight"), get("mlp.fc1.bias")
        out[b + "mlp.c_proj.weight"], out[b + "mlp.c_proj.bias"] = get("mlp.fc2.weight"), get("mlp.fc2.bias")
    return out


def to_single_file(pipe, family: str) -> dict:
    """Every weight of `pipe` under its original single-file name."""
    sd = {**unet_to_ldm(pipe.unet.state_dict(), pipe.unet.config),
          **vae_to_ldm(pipe.vae.state_dict(), pipe.vae.config)}
    if family == "sd1":
        sd.update(clip_to_ldm(pipe.text_encoder, "cond_stage_model.transformer."))
    elif family == "sd2":
        sd.update(openclip_to_ldm(pipe.text_encoder, "cond_stage_model.model.", extra_layer=True))
    else:
        sd.update(clip_to_ldm(pipe.text_encoder, "conditioner.embedders.0.transformer."))
        sd.update(openclip_to_ldm(pipe.text_encoder_2, "conditioner.embedders.1.model.", extra_layer=False))
    return sd


def write_single_file(pipe, family: str, path: Path, dtype=torch.float16) -> Path:
    from safetensors.torch import save_file
    sd = {k: v.detach().to(dtype).contiguous() for k, v in to_single_file(pipe, family).items()}
    save_file(sd, str(path))
    return path


# ---------------------------------------------------------------------------------------------
# Add-on files as artists get them

def write_kohya_lora(pipe, path: Path, seed: int = 0, rank: int = 4, scale: float = 0.5) -> Path:
    """A LoRA in kohya-ss/A1111 naming (lora_unet_*, lora_te_*; lora_down/lora_up/alpha) on the
    UNet's attention projections and every text-encoder linear layer, random weights."""
    from safetensors.torch import save_file
    g = torch.Generator().manual_seed(seed)
    sd = {}

    def add(key: str, module) -> None:
        sd[key + ".lora_down.weight"] = torch.randn(rank, module.in_features, generator=g) * scale
        sd[key + ".lora_up.weight"] = torch.randn(module.out_features, rank, generator=g) * scale
        sd[key + ".alpha"] = torch.tensor(float(rank))

    for name, module in pipe.unet.named_modules():
        if name.endswith(("to_q", "to_k", "to_v", "to_out.0")) and "attentions" in name:
            add("lora_unet_" + name.replace(".", "_"), module)
    for name, module in pipe.text_encoder.named_modules():
        if name.endswith(("q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2")):
            name = name if name.startswith("text_model.") else "text_model." + name
            add("lora_te_" + name.replace(".", "_"), module)
    save_file(sd, str(path))
    return path


def write_a1111_embedding(path: Path, width: int, vectors: int = 2, seed: int = 0, sdxl_widths=None) -> Path:
    """A textual-inversion embedding: A1111's .pt layout (string_to_param), or for SDXL the
    safetensors layout with clip_l and clip_g."""
    g = torch.Generator().manual_seed(seed)
    if sdxl_widths:
        from safetensors.torch import save_file
        save_file({"clip_l": torch.randn(vectors, sdxl_widths[0], generator=g),
                   "clip_g": torch.randn(vectors, sdxl_widths[1], generator=g)}, str(path))
        return path
    torch.save({"string_to_token": {"*": 265}, "name": path.stem,
                "string_to_param": {"*": torch.randn(vectors, width, generator=g)}, "step": 100}, path)
    return path


def write_vae_file(vae, path: Path, seed: int = 0) -> Path:
    """A separate VAE file as A1111 users have them (original names, no first_stage_model.), with
    its decoder changed so it paints visibly differently from `vae`."""
    from safetensors.torch import save_file
    sd = {k: v.clone() for k, v in vae.state_dict().items()}
    g = torch.Generator().manual_seed(seed)
    sd["decoder.conv_out.weight"] += torch.randn(sd["decoder.conv_out.weight"].shape, generator=g) * 0.2
    sd["decoder.conv_out.bias"] += 0.3
    out = {k[len("first_stage_model."):]: v.contiguous() for k, v in vae_to_ldm(sd, vae.config).items()}
    save_file(out, str(path))
    return path


def write_ip_adapter(unet, folder: Path, seed: int = 0, tokens: int = 4) -> Path:
    """A tiny IP-Adapter in the layout of the real ones: folder/ip-adapter_tiny.safetensors
    (image_proj.* + ip_adapter.N.to_k_ip/to_v_ip for every cross-attention layer, N = 1, 3, 5...)
    and folder/image_encoder (a CLIPVisionModelWithProjection)."""
    from safetensors.torch import save_file
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    g = torch.Generator().manual_seed(seed)
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    encoder = CLIPVisionModelWithProjection(CLIPVisionConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
        image_size=32, patch_size=8, projection_dim=32))
    encoder.save_pretrained(folder / "image_encoder")
    cross = unet.config.cross_attention_dim
    sd = {"image_proj.proj.weight": torch.randn(cross * tokens, 32, generator=g) * 0.5,
          "image_proj.proj.bias": torch.zeros(cross * tokens),
          "image_proj.norm.weight": torch.ones(cross), "image_proj.norm.bias": torch.zeros(cross)}
    key = 1
    for name in unet.attn_processors:
        if name.endswith("attn2.processor"):
            inner = unet.get_submodule(name[: -len(".processor")]).to_k.out_features
            sd[f"ip_adapter.{key}.to_k_ip.weight"] = torch.randn(inner, cross, generator=g) * 0.5
            sd[f"ip_adapter.{key}.to_v_ip.weight"] = torch.randn(inner, cross, generator=g) * 0.5
            key += 2
    path = folder / "ip-adapter_tiny.safetensors"
    save_file(sd, str(path))
    return path


def controlnet_to_ldm(controlnet, prefix: str = "control_model.") -> dict:
    """A diffusers ControlNetModel's tensors in ControlNet's own layout (lllyasviel's cldm: the
    UNet encoder's input_blocks and middle_block, zero_convs, input_hint_block, middle_block_out),
    under `prefix` ("control_model." as A1111 users' files have it, or "")."""
    sd = {k: v.detach().clone() for k, v in controlnet.state_dict().items()}
    encoder = {k: v for k, v in sd.items() if not k.startswith(("controlnet_", "up_blocks"))}
    out = {}
    _encoder_to_ldm(encoder, out, controlnet.config, "")
    zero = {k: v for k, v in sd.items() if k.startswith("controlnet_")}
    for i in range(len(controlnet.controlnet_down_blocks)):
        _move(zero, out, f"controlnet_down_blocks.{i}", f"zero_convs.{i}.0")
    _move(zero, out, "controlnet_mid_block", "middle_block_out.0")
    _move(zero, out, "controlnet_cond_embedding.conv_in", "input_hint_block.0")
    blocks = len(controlnet.controlnet_cond_embedding.blocks)
    for k in range(blocks):
        _move(zero, out, f"controlnet_cond_embedding.blocks.{k}", f"input_hint_block.{2 * (k + 1)}")
    _move(zero, out, "controlnet_cond_embedding.conv_out", f"input_hint_block.{2 * (blocks + 1)}")
    if len(out) != len(sd):
        raise AssertionError(f"ControlNet writer left {len(sd) - len(out)} tensors unmapped")
    return {prefix + k: v for k, v in out.items()}


def acting_controlnet(unet, hint: tuple[int, ...], seed: int):
    """A ControlNet made from `unet` (ControlNetModel.from_unet) whose zero convolutions are not
    zero, so that it acts, and acts after its picture (the picture's embedding as strong as the
    latents'). `hint`: its picture embedding's channels; len(hint) - 1 halvings = the VAE's."""
    from diffusers import ControlNetModel

    net = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=hint)
    g = torch.Generator().manual_seed(seed)
    for conv, scale in [*((c, 0.05) for c in net.controlnet_down_blocks), (net.controlnet_mid_block, 0.05),
                        (net.controlnet_cond_embedding.conv_out, 1.0)]:
        conv.weight.data = torch.randn(conv.weight.shape, generator=g) * scale
    return net.eval()


def write_controlnet_for(model: Path, models_dir: Path, name: str = "shapes") -> Path:
    """An acting ControlNet for the studio's tiny model (a diffusers folder; 4 pixels a latent) in
    `models_dir`/controlnet/`name`."""
    from diffusers import UNet2DConditionModel

    unet = UNet2DConditionModel.from_pretrained(model / "unet")
    folder = models_dir / "controlnet" / name
    acting_controlnet(unet, (16, 32, 32), seed=6).save_pretrained(folder)
    return folder


def acting_union(unet, hint: tuple[int, ...], seed: int, control_types: int = 8):
    """A ControlNet-Union (xinsir's architecture: one model, a control type per unit) sized for
    `unet`, random weights, its zero convolutions not zero."""
    from diffusers import ControlNetUnionModel

    config = {k: v for k, v in ControlNetUnionModel.from_unet(unet, conditioning_embedding_out_channels=hint,
                                                              load_weights_from_unet=False).config.items()
              if k != "_use_default_values"}       # else from_config puts the defaults back
    width = unet.config.block_out_channels[0]
    torch.manual_seed(seed)
    net = ControlNetUnionModel.from_config({**config, "num_trans_channel": width, "num_proj_channel": width,
                                            "num_trans_head": 2, "num_control_type": control_types})
    g = torch.Generator().manual_seed(seed)
    for conv, scale in [*((c, 0.05) for c in net.controlnet_down_blocks), (net.controlnet_mid_block, 0.05),
                        (net.controlnet_cond_embedding.conv_out, 1.0)]:
        conv.weight.data = torch.randn(conv.weight.shape, generator=g) * scale
    return net.eval()
