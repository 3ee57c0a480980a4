"""Training configuration: every option, the per-method presets, validation, resume comparison.

Presets (``--method``; an explicit option overrides its preset value):

=========  ====================  ===============  ==================  ==========
method     D noise (sigma')      P_mean / P_std   reconstruction      real data
=========  ====================  ===============  ==================  ==========
sfv        lognormal-discrete    -1 / -1          pseudo-Huber        videos
ufogen     next-level            (unused)         MSE                 videos
ladd       lognormal             1 / 1            none                teacher (svd)
=========  ====================  ===============  ==================  ==========

Paper defaults (sec. 4): 768x448, 14 frames, 7 fps, SM3 (momentum 0.5, beta 0.999), lr 1e-5 G /
1e-4 D, EMA 0.95, lambda 0.1, batch 1 per device x 4 accumulation (x 8 GPUs = 32), 50K steps,
spatial + temporal heads. LADD's noise follows its logit-normal pi(t; m=1, s=1) on the flow time,
i.e. ln sigma' ~ N(1, 1). Not in the paper (our choices, options): R1 gamma 1e-5 (ADD's value),
pseudo-Huber c = 0.00054 sqrt(d), projection dim 64.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from bench.fsutil import UserError

METHODS = ("sfv", "ufogen", "ladd")
HEAD_CHOICES = ("both", "spatial", "temporal")
D_NOISE_CHOICES = ("lognormal-discrete", "next-level", "lognormal")
RECON_CHOICES = ("pseudo-huber", "mse", "none")
R1_CHOICES = ("exact", "lazy", "approx", "none")
OPTIMIZERS = ("sm3", "adamw")
PRESETS = {
    "sfv": dict(d_noise="lognormal-discrete", p_mean=-1.0, p_std=-1.0, recon="pseudo-huber"),
    "ufogen": dict(d_noise="next-level", p_mean=-1.0, p_std=-1.0, recon="mse"),
    "ladd": dict(d_noise="lognormal", p_mean=1.0, p_std=1.0, recon="none"),
}
# Options that do not change the trained weights: they may differ between a run and its resume.
RUN_ONLY = {"out", "resume", "max_steps", "checkpoint_every", "checkpoints_total_limit", "log_every",
            "preview_every", "device", "latent_cache", "report_to", "progress", "export_weights"}


@dataclass
class TrainConfig:
    data: str = ""
    out: str = ""
    method: str = "sfv"
    stack: str = "svd"
    split: str = "train"
    fold: int = 1
    width: int = 768
    height: int = 448
    num_frames: int = 14
    fps: int = 7
    motion_bucket_id: int = 127
    noise_aug_strength: float = 0.02
    heads: str = "both"
    d_noise: str | None = None
    p_mean: float | None = None
    p_std: float | None = None
    t_d: int = 1000
    recon: str | None = None
    recon_weight: float = 0.1
    huber_c: float | None = None          # None: 0.00054 sqrt(d)
    r1: str = "exact"
    r1_every: int = 16
    r1_gamma: float = 1e-5
    r1_eps: float = 0.01
    optimizer: str = "sm3"
    lr_g: float = 1e-5
    lr_d: float = 1e-4
    momentum: float = 0.5
    beta: float = 0.999
    weight_decay: float = 0.0
    max_grad_norm: float = 0.0            # 0: no clipping (norms are still logged)
    ema: float = 0.95
    batch_size: int = 1
    grad_accum: int = 4
    max_steps: int = 50000
    mixed_precision: str = "auto"         # auto (bf16 on CUDA, fp32 on CPU) | no | bf16
    gradient_checkpointing: bool = True
    cmap_dim: int = 64
    teacher_steps: int = 25
    teacher_max_guidance: float = 3.0
    seed: int = 0
    device: str = "auto"
    checkpoint_every: int = 1000
    checkpoints_total_limit: int = 0      # 0: keep all
    log_every: int = 10
    preview_every: int = 1000             # 0: no previews
    report_to: str = "auto"               # auto (tensorboard when importable) | tensorboard | none
    latent_cache: str = ""                # "" -> $SFV_BENCH_CACHE/train-latents
    resume: str = ""                      # "" | latest | a checkpoint folder
    export_weights: str = "ema"           # ema | raw
    progress: bool = True
    extra: dict = field(default_factory=dict)

    def resolved(self) -> "TrainConfig":
        """Fill preset values for options left at None and validate (UserError on bad input)."""
        if self.method not in METHODS:
            raise UserError(f"unknown --method {self.method!r}; valid: {', '.join(METHODS)}")
        c = dataclasses.replace(self)
        for k, v in PRESETS[c.method].items():
            if getattr(c, k) is None:
                setattr(c, k, v)
        checks = [
            (c.d_noise in D_NOISE_CHOICES, f"--d-noise must be one of {', '.join(D_NOISE_CHOICES)} (got {c.d_noise!r})"),
            (c.recon in RECON_CHOICES, f"--recon must be one of {', '.join(RECON_CHOICES)} (got {c.recon!r})"),
            (c.heads in HEAD_CHOICES, f"--heads must be one of {', '.join(HEAD_CHOICES)} (got {c.heads!r})"),
            (c.r1 in R1_CHOICES, f"--r1 must be one of {', '.join(R1_CHOICES)} (got {c.r1!r})"),
            (c.optimizer in OPTIMIZERS, f"--optimizer must be sm3 or adamw (got {c.optimizer!r})"),
            (c.mixed_precision in ("auto", "no", "bf16"), "--mixed-precision must be auto, no or bf16"),
            (c.export_weights in ("ema", "raw"), "--export-weights must be ema or raw"),
            (c.split in ("train", "test", "all") and c.fold in (1, 2, 3), "--split must be train/test/all, --fold 1/2/3"),
            (c.width % 8 == 0 and c.height % 8 == 0 and c.width >= 16 and c.height >= 16,
             f"--width/--height must be multiples of 8, at least 16 (got {c.width}x{c.height})"),
            (c.num_frames >= 2 and c.fps >= 1, "--num-frames must be >= 2 and --fps >= 1"),
            (c.p_std != 0, "--p-std must not be 0"),
            (c.t_d >= 2, "--t-d must be >= 2"),
            (c.batch_size >= 1 and c.grad_accum >= 1 and c.max_steps >= 1, "--batch-size, --grad-accum, --max-steps must be >= 1"),
            (c.r1_every >= 1 and c.r1_gamma >= 0 and c.r1_eps > 0, "--r1-every >= 1, --r1-gamma >= 0, --r1-eps > 0"),
            (0 <= c.ema < 1, "--ema must be in [0, 1)"),
            (c.lr_g > 0 and c.lr_d > 0, "learning rates must be > 0"),
            (c.checkpoint_every >= 1 and c.log_every >= 1 and c.preview_every >= 0, "--checkpoint-every and --log-every must be >= 1"),
            (c.teacher_steps >= 1, "--teacher-steps must be >= 1"),
            (c.report_to in ("auto", "tensorboard", "none"), "--report-to must be auto, tensorboard or none"),
            (bool(c.data), "--data is required (a folder of videos)"),
            (bool(c.out), "--out is required (the run folder)"),
        ]
        for ok, msg in checks:
            if not ok:
                raise UserError(msg)
        c.data = str(Path(c.data).expanduser().absolute())   # one spelling per folder (resume compares it)
        return c

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def compared(self) -> dict:
        """The values a resumed run must share with the run it continues."""
        return {k: v for k, v in self.to_dict().items() if k not in RUN_ONLY}


def diff_keys(old: dict, new: dict) -> list[str]:
    keys = sorted(set(old) | set(new))
    return [k for k in keys if old.get(k) != new.get(k)]
