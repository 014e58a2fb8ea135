"""Prompt text -> the embeddings a pipeline receives, as AUTOMATIC1111 computes them.

- Each (text, weight) fragment from studio/prompts/syntax.py is tokenized on its own; tokens fill
  chunks of 75 (a BREAK closes a chunk; a chunk that would split a phrase goes back to the last
  comma within 20 tokens), and each chunk is encoded as [BOS] + 75 + [EOS] = 77 tokens. A
  tokenizer with a shorter `model_max_length` (the embedded model's 32) gets chunks of that
  length less two, the length its text encoder and UNet were trained on.
- Weights multiply the chunk's token embeddings, then the chunk is rescaled so its mean is what
  it was (A1111's "Original" emphasis), so emphasis changes the relative, not the overall, scale.
- Chunks are concatenated along the sequence (a 150-token prompt is 154 positions); the
  positive and negative sides are padded to the same number of chunks with empty ones.
- SDXL: both text encoders (penultimate layer, features concatenated) and the pooled embedding
  of the second encoder's first chunk; an empty negative prompt is zeros, as diffusers does for
  SDXL. Clip skip N uses the N-th layer from the end (SD 1.x/2.x: then the final layer norm).

`Conditioner.pipeline_kwargs()` gives prompt_embeds & co for the pipeline call, and
`Conditioner.step_callback()` switches them between denoising steps for prompt editing and
alternation (through `callback_on_step_end`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from studio.models.memory import encoder_device, to_execution_device
from studio.prompts.syntax import BREAK, parse_attention, schedule

CHUNK = 75
COMMA_BACKTRACK = 20


@dataclass
class Chunk:
    tokens: list[int]
    weights: list[float]


def chunk_size(tokenizer) -> int:
    """Tokens per chunk: 75, or fewer for a tokenizer whose `model_max_length` is shorter than
    CLIP's 77 (a tokenizer without one reports a huge number)."""
    length = getattr(tokenizer, "model_max_length", None)
    return length - 2 if isinstance(length, int) and 3 <= length < CHUNK + 2 else CHUNK


def chunk_tokens(fragments: list[tuple[list[int], float] | None], comma_id: int | None,
                 size: int = CHUNK) -> list[Chunk]:
    """Fill `size`-token chunks from (token ids, weight) fragments; None is a BREAK."""
    chunks: list[Chunk] = []
    cur = Chunk([], [])
    last_comma = -1

    def close() -> None:
        nonlocal cur, last_comma
        chunks.append(cur)
        cur, last_comma = Chunk([], []), -1

    for frag in fragments:
        if frag is None:
            close()
            continue
        ids, weight = frag
        for tok in ids:
            if tok == comma_id:
                last_comma = len(cur.tokens)
            elif len(cur.tokens) == size and last_comma != -1 and len(cur.tokens) - last_comma <= COMMA_BACKTRACK:
                # move the words after the last comma to the next chunk
                cut = last_comma + 1
                rest = Chunk(cur.tokens[cut:], cur.weights[cut:])
                cur = Chunk(cur.tokens[:cut], cur.weights[:cut])
                close()
                cur = rest
            if len(cur.tokens) == size:
                close()
            cur.tokens.append(tok)
            cur.weights.append(weight)
    if cur.tokens or not chunks:
        close()
    return chunks


def _comma_id(tokenizer) -> int | None:
    """CLIP's "," token (A1111 ends a chunk after the last comma), looked up alone: building the
    whole vocabulary (get_vocab) to test membership cost 15-30 ms a request, most of the studio's
    own time per 64 px image."""
    token = tokenizer.convert_tokens_to_ids(",</w>")
    return None if token is None or token == tokenizer.unk_token_id else token


def emphasise(z: torch.Tensor, weights: list[float]) -> torch.Tensor:
    """A1111's "Original" emphasis: each token's embedding times its weight, then the whole
    rescaled to the mean it had (the relative, not the overall, scale changes)."""
    w = torch.tensor(weights, dtype=z.dtype, device=z.device)
    if torch.all(w == 1):
        return z
    mean = z.mean()
    z = z * w[None, :, None]
    return z * (mean / z.mean())


class _Encoder:
    """One text encoder with its tokenizer, encoding A1111-style chunks."""

    def __init__(self, pipe, tokenizer, text_encoder, layer: str, clip_skip: int, cache=None,
                 state: tuple = ()):
        self.pipe, self.tok, self.te = pipe, tokenizer, text_encoder
        self.layer, self.clip_skip = layer, clip_skip
        self.cache, self.state = cache, state    # EmbeddingCache (studio/models/fast.py) and its key prefix
        self.comma = _comma_id(tokenizer)
        self.bos, self.eos = tokenizer.bos_token_id, tokenizer.eos_token_id
        self.size = chunk_size(tokenizer)
        self.pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.eos

    def tokenize(self, text: str) -> list[int]:
        if hasattr(self.pipe, "maybe_convert_prompt"):      # multi-vector embeddings
            text = self.pipe.maybe_convert_prompt(text, self.tok)
        return self.tok(text, add_special_tokens=False, truncation=False).input_ids

    def chunks(self, text: str) -> list[Chunk]:
        frags = [None if (t == BREAK and w == -1) else (self.tokenize(t), w) for t, w in parse_attention(text)]
        return chunk_tokens(frags, self.comma, self.size)

    def encode(self, chunks: list[Chunk]) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(1, (size + 2) * len(chunks), D) weighted embeddings, and the pooled embedding of chunk 1;
        from the cache when these chunks were encoded before with the same weights loaded."""
        if self.cache is None:
            return self._encode(chunks)
        key = (*self.state, self.layer, self.clip_skip, self.tok.name_or_path, len(self.tok),
               tuple((tuple(c.tokens), tuple(c.weights)) for c in chunks))
        return self.cache.get(key, lambda: self._encode(chunks))

    @torch.no_grad()
    def _encode(self, chunks: list[Chunk]) -> tuple[torch.Tensor, torch.Tensor | None]:
        device = encoder_device(self.pipe, self.te)
        outs, pooled = [], None
        for c in chunks:
            ids = [self.bos] + c.tokens + [self.eos] + [self.pad] * (self.size - len(c.tokens))
            weights = [1.0] + c.weights + [1.0] * (self.size + 1 - len(c.tokens))
            out = self.te(torch.tensor([ids], device=device), output_hidden_states=True)
            if self.layer == "sd":
                z = out.last_hidden_state if self.clip_skip <= 1 else \
                    self.te.final_layer_norm(out.hidden_states[-self.clip_skip]) \
                    if hasattr(self.te, "final_layer_norm") else \
                    self.te.text_model.final_layer_norm(out.hidden_states[-self.clip_skip])
            else:   # SDXL: penultimate layer (plus clip skip), no final norm
                z = out.hidden_states[-(self.clip_skip + 1)]
                if pooled is None and hasattr(out, "text_embeds"):
                    pooled = out.text_embeds
            outs.append(emphasise(z, weights))
        return to_execution_device(self.pipe, torch.cat(outs, dim=1)), to_execution_device(self.pipe, pooled)


@dataclass
class Embeds:
    prompt: torch.Tensor            # (1, L, D)
    negative: torch.Tensor
    pooled: torch.Tensor | None = None
    negative_pooled: torch.Tensor | None = None


class Conditioner:
    """Embeddings for one batch's prompts, per denoising step. `positive`/`negative` are one
    text for every image, or one per image (prompt variants). `toward` = (positive, negative,
    weight): every embedding mixed linearly toward that pair's by `weight` (prompt travel), both
    read with the same chunk count and the same step schedule."""

    def __init__(self, pipe, positive: str | list[str], negative: str | list[str], steps: int,
                 clip_skip: int = 1, cache=None, state: tuple = (), toward: tuple[str, str, float] | None = None):
        self.pipe = pipe
        self.sdxl = getattr(pipe, "text_encoder_2", None) is not None
        if self.sdxl:
            self.encoders = [e for e in (
                _Encoder(pipe, pipe.tokenizer, pipe.text_encoder, "xl", clip_skip, cache, (*state, 1))
                if pipe.text_encoder is not None else None,
                _Encoder(pipe, pipe.tokenizer_2, pipe.text_encoder_2, "xl", clip_skip, cache, (*state, 2)))
                if e is not None]
        else:
            self.encoders = [_Encoder(pipe, pipe.tokenizer, pipe.text_encoder, "sd", clip_skip, cache, state)]
        self.zero_negative = self.sdxl and bool(getattr(pipe.config, "force_zeros_for_empty_prompt", False))
        positives = [positive] if isinstance(positive, str) else list(positive)
        negatives = [negative] if isinstance(negative, str) else list(negative)
        if len(negatives) == 1:
            negatives = negatives * len(positives)
        if len(positives) == 1:
            positives = positives * len(negatives)
        if len(positives) != len(negatives):
            raise ValueError("one negative prompt per prompt, or one for all")
        self.per_image = len(positives)
        self.steps = steps
        scheds = [(schedule(p, steps), schedule(n, steps)) for p, n in zip(positives, negatives)]
        targets = [(schedule(toward[0], steps), schedule(toward[1], steps))] * len(scheds) if toward else []
        self.weight = toward[2] if toward else 0.0
        ends = sorted({e for ps, ns in scheds + targets for e, _ in ps + ns})
        # segments: (last step, [positive text per image], [negative text per image])
        self.segments = [(e, [_at(ps, e) for ps, _ in scheds], [_at(ns, e) for _, ns in scheds])
                         for e in ends]
        self.targets = [(e, [_at(ps, e) for ps, _ in targets], [_at(ns, e) for _, ns in targets])
                        for e in ends] if toward else []
        texts = {t for _, ps, ns in self.segments + self.targets for t in ps + ns}
        chunked = {t: [enc.chunks(t) for enc in self.encoders] for t in texts}
        n_chunks = max(len(c) for per in chunked.values() for c in per)
        self._cache = {t: self._encode(per, n_chunks) for t, per in chunked.items()}

    def _encode(self, per_encoder: list[list[Chunk]], n_chunks: int):
        zs, pooled = [], None
        for enc, chunks in zip(self.encoders, per_encoder):
            chunks = chunks + [Chunk([], []) for _ in range(n_chunks - len(chunks))]
            z, p = enc.encode(chunks)
            zs.append(z)
            pooled = p if p is not None else pooled
        return torch.cat(zs, dim=-1), pooled

    def chunk_report(self) -> list[dict]:
        """What the user sees when asking how a prompt was read: per segment, the weighted
        fragments and the token count of each chunk (first image's prompt)."""
        enc = self.encoders[0]
        rows = []
        for end, ps, ns in self.segments:
            rows.append({"until step": end, "prompt": ps[0], "negative": ns[0],
                         "fragments": [(t, round(w, 4)) for t, w in parse_attention(ps[0])],
                         "chunks": [len(c.tokens) for c in enc.chunks(ps[0])],
                         "negative chunks": [len(c.tokens) for c in enc.chunks(ns[0])]})
        return rows

    def _one(self, text: str, negative: bool):
        z, pooled = self._cache[text]
        if negative and self.zero_negative and not text.strip():
            return torch.zeros_like(z), (torch.zeros_like(pooled) if pooled is not None else None)
        return z, pooled

    def _pair(self, step: int) -> Embeds:
        here = self._embeds(self.segments[self._segment(step)])
        if not self.targets:
            return here
        there, w = self._embeds(self.targets[self._segment(step)]), self.weight
        mix = lambda a, b: None if a is None else a + w * (b - a)  # noqa: E731
        return Embeds(mix(here.prompt, there.prompt), mix(here.negative, there.negative),
                      mix(here.pooled, there.pooled), mix(here.negative_pooled, there.negative_pooled))

    def _embeds(self, segment) -> Embeds:
        _, ps, ns = segment
        pos = [self._one(t, False) for t in ps]
        neg = [self._one(t, True) for t in ns]
        cat = lambda items: torch.cat(items) if items[0] is not None else None  # noqa: E731
        return Embeds(cat([z for z, _ in pos]), cat([z for z, _ in neg]),
                      cat([p for _, p in pos]), cat([p for _, p in neg]))

    def pipeline_kwargs(self) -> dict:
        e = self._pair(1)
        kw = dict(prompt_embeds=e.prompt, negative_prompt_embeds=e.negative)
        if self.sdxl:
            kw.update(pooled_prompt_embeds=e.pooled, negative_pooled_prompt_embeds=e.negative_pooled)
        return kw

    @property
    def changes(self) -> bool:
        return len(self.segments) > 1

    def tensor_inputs(self) -> list[str]:
        return ["prompt_embeds", "add_text_embeds"] if self.sdxl else ["prompt_embeds"]

    def next_embeds(self, step_index: int) -> Embeds | None:
        """After step `step_index` (0-based): the next step's embeddings when they change there
        (A1111 numbers steps from 1), else None."""
        nxt = step_index + 2
        if nxt > self.steps or self._segment(nxt) == self._segment(nxt - 1):
            return None
        return self._pair(nxt)

    def update(self, pipe, step_index: int, kwargs: dict, images_per_prompt: int) -> dict:
        """In callback_on_step_end after step `step_index`: the embeddings of the next step."""
        e = self.next_embeds(step_index)
        return kwargs if e is None else put_embeds(pipe, kwargs, e, images_per_prompt, self.sdxl)

    def _segment(self, step: int) -> int:
        return next(i for i, s in enumerate(self.segments) if step <= s[0])


def put_embeds(pipe, kwargs: dict, e: Embeds, images_per_prompt: int, sdxl: bool) -> dict:
    """`kwargs` of callback_on_step_end with the embeddings `e` in place of the step's."""
    cfg = pipe.do_classifier_free_guidance

    def both(neg, pos):
        neg = neg.repeat_interleave(images_per_prompt, dim=0)
        pos = pos.repeat_interleave(images_per_prompt, dim=0)
        return torch.cat([neg, pos]) if cfg else pos

    kwargs["prompt_embeds"] = both(e.negative, e.prompt).to(kwargs["prompt_embeds"].dtype)
    if sdxl and "add_text_embeds" in kwargs:
        kwargs["add_text_embeds"] = both(e.negative_pooled, e.pooled).to(kwargs["add_text_embeds"].dtype)
    return kwargs


def _at(sched: list[tuple[int, str]], step: int) -> str:
    return next(t for end, t in sched if step <= end)


def denoising_steps(mode: str, steps: int, strength: float) -> int:
    """How many steps the pipeline will run (img2img/inpaint run `steps * strength`)."""
    if mode == "txt2img":
        return steps
    return max(1, min(steps, int(steps * strength)))
