"""What every benchmark prints and records: the machine, the code, and an appended docs section."""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "benchmarks.md"


def machine_line() -> str:
    import torch

    return (
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads"
    )


def code_line() -> str:
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    dirty = subprocess.run(["git", "status", "--porcelain", "src"], cwd=ROOT, capture_output=True, text=True)
    return f"Code: commit {commit.stdout.strip() or '?'}{' (with uncommitted changes in src/)' if dirty.stdout else ''}"


def append_doc(text: str) -> None:
    """Print ``text`` and append it to docs/benchmarks.md."""
    print(text)
    if not DOC.exists():
        DOC.write_text("# Benchmarks\n\nEach section was appended by the command it names.\n")
    with DOC.open("a") as f:
        f.write(text)


def publish(text: str, no_doc: bool) -> None:
    """Print ``text``, and append it to docs/benchmarks.md unless ``no_doc``."""
    if no_doc:
        print(text)
    else:
        append_doc(text)
