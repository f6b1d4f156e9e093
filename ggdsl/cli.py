"""The ``ggdsl`` command: a thin layer over the public API.

Exit status: 0 success; 2 a spec error or a bad command line; 1 any other ggdsl error
(data, build, training, evaluation, a run folder that cannot be read); 130 interrupted
(Ctrl-C, after the checkpoint is saved). With ``--json``, stdout holds one JSON document and
nothing else (NaN and infinities as ``null``); messages go to stderr.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path

from ggdsl.errors import GGDSLError, SpecError

BUNDLED = Path(__file__).parent / "specs"

EXAMPLES = {
    "validate": "ggdsl validate specs/gmgan_mnist.yaml",
    "explain": "ggdsl explain gmgan_digits --set model.k.classes=20",
    "graph": "ggdsl graph specs/ssgan_moving_mnist_t4.yaml -o ssgan.svg --plate",
    "compile-and-train": "ggdsl compile-and-train gmgan_digits --steps 2000 --out runs",
    "eval": "ggdsl eval runs/gmgan-digits-20260101-120000",
    "sample": "ggdsl sample runs/gmgan-digits-20260101-120000 -n 64 -o samples.png",
    "runs": "ggdsl runs runs --json",
    "compare": "ggdsl compare runs/gmgan-digits-a runs/gmgan-digits-b -o curves.png --metric d_loss --metric 'd_acc/*'",
}

EXIT_STATUS = (
    "exit status: 0 ok; 2 spec error or bad command line; 1 any other ggdsl error "
    "(data, build, training, evaluation, run folder); 130 interrupted"
)


def resolve_spec_path(text: str) -> str:
    """A path as given, or the name of a bundled spec (``gmgan_digits``)."""
    path = Path(text)
    if path.exists():
        return text
    for candidate in (BUNDLED / text, BUNDLED / f"{text}.yaml"):
        if candidate.exists():
            return str(candidate)
    return text


def bundled_specs() -> list[str]:
    return sorted(p.stem for p in BUNDLED.glob("*.yaml"))


def _load(args: argparse.Namespace):
    from ggdsl.spec import load_spec

    return load_spec(resolve_spec_path(args.spec), overrides=args.set or ())


def cmd_validate(args: argparse.Namespace) -> int:
    from ggdsl.explain import summary

    spec = _load(args)
    info = summary(spec)
    if args.json:
        print(json.dumps({"ok": True, "file": args.spec, **info}))
    else:
        print(f"{args.spec}: ok: {info['line']}")
    return 0


def cmd_explain(args: argparse.Namespace) -> int:
    from ggdsl.explain import explain, explain_dict

    spec = _load(args)
    if args.json:
        print(json.dumps(explain_dict(spec), indent=2))
    else:
        print(explain(spec))
    return 0


def cmd_graph(args: argparse.Namespace) -> int:
    from ggdsl.draw import draw

    spec = _load(args)
    path = draw(spec, args.output, plate=args.plate)
    print(f"wrote {path}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from ggdsl.train import compile_and_train

    overrides = list(args.set or ())
    if args.steps is not None:
        overrides.append(f"train.steps={args.steps}")
    spec_path = resolve_spec_path(args.spec) if args.spec else None
    if args.coordinator is not None:
        from ggdsl.parallel import initialize

        initialize(args.coordinator, args.num_processes, args.process_id)
    result = compile_and_train(
        spec_path,
        out=args.out,
        overrides=overrides,
        resume=args.resume,
        progress=not args.quiet,
        profile=args.profile or 0,
    )
    print(f"run folder: {result.run_dir}")
    return 0


def _finite(value):
    """``value`` with NaN and infinities (anywhere inside) as None, for strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(item) for item in value]
    return value


def json_text(value, indent: int | None = 2) -> str:
    """Strict JSON (no NaN): what every ``--json`` prints."""
    from ggdsl.runs import to_json

    return to_json(_finite(json.loads(to_json(value))), indent=indent, allow_nan=False)


def cmd_eval(args: argparse.Namespace) -> int:
    from ggdsl.evaluate.run_eval import evaluate_run

    results = evaluate_run(args.run_dir, names=args.only)
    print(json_text(results) if args.json else _format_eval(results))
    return 0


def _format_eval(results: dict) -> str:
    lines = []
    for key, value in results.items():
        if isinstance(value, float):
            lines.append(f"{key}: {value:.4f}")
        else:
            lines.append(f"{key}: {value}")
    return "\n".join(lines)


def cmd_sample(args: argparse.Namespace) -> int:
    from ggdsl.run import load_run

    run = load_run(args.run_dir)
    path = run.sample_figure(args.n, args.output, seed=args.seed)
    print(f"wrote {path}")
    return 0


def cmd_runs(args: argparse.Namespace) -> int:
    from ggdsl.runs_table import list_runs, runs_table

    summaries = list_runs(args.folder)
    if args.json:
        print(json_text([summary.to_dict() for summary in summaries]))
    elif not summaries:
        print(f"no run folders in {args.folder}")
    else:
        from rich.console import Console

        Console().print(runs_table(summaries))
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from ggdsl.compare import compare_runs

    figure = compare_runs(args.run_dirs, args.output, metrics=args.metric)
    print(f"wrote {args.output} ({len(figure.axes)} metrics)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ggdsl",
        description="Declare a Bayesian network; get a Graphical GAN trained in JAX.",
        epilog="Exit status: 0 ok, 2 spec or usage error, 1 other error (data, build, training, evaluation, "
        "a run folder that cannot be read), 130 interrupted (Ctrl-C; training saves a checkpoint first). "
        "With --json, stdout holds only the JSON. "
        f"Bundled specs: {', '.join(bundled_specs())}.",
    )
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")

    def verb(name: str, help_text: str) -> argparse.ArgumentParser:
        sub = verbs.add_parser(
            name,
            help=help_text,
            description=help_text,
            epilog=f"example: {EXAMPLES[name]}\n{EXIT_STATUS}",
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        return sub

    def spec_args(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("spec", help="a spec file, or the name of a bundled spec")
        sub.add_argument(
            "--set",
            action="append",
            metavar="KEY=VALUE",
            help="override a spec value, e.g. train.steps=500 (repeatable)",
        )

    sub = verb("validate", "check a spec; print a one-line summary, or every error with file:line")
    spec_args(sub)
    sub.add_argument("--json", action="store_true", help="machine-readable output")
    sub.set_defaults(run=cmd_validate)

    sub = verb("explain", "print p, q, the factors and discriminators, parameter counts, the objective")
    spec_args(sub)
    sub.add_argument("--json", action="store_true", help="machine-readable output")
    sub.set_defaults(run=cmd_explain)

    sub = verb("graph", "draw p, q and the discriminator attachments")
    spec_args(sub)
    sub.add_argument("-o", "--output", required=True, help="picture file: .svg, .png, .pdf or .dot")
    sub.add_argument("--plate", action="store_true", help="fold the time plate instead of unrolling it")
    sub.set_defaults(run=cmd_graph)

    sub = verb("compile-and-train", "compile a spec and train it; writes a run folder")
    sub.add_argument("spec", nargs="?", help="a spec file or bundled name (not needed with --resume)")
    sub.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a spec value")
    sub.add_argument("--steps", type=int, help="shorthand for --set train.steps=N")
    sub.add_argument("--out", default="runs", help="folder for run folders (default: runs)")
    sub.add_argument("--resume", metavar="RUN_DIR", help="continue a run from its latest checkpoint")
    sub.add_argument(
        "--profile",
        type=int,
        nargs="?",
        const=5,
        metavar="N",
        help="write a JAX profiler trace of N steps (default 5, after the compiled first step) to RUN/profile",
    )
    sub.add_argument("--quiet", action="store_true", help="no progress bar")
    group = sub.add_argument_group(
        "multi-host", "one process per host, each with the same spec and --out (a folder all of them can read)"
    )
    group.add_argument("--coordinator", metavar="HOST:PORT", help="process 0's address (jax.distributed)")
    group.add_argument("--num-processes", type=int, metavar="N", help="how many processes take part")
    group.add_argument("--process-id", type=int, metavar="I", help="this process's index, 0 to N-1")
    sub.set_defaults(run=cmd_train)

    sub = verb(
        "eval",
        "run the spec's evaluations on a run's latest checkpoint (or the one train.select picked); writes eval.json",
    )
    sub.add_argument("run_dir")
    sub.add_argument("--only", action="append", help="run only these evaluations")
    sub.add_argument("--json", action="store_true", help="machine-readable output")
    sub.set_defaults(run=cmd_eval)

    sub = verb("sample", "draw samples from a trained run into a picture")
    sub.add_argument("run_dir")
    sub.add_argument("-n", type=int, default=64, help="number of samples (default 64)")
    sub.add_argument("-o", "--output", default="samples.png", help="output picture")
    sub.add_argument("--seed", type=int, default=0)
    sub.set_defaults(run=cmd_sample)

    sub = verb("runs", "list run folders: spec, step reached, last losses, main results, status")
    sub.add_argument("folder", nargs="?", default="runs", help="a folder of run folders, or one run (default: runs)")
    sub.add_argument("--json", action="store_true", help="machine-readable output: a JSON list, one object per run")
    sub.set_defaults(run=cmd_runs)

    sub = verb("compare", "plot the training curves of runs on shared axes: one subplot per metric, one line per run")
    sub.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    sub.add_argument(
        "-o", "--output", default="curves.png", help="picture file: .png, .svg or .pdf (default curves.png)"
    )
    sub.add_argument(
        "--metric",
        action="append",
        metavar="NAME",
        help="a metric or pattern, e.g. d_loss or 'd_acc/*' (repeatable; default: d_loss, g_loss, eval/*)",
    )
    sub.set_defaults(run=cmd_compare)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.verb == "compile-and-train" and not args.spec and not args.resume:
        parser.error("compile-and-train needs a SPEC or --resume RUN_DIR")
    if args.verb == "compile-and-train":
        multi_host = (args.coordinator, args.num_processes, args.process_id)
        if any(v is not None for v in multi_host) and any(v is None for v in multi_host):
            parser.error("multi-host runs need all of --coordinator, --num-processes and --process-id")
    try:
        return args.run(args)
    except SpecError as error:
        print(error, file=sys.stderr)
        return 2
    except GGDSLError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
