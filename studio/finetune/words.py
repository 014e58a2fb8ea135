"""Pivotal tuning: the new words' own token vectors learned beside the LoRA (Kumari et al. 2023;
the "pivotal tuning" of cloneofsimo's lora and kohya's trainers). A word the model never saw
("azure" on the embedded model, a trigger like "sks") starts as a vector that means nothing;
teaching it only through UNet layers makes those layers move for every prompt. Learning the
word's vectors instead puts the new thing where it belongs — in the word — so the UNet layers can
stay gentle and prompts without the word are not touched at all by this part.

The vectors travel inside the LoRA file as AUTOMATIC1111's bundled embeddings
(`bundle_emb.<word>.string_to_param.*`), which A1111 and Forge load with the LoRA; the studio
puts them in the word's own token rows while the LoRA is in the prompt (studio/models/addons.py).
A made-up word written with several tokens learns those tokens' rows, which other words written
with the same pieces share while the LoRA is in use: a trigger of one token ("sks") is the clean case.
"""

from __future__ import annotations

import torch


def word_ids(tokenizer, word: str) -> list[int]:
    """The token ids `word` is written with (no start/end tokens)."""
    return list(tokenizer(word, add_special_tokens=False).input_ids)


class WordRows(torch.nn.Module):
    """A token embedding whose rows for `ids` are learned (`rows`), the others the model's own."""

    def __init__(self, base: torch.nn.Embedding, ids: list[int], start: torch.Tensor):
        super().__init__()
        self.base = base.requires_grad_(False)
        self.register_buffer("ids", torch.tensor(ids, dtype=torch.long), persistent=False)
        self.rows = torch.nn.Parameter(start.detach().clone().float())

    @property
    def weight(self) -> torch.Tensor:          # what CLIP's embeddings module reads for its dtype
        return self.base.weight

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        out = self.base(input_ids)
        match = input_ids.unsqueeze(-1) == self.ids
        which = match.long().argmax(-1)
        return torch.where(match.any(-1, keepdim=True), self.rows[which].to(out.dtype), out)


def learn_words(text_encoder, tokenizer, words: list[str], like: list[str] = ()) -> tuple[list, WordRows]:
    """Make `words`' token rows of `text_encoder` learnable; each starts as the mean of the first
    token of the words `like` (the class: "blue" for a colour) or, without them, as it is.
    Returns [(word, its ids)] and the module holding the rows."""
    base = text_encoder.get_input_embeddings()
    spans, ids = [], []
    for word in words:
        tokens = word_ids(tokenizer, word)
        spans.append((word, tokens))
        ids += [i for i in tokens if i not in ids]
    start = base.weight[ids].detach().float().clone()
    if like:
        start[:] = base.weight[[word_ids(tokenizer, w)[0] for w in like]].detach().float().mean(0)
    rows = WordRows(base, ids, start)
    text_encoder.set_input_embeddings(rows)
    return spans, rows


def bundle_tensors(learned: list[tuple[str, list, WordRows]]) -> dict:
    """The learned vectors as A1111's bundled embeddings, from [(part, spans, rows)] per text
    encoder: `bundle_emb.<word>.string_to_param.*` (SD 1.x/2.x) or `.clip_l` and `.clip_g` (SDXL),
    one vector per token of the word."""
    out = {}
    for part, spans, rows in learned:
        where = {int(i): k for k, i in enumerate(rows.ids)}
        for word, ids in spans:
            out[f"bundle_emb.{word}.{part}"] = torch.stack([rows.rows[where[i]] for i in ids]).detach().to(
                "cpu", torch.float32).contiguous()
    return out
