"""Add-ons applied to the loaded model for one request: LoRAs with weights, textual-inversion
embeddings used by name in a prompt, and a separate VAE.

They change the shared modules in place (PEFT adapters, new token rows, the VAE module), so they
are applied under the model lock, right before the denoising, and reset to what the request asks
each time: a request without LoRAs runs with every adapter disabled, which gives exactly the base
model's output (tested), and a request without a VAE gets the model's own back.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

from studio.errors import InvalidRequest, ModelLoadError
from studio.models.hashes import file_hash, lora_hash

log = logging.getLogger(__name__)


@dataclass
class AddonState:
    """What is applied to the loaded model right now (reset when the model is unloaded)."""
    adapters: dict[str, str] = field(default_factory=dict)     # lora name -> adapter id
    adapter_files: dict[str, str] = field(default_factory=dict)  # lora name -> sha256 when loaded
    embeddings: dict[str, str] = field(default_factory=dict)   # token -> embedding file hash
    rows: dict[tuple[str, int], object] = field(default_factory=dict)  # (text encoder, token id) -> its own row
    bundles: dict[str, tuple] = field(default_factory=dict)    # LoRA file hash -> its words' vectors, has layers
    vae: str | None = None                                     # name of the swapped-in VAE
    own_vae: object = None                                     # the model's own VAE module


def _adapter_id(name: str) -> str:
    return "lora_" + re.sub(r"\W", "_", name)


def apply_loras(pipe, state: AddonState, loras: list[tuple[str, Path, float]], family: str,
                arch: str = "sd") -> list[dict]:
    """Make exactly `loras` active with their weights; returns their metadata records. `family`
    names the loaded model, `arch` is its family's key (studio/families)."""
    records = [{"name": name, "weight": weight, "sha256": lora_hash(path)} for name, path, weight in loras]
    apply_words(pipe, state, loras)
    loras = [lora for lora in loras if _bundles(lora[1], state)[1]]       # those with layers (not words alone)
    if not loras:
        if state.adapters:
            pipe.disable_lora()
        return records
    for name, path, weight in loras:
        digest = file_hash(path)          # the whole file: any change to it reloads the adapter
        if name in state.adapters:
            if state.adapter_files.get(name) == digest:
                continue
            # the file changed on disk (trained again under the same name): load the new one
            _drop_adapter(pipe, state.adapters.pop(name))
        adapter = _adapter_id(name)
        weights = _lora_weights(pipe, name, path, family, arch)
        try:
            pipe.load_lora_weights(weights, adapter_name=adapter)
        except Exception as exc:  # noqa: BLE001 - a LoRA that does not fit is the user's message
            _drop_adapter(pipe, adapter)
            raise InvalidRequest(f"LoRA {name!r} does not fit this {family} model "
                                 f"({type(exc).__name__}: {str(exc)[:200]}).") from None
        found = {a for names in pipe.get_list_adapters().values() for a in names}
        if adapter not in found:
            raise InvalidRequest(f"LoRA {name!r} has no layers that match this {family} model "
                                 "(made for another model family?).")
        state.adapters[name], state.adapter_files[name] = adapter, digest
    pipe.enable_lora()
    pipe.set_adapters([state.adapters[n] for n, _, _ in loras], [w for _, _, w in loras])
    return records


def _lora_weights(pipe, name: str, path: Path, family: str, arch: str):
    """What `load_lora_weights` takes for a LoRA file: its path, or for Flux and SD 3.5 its
    tensors in diffusers' names (studio/families/loras.py). One made for another family is refused."""
    from studio.families.loras import FAMILY_LABELS, MODULES, lora_family, lora_to_diffusers

    if path.suffix.lower() != ".safetensors":
        return str(path)
    from safetensors import safe_open
    with safe_open(str(path), framework="pt") as f:
        keys = list(f.keys())
    made_for = lora_family(keys)
    if made_for and made_for != arch:
        raise InvalidRequest(f"LoRA {name!r} was made for {FAMILY_LABELS[made_for]} models; the loaded model is "
                             f"{family}.")
    from safetensors.torch import load_file
    if arch not in MODULES:
        if any(k.startswith("bundle_emb.") for k in keys):     # its words' vectors: apply_words
            return {k: v for k, v in load_file(str(path)).items() if not k.startswith("bundle_emb.")}
        return str(path)
    encoders = {n: getattr(pipe, n, None) for n in ("text_encoder", "text_encoder_2")}
    try:
        return lora_to_diffusers(load_file(str(path)), arch, dict(pipe.transformer.config), encoders)
    except ValueError as exc:
        raise InvalidRequest(f"LoRA {name!r} does not fit this {family} model: {exc}.") from None


# ---------------------------------------------------------------------------------------------
# A LoRA's own words (pivotal tuning: studio/finetune/words.py)

BUNDLE_KEY = re.compile(r"^bundle_emb\.([^.]+)\.(string_to_param\.\*|clip_l|clip_g)$")
ENCODERS = {"clip": ("text_encoder", "tokenizer"), "clip_l": ("text_encoder", "tokenizer"),
            "clip_g": ("text_encoder_2", "tokenizer_2")}


def apply_words(pipe, state: AddonState, loras: list[tuple[str, Path, float]]) -> None:
    """The word vectors bundled in the request's LoRAs (A1111's `bundle_emb.<word>.*`) into the
    words' own token rows, moved from the model's row by the LoRA's weight; rows no request LoRA
    sets any more are put back. A word written with another number of tokens than it has vectors
    (made by another trainer for a made-up token) becomes a textual-inversion token, as in A1111."""
    import torch

    wanted: dict[tuple[str, int], torch.Tensor] = {}
    for name, path, weight in loras:
        for word, parts in _bundles(path, state)[0].items():
            for part, vectors in parts.items():
                encoder, tokenizer = (getattr(pipe, n, None) for n in ENCODERS[part])
                if encoder is None:
                    continue
                ids = tokenizer(word, add_special_tokens=False).input_ids
                if len(ids) != len(vectors):
                    _as_token(pipe, state, word, part, vectors, name)
                    continue
                table = encoder.get_input_embeddings().weight
                for i, vector in zip(ids, vectors):
                    key = (ENCODERS[part][0], int(i))
                    own = state.rows.get(key, table[i]).detach().float().cpu()
                    wanted[key] = wanted.get(key, own) + weight * (vector.float() - own)
    with torch.no_grad():
        for key in [k for k in state.rows if k not in wanted]:
            _row(pipe, key).copy_(state.rows.pop(key))
        for key, vector in wanted.items():
            row = _row(pipe, key)
            state.rows.setdefault(key, row.detach().clone())
            row.copy_(vector.to(row.dtype))


def _row(pipe, key: tuple[str, int]):
    return getattr(pipe, key[0]).get_input_embeddings().weight.data[key[1]]


def _bundles(path: Path, state: AddonState) -> tuple[dict, bool]:
    """A LoRA file's bundled words (read_bundles) and whether it has layers besides them."""
    digest = file_hash(path)
    if digest not in state.bundles:
        tensors, layers = {}, True
        if path.suffix.lower() == ".safetensors":
            from safetensors import safe_open
            with safe_open(str(path), framework="pt") as f:
                tensors = {k: f.get_tensor(k) for k in f.keys() if k.startswith("bundle_emb.")}
                layers = len(tensors) < len(list(f.keys()))
        state.bundles[digest] = (read_bundles(tensors), layers)
    return state.bundles[digest]


def read_bundles(tensors: dict) -> dict[str, dict[str, object]]:
    """{word: {"clip": vectors} or {"clip_l": ..., "clip_g": ...}} from a LoRA file's tensors."""
    out: dict[str, dict[str, object]] = {}
    for key, value in tensors.items():
        match = BUNDLE_KEY.match(key)
        if match:
            word, part = match.groups()
            out.setdefault(word, {})["clip" if part.startswith("string") else part] = value.reshape(-1, value.shape[-1])
    return out


def _as_token(pipe, state: AddonState, word: str, part: str, vectors, lora: str) -> None:
    key = f"{word}:{part}"
    if key in state.embeddings:
        return
    encoder, tokenizer = ENCODERS[part]
    try:
        pipe.load_textual_inversion({word: vectors}, token=word, text_encoder=getattr(pipe, encoder),
                                    tokenizer=getattr(pipe, tokenizer))
    except Exception as exc:  # noqa: BLE001
        raise InvalidRequest(f"LoRA {lora!r}: its word {word!r} could not be loaded "
                             f"({type(exc).__name__}: {str(exc)[:200]}).") from None
    state.embeddings[key] = lora


def _drop_adapter(pipe, adapter: str) -> None:
    try:
        pipe.delete_adapters(adapter)
    except Exception:  # noqa: BLE001 - nothing was loaded
        pass


# ---------------------------------------------------------------------------------------------
# Textual inversion

def used_embeddings(texts: list[str], available: dict[str, Path]) -> dict[str, Path]:
    """Embeddings named (by file stem, as whole words) in any of the prompts."""
    used = {}
    for token, path in available.items():
        pattern = r"(?<![\w-])" + re.escape(token) + r"(?![\w-])"
        if any(re.search(pattern, t) for t in texts):
            used[token] = path
    return used


def _read_embedding(path: Path) -> dict:
    if path.suffix.lower() == ".safetensors":
        from safetensors.torch import load_file
        return load_file(str(path))
    import torch
    return torch.load(str(path), map_location="cpu", weights_only=True)


def apply_embeddings(pipe, state: AddonState, used: dict[str, Path], family: str) -> list[dict]:
    """Load the embeddings the prompts use (once per model); returns their metadata records."""
    records = []
    for token, path in used.items():
        digest = file_hash(path)
        if state.embeddings.get(token) != digest:
            if token in state.embeddings:
                raise InvalidRequest(f"Embedding {token!r} changed on disk since it was loaded; "
                                     "reload the model to use the new one.")
            _load_embedding(pipe, token, path, family)
            state.embeddings[token] = digest
        records.append({"name": token, "sha256": digest})
    return records


def _load_embedding(pipe, token: str, path: Path, family: str) -> None:
    data = _read_embedding(path)
    try:
        if family.startswith("SDXL"):
            if "clip_l" not in data or "clip_g" not in data:
                raise InvalidRequest(f"Embedding {token!r} was made for SD 1.x/2.x (it has no clip_l/"
                                     "clip_g vectors); it cannot be used with an SDXL model.")
            pipe.load_textual_inversion(data["clip_l"], token=token, text_encoder=pipe.text_encoder,
                                        tokenizer=pipe.tokenizer)
            pipe.load_textual_inversion(data["clip_g"], token=token, text_encoder=pipe.text_encoder_2,
                                        tokenizer=pipe.tokenizer_2)
        else:
            if "clip_l" in data or "clip_g" in data:
                raise InvalidRequest(f"Embedding {token!r} was made for SDXL; the loaded model is {family}.")
            vectors = _vectors(data)
            width = pipe.text_encoder.get_input_embeddings().weight.shape[1]
            if vectors.shape[-1] != width:
                raise InvalidRequest(f"Embedding {token!r} has vectors of width {vectors.shape[-1]}, "
                                     f"this {family} text encoder uses {width} (made for another family).")
            pipe.load_textual_inversion({token: vectors}, token=token)
    except InvalidRequest:
        raise
    except Exception as exc:  # noqa: BLE001
        raise InvalidRequest(f"Embedding {token!r} could not be loaded: {type(exc).__name__}: {exc}") from None


def _vectors(data: dict):
    """The vectors of an SD 1.x/2.x embedding file (A1111 .pt/.safetensors or diffusers format)."""
    if "string_to_param" in data:                 # A1111 / textual_inversion .pt
        return next(iter(data["string_to_param"].values()))
    if "emb_params" in data:                      # some safetensors exports
        return data["emb_params"]
    if len(data) == 1:                            # diffusers: {token: tensor}
        return next(iter(data.values()))
    raise InvalidRequest(f"unrecognised embedding layout (keys: {', '.join(list(data)[:5])})")


# ---------------------------------------------------------------------------------------------
# A separate VAE

def load_vae_file(path: Path, dtype, family: str):
    """An AutoencoderKL from a single VAE file (original or diffusers key names), offline."""
    import tempfile

    from diffusers import AutoencoderKL

    from studio.models.checkpoints import _vae_config, read_shapes
    from studio.models.layouts import VAE

    shapes = read_shapes(path)
    original = {(k if k.startswith(VAE) else VAE + k): v for k, v in shapes.items()}
    if VAE + "encoder.conv_in.weight" not in original:
        if "encoder.conv_in.weight" in shapes or any(k.startswith("encoder.down_blocks.") for k in shapes):
            raise InvalidRequest(f"{path.name} is a VAE in diffusers' own layout; put its folder in "
                                 "models/vae instead of the single file.")
        raise InvalidRequest(f"{path.name} is not a VAE (no encoder/decoder tensors).")
    cfg = _vae_config(original, "sdxl" if family.startswith("SDXL") else "sd1", 512)
    import json
    with tempfile.TemporaryDirectory(prefix="studio-vae-") as tmp:
        (Path(tmp) / "config.json").write_text(json.dumps(cfg), encoding="utf-8")
        try:
            return AutoencoderKL.from_single_file(str(path), config=tmp, local_files_only=True,
                                                  torch_dtype=dtype)
        except Exception as exc:  # noqa: BLE001
            raise ModelLoadError(f"Could not load the VAE {path.name}: {type(exc).__name__}: {exc}") from exc


# ---------------------------------------------------------------------------------------------
# IP-Adapter (reference images through an image encoder), when its weights are here

IP_ADAPTER_HELP = ("IP-Adapter needs its weights in models/ip-adapter/: the adapter file for this "
                   "model family (e.g. ip-adapter_sd15.safetensors or ip-adapter_sdxl.safetensors) "
                   "and the CLIP image encoder as a folder models/ip-adapter/image_encoder/ "
                   "(config.json + model.safetensors). Reference-only attention needs no weights.")


def find_ip_adapter(folder: Path, cross_attention_dim: int) -> Path:
    """The adapter file in `folder` whose key/value projections fit this UNet."""
    from safetensors import safe_open

    if not (folder / "image_encoder" / "config.json").is_file():
        raise InvalidRequest(f"No IP-Adapter image encoder in {folder / 'image_encoder'}. {IP_ADAPTER_HELP}")
    for path in sorted(folder.glob("*.safetensors")):
        try:
            with safe_open(str(path), framework="pt") as f:
                key = next((k for k in f.keys() if k.endswith("to_k_ip.weight")), None)
                if key is not None and f.get_slice(key).get_shape()[1] == cross_attention_dim:
                    return path
        except Exception:  # noqa: BLE001 - not an adapter file
            continue
    raise InvalidRequest(f"No IP-Adapter file for this model (text width {cross_attention_dim}) in "
                         f"{folder}. {IP_ADAPTER_HELP}")
