"""`sfv-bench` command line. Parsers are defined here (cheap); each command imports its module lazily."""
from __future__ import annotations

import argparse
import importlib
import sys


def _add_make_synthetic(sub):
    p = sub.add_parser("make-synthetic", help="write a synthetic dataset in UCF-101's exact layout")
    p.add_argument("dir", help="output folder (gets UCF-101/ and ucfTrainTestlist/)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--classes", type=int, default=5, help="number of action classes")
    p.add_argument("--groups", type=int, default=7, help="groups per class (g01..)")
    p.add_argument("--clips", type=int, default=2, help="clips per group (c01..)")
    p.add_argument("--frames", type=int, default=60, help="frames per video (25 fps)")
    p.set_defaults(func="bench.synthetic:cli_make_synthetic")


def _add_fvd(sub):
    p = sub.add_parser("fvd", help="FVD between two folders of videos, or a folder and cached statistics")
    p.add_argument("real", help="folder of real videos (avi/mp4/mkv/npy/npz) or a statistics file (.npz)")
    p.add_argument("fake", help="folder of generated videos")
    p.add_argument("--detector", default=None,
                   help="i3d_torchscript.pt / i3d_pretrained_400.pt path, a name in the detector cache "
                        "(stylegan-v, tats), or 'toy' (default: toy, a random-init I3D)")
    p.add_argument("--num-frames", type=int, default=None, help="use the first F frames of each video")
    p.add_argument("--size", default=None, help="resize frames to WxH before the detector (e.g. 320x240)")
    p.add_argument("--covariance", choices=("biased", "unbiased"), default="biased")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--device", default="cpu")
    p.set_defaults(func="bench.fvd:cli_fvd")


def _add_run(sub):
    from .run import add_parser
    add_parser(sub)


def _add_table(sub):
    p = sub.add_parser("table", help="regenerate table.csv / table.md of a run from its results.jsonl")
    p.add_argument("run", help="run folder (holding results.jsonl)")
    p.add_argument("--format", choices=("csv", "md"), default="md")
    p.add_argument("--write", action="store_true", help="also rewrite table.csv and table.md in the run folder")
    p.set_defaults(func="bench.report:cli_table")


def _add_ls(sub):
    p = sub.add_parser("ls", help="list methods, their step counts and options")
    p.set_defaults(func="methods.registry:cli_ls")


def _add_latency(sub):
    # bench.latency imports torch: its arguments are parsed by bench.latency.main, so that
    # `sfv-bench --help` stays fast; `sfv-bench latency --help` shows them all.
    sub.add_parser("latency", add_help=False, help="UNet and end-to-end latency at the paper's shapes "
                                                   "(full-size random weights, FLOPs, memory, options)")


def _add_regress(sub):
    from .regress import add_arguments
    p = sub.add_parser("regress", help="latency regression gate: compare two comparable latency.json runs")
    add_arguments(p)
    p.set_defaults(func="bench.regress:cli_regress")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sfv-bench",
        description="Benchmark for few-step image-to-video diffusion (SF-V Table 1: FVD on UCF-101 + UNet latency).")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in (_add_run, _add_ls, _add_table, _add_fvd, _add_make_synthetic, _add_latency, _add_regress):
        add(sub)
    return parser


# Commands whose module parses its own arguments (it imports torch; `sfv-bench --help` stays fast).
PASS_THROUGH = {"latency": "bench.latency:main"}


def run_standalone(prog: str, description: str, add_arguments, func, argv=None) -> int:
    """Parse ``argv`` with ``add_arguments`` and run ``func(args)``; a UserError is one line, exit 2.

    For commands whose module parses its own arguments (``sfv-bench latency``, ``python -m bench.regress``)."""
    from .fsutil import UserError

    p = argparse.ArgumentParser(prog=prog, description=description)
    add_arguments(p)
    args = p.parse_args(argv)
    try:
        return int(func(args) or 0)
    except UserError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 2


def main(argv=None) -> int:
    from .fsutil import UserError

    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in PASS_THROUGH:  # commands that parse their own arguments
        module, func = PASS_THROUGH[argv[0]].split(":")
        return int(getattr(importlib.import_module(module), func)(argv[1:]) or 0)
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    module, func = args.func.split(":")
    try:
        rc = getattr(importlib.import_module(module), func)(args)
    except UserError as e:
        print(f"sfv-bench {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"sfv-bench {args.command}: interrupted; finished work is kept, rerun to resume", file=sys.stderr)
        return 130
    return int(rc or 0)


if __name__ == "__main__":
    sys.exit(main())
