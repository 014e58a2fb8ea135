"""Prompts as embeddings for the T5 and Qwen3 families (Flux.1, SD 3.5; Z-Image), with the interface of
studio/prompts/conditioning.py's Conditioner so that the engine treats every family alike.

Each distinct text is encoded once by the pipeline's own `encode_prompt` (CLIP pooled vector and
T5 sequence; SD 3.5 also CLIP-L and CLIP-G sequences) and kept in the manager's embedding cache.
A1111's emphasis syntax is read as Forge reads it for T5: "a (red:1.3) circle" gives CLIP the
words "a red circle", and T5 the words fragment by fragment, each token's embedding weighted and
the sequence rescaled to its mean (prompts/conditioning.py's `emphasise`). Qwen3 (Z-Image) reads
the plain words, and the record says so.
"""

from __future__ import annotations

import torch

from studio.models.memory import encoder_device, to_execution_device
from studio.prompts.conditioning import emphasise
from studio.prompts.syntax import BREAK, parse_attention


def plain_text(text: str) -> str:
    """The words of a prompt without A1111's emphasis markup (nor BREAK: T5 reads no chunks)."""
    return "".join(" " if (part, w) == (BREAK, -1) else part for part, w in parse_attention(text)).strip()


def has_weights(text: str) -> bool:
    return any(abs(w - 1.0) > 1e-6 for part, w in parse_attention(text) if (part, w) != (BREAK, -1))


def weighted_ids(tokenizer, text: str, limit: int) -> tuple[list[int], list[float]]:
    """T5's token ids of `text` fragment by fragment with each token's weight, ended and padded
    to `limit` as the pipelines do (padding="max_length", truncation keeping the end token)."""
    ids, weights = [], []
    for part, weight in parse_attention(text):
        if (part, weight) != (BREAK, -1):
            got = tokenizer(part, add_special_tokens=False).input_ids
            ids, weights = ids + got, weights + [weight] * len(got)
    ids, weights = ids[:limit - 1] + [tokenizer.eos_token_id], weights[:limit - 1] + [1.0]
    pad = limit - len(ids)
    return ids + [tokenizer.pad_token_id] * pad, weights + [1.0] * pad


class T5Conditioner:
    """One batch's prompts and negatives as the pipeline's embeddings. `positive`/`negative`:
    one text for every image, or one per image (prompt variants)."""

    changes = False            # prompt editing is refused before this is built (Family.check)
    segments: list = []

    def __init__(self, pipe, positive: str | list[str], negative: str | list[str], steps: int,
                 t5_tokens: int, true_cfg: bool, cache=None, state: tuple = (),
                 toward: tuple[str, str, float] | None = None):
        self.pipe, self.t5_tokens, self.true_cfg = pipe, t5_tokens, true_cfg
        self.cache, self.state = cache, state
        # prompt travel: every embedding mixed linearly toward this pair's by its weight
        self.toward = toward
        positives = [positive] if isinstance(positive, str) else list(positive)
        negatives = [negative] if isinstance(negative, str) else list(negative)
        negatives = negatives * len(positives) if len(negatives) == 1 else negatives
        positives = positives * len(negatives) if len(positives) == 1 else positives
        self.per_image = len(positives)
        self.positives, self.negatives = positives, negatives        # with their emphasis: the cache keys
        self.steps = steps

    def _encode(self, text: str) -> tuple[torch.Tensor, torch.Tensor]:
        key = ("t5", type(self.pipe).__name__, self.t5_tokens, *self.state, text)
        compute = lambda: self._run_encoders(text)  # noqa: E731
        return self.cache.get(key, compute) if self.cache is not None else compute()

    def _run_encoders(self, text: str) -> tuple[torch.Tensor, torch.Tensor]:
        device, words = encoder_device(self.pipe, self.pipe.text_encoder), plain_text(text)
        with torch.no_grad():
            if hasattr(self.pipe, "text_encoder_3"):       # SD 3.5: CLIP-L, CLIP-G and T5
                embeds, _, pooled, _ = self.pipe.encode_prompt(
                    prompt=words, prompt_2=None, prompt_3=None, device=device, num_images_per_prompt=1,
                    do_classifier_free_guidance=False, max_sequence_length=self.t5_tokens)
            else:                                          # Flux: CLIP-L pooled, T5 sequence
                embeds, pooled, _ = self.pipe.encode_prompt(
                    prompt=words, prompt_2=None, device=device, num_images_per_prompt=1,
                    max_sequence_length=self.t5_tokens)
            embeds = to_execution_device(self.pipe, embeds.detach())
            if has_weights(text) and self._t5()[1] is not None:     # T5's part ends the sequence
                weighted = to_execution_device(self.pipe, self._weighted_t5(text)).to(embeds.dtype)
                embeds = torch.cat([embeds[:, :embeds.shape[1] - weighted.shape[1]], weighted], dim=1)
        return embeds, to_execution_device(self.pipe, pooled.detach())

    def _t5(self):
        """(tokenizer, encoder) of T5: Flux's second, SD 3.5's third (None when left out)."""
        if hasattr(self.pipe, "text_encoder_3"):
            return self.pipe.tokenizer_3, self.pipe.text_encoder_3
        return self.pipe.tokenizer_2, self.pipe.text_encoder_2

    def _weighted_t5(self, text: str) -> torch.Tensor:
        """T5's sequence for `text` with its emphasis: as the pipeline pads and ends it, each
        fragment tokenized alone so that its tokens carry its weight."""
        tokenizer, encoder = self._t5()
        ids, weights = weighted_ids(tokenizer, text, self.t5_tokens)
        z = encoder(torch.tensor([ids], device=encoder_device(self.pipe, encoder)), output_hidden_states=False)[0]
        return emphasise(z, weights)

    def _batch(self, texts: list[str], target: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        pairs = [self._encode(t) for t in texts]
        embeds, pooled = torch.cat([e for e, _ in pairs]), torch.cat([p for _, p in pairs])
        if target is None:
            return embeds, pooled
        (to_embeds, to_pooled), w = self._encode(target), self.toward[2]
        return embeds + w * (to_embeds - embeds), pooled + w * (to_pooled - pooled)

    def pipeline_kwargs(self) -> dict:
        to_positive, to_negative = self.toward[:2] if self.toward else (None, None)
        embeds, pooled = self._batch(self.positives, to_positive)
        kw = dict(prompt_embeds=embeds, pooled_prompt_embeds=pooled)
        if self.true_cfg:
            negative, negative_pooled = self._batch(self.negatives, to_negative)
            kw.update(negative_prompt_embeds=negative, negative_pooled_prompt_embeds=negative_pooled)
        return kw

    def tensor_inputs(self) -> list[str]:
        return []

    def update(self, pipe, step_index: int, kwargs: dict, images_per_prompt: int) -> dict:
        return kwargs

    def chunk_report(self) -> list[dict]:
        """How the prompt was read: the text each encoder got and its T5 token count."""
        tokenizer = getattr(self.pipe, "tokenizer_3", None) or self.pipe.tokenizer_2
        count = lambda t: len(tokenizer(t).input_ids)  # noqa: E731
        return [{"until step": self.steps, "prompt": self.positives[0], "negative": self.negatives[0],
                 "T5 tokens": count(plain_text(self.positives[0])), "T5 limit": self.t5_tokens,
                 "negative T5 tokens": count(plain_text(self.negatives[0]))}]


class QwenConditioner(T5Conditioner):
    """Z-Image's prompts: each read by Qwen3 inside its chat template, one embedding sequence a
    prompt of its own length (a list, as the pipeline takes them); no pooled vector."""

    def _run_encoders(self, text: str):
        with torch.no_grad():
            embeds, _ = self.pipe.encode_prompt(prompt=plain_text(text),
                                                device=encoder_device(self.pipe, self.pipe.text_encoder),
                                                do_classifier_free_guidance=False, max_sequence_length=self.t5_tokens)
        return to_execution_device(self.pipe, embeds[0].detach()), None

    def pipeline_kwargs(self) -> dict:
        kw = dict(prompt_embeds=[self._encode(t)[0] for t in self.positives])
        if self.true_cfg:
            kw["negative_prompt_embeds"] = [self._encode(t)[0] for t in self.negatives]
        return kw

    def chunk_report(self) -> list[dict]:
        count = lambda t: len(self.pipe.tokenizer(t).input_ids)  # noqa: E731
        return [{"until step": self.steps, "prompt": self.positives[0], "negative": self.negatives[0],
                 "Qwen3 tokens": count(plain_text(self.positives[0])), "token limit": self.t5_tokens,
                 "negative Qwen3 tokens": count(plain_text(self.negatives[0]))}]
