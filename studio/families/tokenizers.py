"""The tokenizers the newer families need, shipped with the studio (no hub at run time).

Qwen3's (Z-Image's text encoder) is assets/qwen3-tokenizer: InvokeAI's vendored copy of Qwen3-4B's
tokenizer.json (gzipped) and its config with the chat template.

CLIP's BPE vocabulary is in assets/clip-tokenizer (SD 1.x and 2.x, SDXL, SD 3.5's CLIP-L and
CLIP-G, Flux's CLIP-L). T5 v1.1's SentencePiece vocabulary (Flux and SD 3.5's T5-XXL; Apache-2.0,
google/t5-v1_1-xxl, as InvokeAI vendors it) is assets/t5-tokenizer/tokenizer.json.gz, a fast
tokenizer file: "Hello world" -> [8774, 296, 1] as with the original.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

from studio.config import ROOT

CLIP_FILES = ROOT / "assets" / "clip-tokenizer"
T5_FILE = ROOT / "assets" / "t5-tokenizer" / "tokenizer.json.gz"
# Qwen3's byte-level BPE and chat template (Apache-2.0, Qwen/Qwen3-4B, as InvokeAI vendors it): Z-Image
QWEN3_FILES = ROOT / "assets" / "qwen3-tokenizer"
T5_VOCAB = 32128           # T5 v1.1's embedding rows: 32,000 pieces, 100 sentinels, 28 unused
T5_MAX_LENGTH = 512        # Flux dev and SD 3.5 read 512 T5 tokens; schnell 256
T5_SPECIAL = {"eos_token": "</s>", "pad_token": "<pad>", "unk_token": "<unk>"}


def t5_tokenizer(max_length: int = T5_MAX_LENGTH):
    """T5 v1.1's fast tokenizer from the shipped file."""
    from tokenizers import Tokenizer
    from transformers import T5TokenizerFast

    raw = Tokenizer.from_str(gzip.decompress(T5_FILE.read_bytes()).decode("utf-8"))
    return T5TokenizerFast(tokenizer_object=raw, model_max_length=max_length, extra_ids=0, **T5_SPECIAL)


def qwen3_tokenizer():
    """Qwen3's tokenizer with its chat template (Z-Image wraps each prompt in it), from the
    shipped files: "Hello world" -> [9707, 1879]."""
    import shutil
    import tempfile

    from transformers import AutoTokenizer

    with tempfile.TemporaryDirectory(prefix="studio-qwen3-") as tmp:
        for name in ("tokenizer_config.json", "special_tokens_map.json"):
            shutil.copy(QWEN3_FILES / name, Path(tmp) / name)
        (Path(tmp) / "tokenizer.json").write_bytes(gzip.decompress((QWEN3_FILES / "tokenizer.json.gz").read_bytes()))
        return AutoTokenizer.from_pretrained(tmp)


def clip_tokenizer(pad: str = "<|endoftext|>"):
    """CLIP's tokenizer (77 tokens); `pad` "!" for OpenCLIP's encoders (SD 2.x, CLIP-G)."""
    from transformers import CLIPTokenizer

    return CLIPTokenizer(str(CLIP_FILES / "vocab.json"), str(CLIP_FILES / "merges.txt"), model_max_length=77,
                         pad_token=pad)


def write_t5_tokenizer(folder: Path, max_length: int = T5_MAX_LENGTH) -> Path:
    """The shipped T5 tokenizer saved as a diffusers folder's tokenizer subfolder."""
    folder.mkdir(parents=True, exist_ok=True)
    t5_tokenizer(max_length).save_pretrained(str(folder))
    config = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8"))
    config["model_max_length"] = max_length
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=1), encoding="utf-8")
    return folder
