"""`sfv-train`: SF-V latent adversarial training (and UFOGen / LADD on the same framework).

One device:   sfv-train --data UCF101_ROOT --out runs/sfv
Several GPUs: accelerate launch --multi_gpu --num_processes 8 -m sfv_train.cli --data ... --out ...
              (or torchrun --nproc_per_node 8 -m sfv_train.cli ...; 2 CPU processes also work with torchrun)
Tiny CPU run: sfv-train --stack tiny --data SYNTHETIC --out /tmp/t --width 64 --height 64 --num-frames 6 \\
              --max-steps 20 --grad-accum 1
"""
from __future__ import annotations

import argparse
import sys

from .config import (D_NOISE_CHOICES, HEAD_CHOICES, METHODS, OPTIMIZERS, PRESETS, R1_CHOICES, RECON_CHOICES,
                     TrainConfig)

D = TrainConfig()


def _bool(text: str) -> bool:
    t = text.lower()
    if t in ("1", "true", "yes", "on"):
        return True
    if t in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected on/off, got {text!r}")


class _Formatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows '(default: X)' for every option that has a default (not for None / '' / flags)."""

    def _get_help_string(self, action):
        text = action.help or ""
        if action.default in (None, "", argparse.SUPPRESS) or isinstance(action.default, bool) and not action.type:
            return text
        return f"{text} (default: %(default)s)".strip()


class _Parser(argparse.ArgumentParser):
    """argparse with a one-line error (no usage block): ``sfv-train: error: ...``, exit 2."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    presets = "; ".join(f"{m}: " + ", ".join(f"{k}={v}" for k, v in p.items()) for m, p in PRESETS.items())
    p = _Parser(
        prog="sfv-train", formatter_class=_Formatter,
        description="Latent adversarial training of a one-step SVD generator (SF-V, sec. 3-4), with UFOGen "
                    "and LADD on the same framework. Defaults are the paper's settings. Writes OUT/config.json, "
                    "OUT/checkpoints/step-XXXXXX/, OUT/export/unet (load with `sfv-bench run --methods "
                    "sfv:1 --sfv-unet OUT/export/unet`), OUT/previews/, OUT/logs/.",
        epilog=f"Method presets (explicit options win): {presets}.")
    g = p.add_argument_group("run")
    g.add_argument("--data", required=True, help="folder of videos: a UCF-101 root (its train list is used) or any folder")
    g.add_argument("--out", required=True, help="run folder (checkpoints, export, logs, previews)")
    g.add_argument("--method", choices=METHODS, default=D.method, help="sets the presets below")
    g.add_argument("--stack", default=D.stack, help="SVD stack: svd | svd-xt | tiny | pipeline folder | HF repo id (cache only)")
    g.add_argument("--resume", nargs="?", const="latest", default="",
                   help="continue from the latest checkpoint in OUT (or from the given checkpoint folder)")
    g.add_argument("--max-steps", type=int, default=D.max_steps, help="optimisation steps (the run ends there)")
    g.add_argument("--seed", type=int, default=D.seed, help="heads init, noise, data order, conditioning noise")
    g.add_argument("--device", default=D.device, help="auto | cpu | cuda (under accelerate launch: set by accelerate)")
    g = p.add_argument_group("data")
    g.add_argument("--split", choices=("train", "test", "all"), default=D.split, help="UCF-101 split list (UCF-101 roots only)")
    g.add_argument("--fold", type=int, choices=(1, 2, 3), default=D.fold, help="UCF-101 split fold")
    g.add_argument("--width", type=int, default=D.width, help="training width (cover-resize + centre crop)")
    g.add_argument("--height", type=int, default=D.height, help="training height")
    g.add_argument("--num-frames", type=int, default=D.num_frames, help="frames per clip")
    g.add_argument("--fps", type=int, default=D.fps, help="clip frame rate (also the fps conditioning)")
    g.add_argument("--motion-bucket-id", type=int, default=D.motion_bucket_id, help="added time id")
    g.add_argument("--noise-aug-strength", type=float, default=D.noise_aug_strength, help="noise on the conditioning image")
    g.add_argument("--latent-cache", default=D.latent_cache, help="latent cache folder (default: $SFV_BENCH_CACHE/train-latents)")
    g.add_argument("--teacher-steps", type=int, default=D.teacher_steps, help="LADD: steps of the svd teacher")
    g.add_argument("--teacher-max-guidance", type=float, default=D.teacher_max_guidance, help="LADD: teacher CFG max scale")
    g = p.add_argument_group("objective")
    g.add_argument("--heads", choices=HEAD_CHOICES, default=D.heads, help="discriminator heads (Table 2)")
    g.add_argument("--d-noise", choices=D_NOISE_CHOICES, default=None, help="noise before D (default: the method preset)")
    g.add_argument("--p-mean", type=float, default=None, help="lognormal P_mean (Table 3; default: the method preset)")
    g.add_argument("--p-std", type=float, default=None, help="lognormal P_std, sign ignored (default: the method preset)")
    g.add_argument("--t-d", type=int, default=D.t_d, help="Karras levels of the discretised lognormal")
    g.add_argument("--recon", choices=RECON_CHOICES, default=None, help="reconstruction loss (default: the method preset)")
    g.add_argument("--lambda", dest="recon_weight", type=float, default=D.recon_weight, help="reconstruction weight")
    g.add_argument("--huber-c", type=float, default=None, help="pseudo-Huber c (default: 0.00054 sqrt(d), d = elements per video)")
    g.add_argument("--r1", choices=R1_CHOICES, default=D.r1, help="R1 on real inputs: exact (double backward, math "
                                                                   "SDPA), lazy (exact every --r1-every), approx, none")
    g.add_argument("--r1-every", type=int, default=D.r1_every, help="k of --r1 lazy (penalty weighted by k)")
    g.add_argument("--r1-gamma", type=float, default=D.r1_gamma, help="R1 weight gamma")
    g.add_argument("--r1-eps", type=float, default=D.r1_eps, help="perturbation of the approximate R1")
    g.add_argument("--cmap-dim", type=int, default=D.cmap_dim, help="projection dimension of the heads")
    g = p.add_argument_group("optimisation")
    g.add_argument("--optimizer", choices=OPTIMIZERS, default=D.optimizer, help="SM3 (pytorch-optimizer) or AdamW")
    g.add_argument("--lr-g", type=float, default=D.lr_g, help="generator learning rate")
    g.add_argument("--lr-d", type=float, default=D.lr_d, help="discriminator heads learning rate")
    g.add_argument("--momentum", type=float, default=D.momentum, help="SM3 momentum / AdamW beta1")
    g.add_argument("--beta", type=float, default=D.beta, help="SM3 beta / AdamW beta2")
    g.add_argument("--weight-decay", type=float, default=D.weight_decay, help="AdamW only")
    g.add_argument("--max-grad-norm", type=float, default=D.max_grad_norm, help="0: no clipping")
    g.add_argument("--ema", type=float, default=D.ema, help="EMA decay of the generator")
    g.add_argument("--batch-size", type=int, default=D.batch_size, help="videos per device per micro-batch")
    g.add_argument("--grad-accum", type=int, default=D.grad_accum, help="micro-batches per step")
    g.add_argument("--mixed-precision", choices=("auto", "no", "bf16"), default=D.mixed_precision,
                   help="bf16 autocast (auto: on CUDA only)")
    g.add_argument("--gradient-checkpointing", type=_bool, default=D.gradient_checkpointing, metavar="on|off",
                   help="G and the frozen D backbone")
    g = p.add_argument_group("output")
    g.add_argument("--checkpoint-every", type=int, default=D.checkpoint_every, help="steps between checkpoints (and at the end)")
    g.add_argument("--checkpoints-total-limit", type=int, default=D.checkpoints_total_limit, help="0: keep all")
    g.add_argument("--log-every", type=int, default=D.log_every, help="steps between log lines / tracker points")
    g.add_argument("--preview-every", type=int, default=D.preview_every, help="0: no preview videos")
    g.add_argument("--report-to", choices=("auto", "tensorboard", "none"), default=D.report_to,
                   help="accelerate tracker (auto: tensorboard when installed)")
    g.add_argument("--export-weights", choices=("ema", "raw"), default=D.export_weights, help="weights in OUT/export/unet")
    g.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    return p


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    fields = TrainConfig.__dataclass_fields__
    return TrainConfig(**{k: v for k, v in vars(args).items() if k in fields})


def main(argv=None) -> int:
    from bench.fsutil import UserError

    try:
        args = build_parser().parse_args(argv)
    except SystemExit as e:          # --help (0) or a bad option (2, one line already printed)
        return int(e.code or 0)
    try:
        from .trainer import train
        train(config_from_args(args))
    except UserError as e:
        print(f"sfv-train: error: {e}", file=sys.stderr)
        return 2
    except FloatingPointError as e:
        print(f"sfv-train: error: {e}; checkpoints written so far are kept (try a lower learning rate, "
              f"--max-grad-norm or --r1)", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("sfv-train: interrupted; rerun with --resume to continue from the last checkpoint", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
