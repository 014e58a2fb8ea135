"""CLIP's real BPE tokenizer files (vocab.json + merges.txt) for the embedded model.

The vocabulary is the one every SD 1.x model uses (49,408 tokens), built from the BPE merges
file that open_clip_torch ships (`open_clip/bpe_simple_vocab_16e6.txt.gz`). With it the embedded
model tokenizes any text as real SD does: byte-level, so emoji and any unicode encode, and long
prompts are truncated like CLIP's.

    python -m embedded.tokenizer BPE_GZ OUT_DIR
"""

from __future__ import annotations

import gzip
import json
import sys
from pathlib import Path

from studio.models.tiny import byte_vocabulary

N_MERGES = 49152 - 256 - 2  # CLIP uses the first 48,894 merges of the file


def write_clip_tokenizer_files(bpe_gz: str | Path, out_dir: str | Path) -> Path:
    lines = gzip.open(bpe_gz, "rt", encoding="utf-8").read().split("\n")
    merges = [tuple(line.split()) for line in lines[1:N_MERGES + 1]]
    byte_tokens = [t for t in byte_vocabulary() if not t.startswith("<|")]  # 512 tokens
    tokens = byte_tokens + ["".join(m) for m in merges] + ["<|startoftext|>", "<|endoftext|>"]
    vocab = {t: i for i, t in enumerate(tokens)}
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (out / "merges.txt").write_text("#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n",
                                    encoding="utf-8")
    return out


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    print(write_clip_tokenizer_files(sys.argv[1], sys.argv[2]))
