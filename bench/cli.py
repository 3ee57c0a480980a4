"""The command line of the suite: every parser of `sfv-bench` and `sfv-train`, and their mains.

Torch-free: a command's module is imported only when the command runs ("module:function" below),
so `--help` stays fast. The options of `sfv-bench run` and `sfv-train` are typed dataclasses
(``bench.run_config.RunConfig``, ``sfv_train.config.TrainConfig``): their parsers are generated from the
fields and every value, typed or from ``--config FILE``, is validated by ``sfv_core.typed_config``. A
UserError becomes one line on stderr and exit 2.
"""
from __future__ import annotations

import argparse
import dataclasses
import importlib
import os
import sys

from sfv_core.errors import UserError
from sfv_core.logs import setup_console
from sfv_core.paper import DEFAULT_SPECS
from sfv_core.protocol import GEN
from sfv_core.typed_config import add_options, apply_config_file, validate

from .assets import add_ablations, add_build_mini, add_claims, add_make_synthetic, add_study
from .latency import DEFAULT_TOLERANCE
from .run_config import VARIANT_HELP, RunConfig


def _add_run(sub):
    p = sub.add_parser("run", help="generate, score and time methods; write Table 1 (no arguments: the mini world)",
                       description="With no arguments: the mini world (the synthetic dataset, small SVD-architecture "
                                   "models trained on it and shipped with the project, its trained detector). Its "
                                   "numbers measure real differences between methods; they are not the paper's.")
    add_options(p, RunConfig)
    p.add_argument("--config", default=None, metavar="FILE",
                   help="TOML/YAML/JSON file of these options (keys as above without --); flags override it")
    p.set_defaults(func="bench.run:cli_run")


def _add_ls(sub):
    p = sub.add_parser("ls", help="list methods, their step counts and options")
    p.set_defaults(func="methods.registry:cli_ls")


def _add_table(sub):
    p = sub.add_parser("table", help="print a run's Table 1 from its results.jsonl, or several runs' merged")
    p.add_argument("run", nargs="+", help="run folder(s) holding results.jsonl; several are merged when their "
                                          "protocol, detector and N agree (refused otherwise, naming the field)")
    p.add_argument("--format", choices=("csv", "md"), default="md", help="what to print")
    p.add_argument("--write", action="store_true", help="also rewrite table.csv and table.md in the run folder")
    p.set_defaults(func="bench.report:cli_table")


def _add_fvd(sub):
    p = sub.add_parser("fvd", help="FVD between two folders of videos, or a folder and cached statistics")
    p.add_argument("real", help="folder of real videos (avi/mp4/mkv/npy/npz) or a statistics file (.npz)")
    p.add_argument("fake", help="folder of generated videos")
    p.add_argument("--detector", default=None,
                   help="i3d_torchscript.pt / i3d_pretrained_400.pt path, a name in the detector cache "
                        "(stylegan-v, tats), or 'toy' (a random-init I3D: not comparable with published FVD); "
                        "default: the one a REAL statistics file was made with (required with a REAL folder)")
    p.add_argument("--trust-detector", action="store_true",
                   help="allow a TorchScript detector file that matches no published pin (loading it runs its code)")
    p.add_argument("--num-frames", type=int, default=GEN.num_frames, help="frames per clip (the protocol's 14)")
    p.add_argument("--fps", type=int, default=GEN.fps,
                   help="clip frame rate: frame k is round(k * src_fps / fps) from frame 0, src_fps read from each "
                        "container, as `sfv-bench run` takes real clips (arrays count as this rate)")
    p.add_argument("--consecutive", action="store_true", help="take the first --num-frames frames instead")
    p.add_argument("--size", default=None, help="resize frames to WxH before the detector (e.g. 320x240)")
    p.add_argument("--covariance", choices=("biased", "unbiased"), default="biased",
                   help="1/N (StyleGAN-V, cd-fvd) or 1/(N-1) (TF, TATS) covariance")
    p.add_argument("--batch-size", type=int, default=8, help="clips per detector call")
    p.add_argument("--device", default="cpu", help="cpu | cuda for the detector")
    p.set_defaults(func="bench.fvd_command:cli_fvd")


def _add_latency(sub):
    p = sub.add_parser("latency", help="UNet and end-to-end latency at the paper's shapes "
                                       "(full-size random weights, FLOPs, memory, options)")
    p.add_argument("--shape", choices=("tiny", "paper"), default=None,
                   help="paper: 14 frames 1024x576 (latent 14x4x72x128), full-size models; tiny: the tiny stack "
                        "at 14 frames 64x64 (default: paper on CUDA, tiny on CPU)")
    p.add_argument("--stack", default=None, help="real weights: tiny | svd | svd-xt | pipeline folder "
                                                 "(default: tiny for --shape tiny, random full-size weights for paper)")
    p.add_argument("--variant", default=None, help=VARIANT_HELP)
    p.add_argument("--methods", default=DEFAULT_SPECS, help="method specs (default: Table 1's)")
    p.add_argument("--device", default=None, help="cpu | cuda[:N] (default: cuda if available)")
    p.add_argument("--dtype", default="auto", help="fp32 | fp16 | bf16, a comma list to search, or auto")
    p.add_argument("--attention", default="auto", help="SDPA backend: default | math | flash | efficient | cudnn, "
                                                      "a list, or auto")
    p.add_argument("--channels-last", default="auto", help="on | off | off,on | auto")
    p.add_argument("--compile", default="auto", help="torch.compile the UNet: on | off | off,on | auto")
    p.add_argument("--cuda-graphs", default="auto", help="CUDA graphs for the UNet: on | off | off,on | auto")
    p.add_argument("--tolerance", type=float, default=DEFAULT_TOLERANCE,
                   help="max relative L2 error of the UNet output vs fp32 eager for a configuration to qualify")
    p.add_argument("--repeats", type=int, default=None, help="timed repeats per measurement (default 20 CUDA, 5 CPU)")
    p.add_argument("--warmup", type=int, default=None, help="untimed runs before timing (default 3 CUDA, 1 CPU)")
    p.add_argument("--loop-repeats", type=int, default=3, help="timed runs of each method's whole loop")
    p.add_argument("--num-frames", type=int, default=None, help="override the shape's frames")
    p.add_argument("--height", type=int, default=None, help="override the shape's height (pixels)")
    p.add_argument("--width", type=int, default=None, help="override the shape's width (pixels)")
    p.add_argument("--decode-chunk-size", type=int, default=14, help="VAE decode chunk (frames); recorded")
    p.add_argument("--no-method-check", action="store_true",
                   help="skip generating one video with each real adapter (done when a stack is used)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (default: 1 on CPU, as torch.utils.benchmark times; 0 = torch's default)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random weights and inputs")
    p.add_argument("--out", default=None, help="output folder for latency.json and latency.md "
                                              "(default runs/latency/<shape>-<device>)")
    p.set_defaults(func="bench.latency.command:cli_latency")


def _add_regress(sub):
    p = sub.add_parser("regress", help="latency regression gate: compare two like latency.json (sfv-bench latency) "
                                       "or results.jsonl (sfv-bench run) files")
    p.add_argument("baseline", help="latency.json or results.jsonl of the baseline run (or its folder)")
    p.add_argument("current", help="latency.json or results.jsonl of the run to check (or its folder)")
    p.add_argument("--tolerance", default="10",
                   help="allowed slow-down of each median, in percent (default 10); a slower median fails only "
                        "when the current p10 is also above the baseline p90 (beyond the noise)")
    p.set_defaults(func="bench.latency.regress:cli_regress")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sfv-bench",
        description="Benchmark for few-step image-to-video diffusion (SF-V Table 1: FVD on UCF-101 + UNet latency).")
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in (_add_run, _add_ls, _add_table, _add_fvd, add_make_synthetic, add_build_mini, add_ablations, add_claims,
                add_study, _add_latency, _add_regress):
        add(sub)
    return parser


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("sfv-bench")
    except PackageNotFoundError:
        return "(not installed)"


def _subparser(parser, name: str) -> argparse.ArgumentParser:
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices[name]


def _dispatch(prog: str, target: str, args) -> int:
    module, func = target.split(":")
    try:
        return int(getattr(importlib.import_module(module), func)(args) or 0)
    except UserError as e:
        if os.environ.get("RANK", "0") == "0":          # several processes: the first one says it
            print(f"{prog}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        if os.environ.get("RANK", "0") == "0":
            print(f"{prog}: interrupted; finished work is kept, rerun to resume", file=sys.stderr)
        return 130
    except OSError as e:             # disk full, permission denied, ...: one line, finished work kept
        where = f": {e.filename}" if getattr(e, "filename", None) else ""
        print(f"{prog}: error: {e.strerror or e}{where}", file=sys.stderr)
        return 1


def main(argv=None) -> int:
    """`sfv-bench`."""
    setup_console()
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] == "run":
        try:
            apply_config_file(_subparser(parser, "run"), RunConfig, argv[1:])
        except UserError as e:
            print(f"sfv-bench run: error: {e}", file=sys.stderr)
            return 2
    args = parser.parse_args(argv)
    args.argv = argv                                     # `run --procs K` starts K copies of this command
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    return _dispatch(f"sfv-bench {args.command}", args.func, args)


# --------------------------------------------------------------------------------------- sfv-train

class _OneLineParser(argparse.ArgumentParser):
    """argparse with a one-line error (no usage block): ``prog: error: ...``, exit 2."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_train_parser() -> argparse.ArgumentParser:
    from sfv_train.config import GROUPS, PRESETS, TrainConfig

    presets = "; ".join(f"{m}: " + ", ".join(f"{k}={v}" for k, v in p.items()) for m, p in PRESETS.items())
    p = _OneLineParser(
        prog="sfv-train",
        description="Latent adversarial training of a one-step SVD generator (SF-V, sec. 3-4), with UFOGen "
                    "and LADD on the same framework; --method lcm: AnimateLCM's consistency distillation (a "
                    "few-step UNet: `sfv-bench run --methods lcm:4 --lcm-unet OUT/export/unet`). "
                    "Defaults are the paper's settings. Writes OUT/config.json, "
                    "OUT/checkpoints/step-XXXXXX/, OUT/export/unet (load with `sfv-bench run --methods "
                    "sfv:1 --sfv-unet OUT/export/unet`), OUT/previews/, OUT/logs/. Continue a run: "
                    "sfv-train --resume OUT [--max-steps N].",
        epilog=f"Method presets (explicit options win): {presets}. Several GPUs: "
               f"accelerate launch --num_processes 8 $(which sfv-train) ... (or torchrun).")
    p.add_argument("--config", default=None, metavar="FILE",
                   help="TOML/YAML/JSON file of these options (keys: option names without -- (a --no-X switch: X = false), at the top or in "
                        "sections named as the groups below, e.g. [objective]); flags override it")
    add_options(p, TrainConfig, show_defaults=True, group_order=GROUPS)
    return p


def train_config(argv) -> "TrainConfig":
    """The ``TrainConfig`` of an sfv-train command line (validated; presets not yet filled)."""
    from sfv_train.config import TrainConfig, resume_defaults

    parser = build_train_parser()
    apply_config_file(parser, TrainConfig, argv)
    args = parser.parse_args(argv)
    run = resume_defaults(args.resume, args.out)
    if run:
        parser.set_defaults(**run)
        apply_config_file(parser, TrainConfig, argv)        # the file, then the command line, over the run's
        args = parser.parse_args(argv)
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    return validate(TrainConfig, {k: v for k, v in vars(args).items() if k in names}, "sfv-train")


def train_main(argv=None) -> int:
    """`sfv-train`. Options in order of precedence: the command line, --config FILE, the resumed run's
    config.json (``--resume OUT``), the defaults."""
    setup_console()
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        cfg = train_config(argv)
        if cfg.estimate_memory:
            from sfv_train.memory import estimate
            from sfv_train.memory_report import report
            print(report(estimate(cfg)))
            return 0
        from sfv_train.train import train
        train(cfg)
    except SystemExit as e:          # --help (0) or a bad option (2, one line already printed)
        return int(e.code or 0)
    except UserError as e:
        print(f"sfv-train: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:             # disk full, permission denied, ...: one line, checkpoints kept
        where = f": {e.filename}" if getattr(e, "filename", None) else ""
        print(f"sfv-train: error: {e.strerror or e}{where}", file=sys.stderr)
        return 1
    except FloatingPointError as e:
        print(f"sfv-train: error: {e}; checkpoints written so far are kept (try a lower learning rate, "
              f"--max-grad-norm or --r1)", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("sfv-train: interrupted; rerun with --resume to continue from the last checkpoint", file=sys.stderr)
        return 130
    return 0
