"""Training configuration: every option, the per-method presets, validation, resume comparison.

Presets (``--method``; an explicit option overrides its preset value):

=========  ====================  ===============  ===============================  ==========
method     D noise (sigma')      P_mean / P_std   reconstruction (reduction, lam)  real data
=========  ====================  ===============  ===============================  ==========
sfv        lognormal-discrete    -1 / -1          pseudo-Huber (element, 0.01)     videos
ufogen     next-level            (unused)         diffusion (element, 1.0)         videos
ladd       lognormal             1 / 1            none                             teacher (svd)
lcm        (no discriminator)    (unused)         consistency: pseudo-Huber        videos
                                                  (element, c 0.001, 1.0)
=========  ====================  ===============  ===============================  ==========

Optimisation presets: sfv / ufogen / ladd: SM3, lr 1e-5, momentum 0.5, no weight decay, 4 micro-batches,
export the EMA; lcm: AdamW lr 1e-6, beta1 0.9, weight decay 1e-3, 1 micro-batch, export the online
student (AnimateLCM's ``train_svd_lcm.py``; ``sfv_train.lcm`` cites each number). ``lcm`` is
consistency distillation (AnimateLCM for SVD, ``sfv_train.lcm``): the teacher's guided Euler step
from one of 40 Karras levels to the next, a target network (EMA ``--ema`` 0.95 of the student), the
reconstruction options as its distance; the discriminator options do not apply to it.

Reconstruction, written out: SF-V (eq. 9) applies lambda = 0.1 to sqrt(||x0_hat - x0||^2 + c^2) - c; read
with the norm over the WHOLE video latent, the term's gradient on x0_hat has norm lambda per video at any
latent size, while the adversarial term (a mean over positions) has a gradient that shrinks as 1/sqrt(d)
(d = elements per video): measured in the mini world (8x8x4x14 latents) the adversarial gradient was 1/50
of lambda x reconstruction and the generator stayed at the teacher's blurred one-step mean. The preset
therefore averages the pseudo-Huber over elements (both terms then scale alike: the RULE that makes
lambda mean the same at every size) with lambda 0.01, chosen on held-out validation clips in the mini
world (`sfv-bench study`, results/mini/study.md); at 768x448 this is lambda 0.01 / sqrt(301056) of the
whole-video form. The paper-literal reading is `--recon-reduction video --lambda 0.1`. UFOGen's reference implementation (the authors'
SIDDMs-UFOGen repository, ``train_ufo.py``) adds the pretrained model's own diffusion training loss
(a mean over elements) with weight 1 to the adversarial loss; on SVD that is the v-prediction MSE,
i.e. (s^2 + 1)/s^2 (x0_hat - x0)^2 averaged over elements. Per-element vs whole-video reduction
differs by the element count (~300k at 768x448), so the reduction is an explicit option.

Paper defaults (sec. 4): 768x448, 14 frames, 7 fps, SM3 (momentum 0.5, beta 0.999), lr 1e-5 G /
1e-4 D, EMA 0.95, lambda 0.1, batch 1 per device x 4 accumulation (x 8 GPUs = 32), 50K steps,
spatial + temporal heads. LADD's noise follows its logit-normal pi(t; m=1, s=1) on the flow time,
i.e. ln sigma' ~ N(1, 1). Not in the paper (our choices, options): R1 gamma 1e-5 (ADD's value),
pseudo-Huber c = 0.00054 sqrt(d), projection dim 64.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

from sfv_core.env import PROCESS_GROUP_TIMEOUT_S
from sfv_core.errors import UserError
from sfv_core.protocol import FOLDS, GEN, RESIZE_RULES, SPLITS
from sfv_core.typed_config import option, run_only_fields, validate

from .loop_config import LoopConfig, MixedPrecision, loop_option

Method = Literal["sfv", "ufogen", "ladd", "lcm"]
Heads = Literal["both", "spatial", "temporal"]
DNorm = Literal["videos", "frames", "none"]
DNoise = Literal["lognormal-discrete", "next-level", "lognormal"]
Recon = Literal["pseudo-huber", "mse", "diffusion", "none"]
ReconReduction = Literal["video", "element"]
R1 = Literal["exact", "lazy", "approx", "none"]
Optimizer = Literal["sm3", "adamw"]
Split = Literal[SPLITS]
Fold = Literal[FOLDS]
Resize = Literal[RESIZE_RULES]

METHODS = get_args(Method)
HEAD_CHOICES = get_args(Heads)
D_NORM_CHOICES = get_args(DNorm)
D_NOISE_CHOICES = get_args(DNoise)
LCM_RECON = ("pseudo-huber", "mse")     # the consistency distances --method lcm takes
PAPER_TRAIN_SIZE = (768, 448)           # width, height of SF-V's training (sec. 4)
FVD_AUTO_EVERY = 250      # --fvd-every -1 with --stack mini: every min(250, max_steps // 8) steps

_ADVERSARIAL = dict(optimizer="sm3", lr_g=1e-5, momentum=0.5, weight_decay=0.0, grad_accum=4, export_weights="ema")
PRESETS = {
    # SF-V's reconstruction: pseudo-Huber averaged over elements, lambda 0.01 (see the module doc: the rule)
    "sfv": dict(d_noise="lognormal-discrete", p_mean=-1.0, p_std=-1.0, recon="pseudo-huber",
                recon_reduction="element", recon_weight=0.01, **_ADVERSARIAL),
    "ufogen": dict(d_noise="next-level", p_mean=-1.0, p_std=-1.0, recon="diffusion", recon_reduction="element",
                   recon_weight=1.0, **_ADVERSARIAL),
    "ladd": dict(d_noise="lognormal", p_mean=1.0, p_std=1.0, recon="none", recon_reduction="element",
                 recon_weight=0.0, **_ADVERSARIAL),
    # AnimateLCM-SVD (train_svd_lcm.py): loss T:1111-1113, AdamW T:9/11/429-449, batch T:4, export T:1303-1317
    "lcm": dict(recon="pseudo-huber", recon_reduction="element", recon_weight=1.0, huber_c=0.001, optimizer="adamw",
                lr_g=1e-6, momentum=0.9, weight_decay=1e-3, grad_accum=1, export_weights="raw"),
}
GROUPS = ("run", "data", "objective", "optimisation", "output", "evaluation")   # sfv-train --help's sections


@dataclass
class TrainConfig(LoopConfig):
    """Every option of ``sfv-train`` (``LoopConfig``'s shared ones and the adversarial / consistency ones);
    build it with keywords (``TrainConfig(method="ladd", out=..., max_steps=...)``, the option names with
    underscores; ``--lambda`` is ``recon_weight``); ``resolved()`` validates it and fills the presets."""
    max_steps: int = loop_option("max_steps", 50000)
    mixed_precision: MixedPrecision = loop_option("mixed_precision", "auto")
    log_every: int = loop_option("log_every", 10)
    checkpoint_every: int = loop_option("checkpoint_every", 1000)
    preview_every: int = loop_option("preview_every", 1000)
    # run
    data: str = option("", "folder of videos: a UCF-101 root (its train list is used) or any folder (--stack tiny: "
                       "default the synthetic dataset)", "run")
    method: Method = option("sfv", "sfv / ufogen / ladd: latent adversarial training of a one-step generator; lcm: "
                            "AnimateLCM consistency distillation (sample it with `sfv-bench run --methods lcm:N`); "
                            "sets the presets below", "run")
    stack: str = option("svd", "SVD stack: svd | svd-xt | tiny | mini | pipeline folder | HF repo id (cache only)",
                        "run")
    mini_world: str = option("", "the mini world's folder that --stack mini and --fvd-detector mini read (default: "
                             "the shipped one, or $SFV_MINI_WORLD)", "run")
    estimate_memory: bool = option(False, "print this run's per-GPU memory (weights, gradients, optimiser state, "
                                   "EMA, D, VAE/CLIP, activations, each R1) counted on fake tensors from the stack's "
                                   "configurations (no GPU, weights or data needed; minutes at full size) and exit",
                                   "run", run_only=True)
    # data
    split: Split = option("train", "UCF-101 split list (UCF-101 roots only)", "data")
    fold: Fold = option(1, "UCF-101 split fold", "data")
    width: int = option(0, "training width (0: the paper's 768, or the world's size with --stack mini / tiny)",
                        "data")
    height: int = option(0, "training height (0: the paper's 448, or the world's size with --stack mini / tiny)",
                         "data")
    resize: Resize = option(GEN.resize, "how source frames become width x height: stretch (the benchmark's default "
                            "geometry) or cover-center-crop", "data")
    num_frames: int = option(GEN.num_frames, "frames per clip", "data")
    fps: int = option(GEN.fps, "clip frame rate (also the fps conditioning)", "data")
    motion_bucket_id: int = option(GEN.motion_bucket_id, "added time id", "data")
    noise_aug_strength: float = option(GEN.noise_aug_strength, "noise on the conditioning image", "data")
    latent_cache: str = option("", "latent cache folder (default: $SFV_BENCH_CACHE/train-latents)", "data",
                               run_only=True)
    # the svd method's defaults (methods.registry, not imported here: `sfv-train --help` would load numpy)
    teacher_steps: int = option(25, "LADD: steps of the svd teacher", "data")
    teacher_max_guidance: float = option(3.0, "LADD: teacher CFG max scale", "data")
    teacher_batch: int = option(4, "LADD: videos per teacher call (x2 with CFG), in the run's precision", "data",
                                run_only=True)
    # objective
    heads: Heads = option("both", "discriminator heads (Table 2)", "objective")
    d_norm: DNorm = option("frames", "the heads' local batch norm: frames (StyleGAN-T's: groups of 8 rows, i.e. "
                           "frames or positions of one video, real and fake in separate calls), videos (groups of up "
                           "to 8 whole videos, half real half fake, one D call: D's loss falls faster, but the "
                           "validation FVD of the mini-world study was worse), none", "objective")
    d_noise: DNoise | None = option(None, "noise before D (default: the method preset)", "objective")
    p_mean: float | None = option(None, "lognormal P_mean (Table 3; default: the method preset)", "objective")
    p_std: float | None = option(None, "lognormal P_std, sign ignored (default: the method preset)", "objective")
    t_d: int = option(1000, "Karras levels of the discretised lognormal", "objective")
    recon: Recon | None = option(None, "reconstruction loss of x0_hat against x0: pseudo-huber (SF-V eq. 9), mse, "
                                 "diffusion (the teacher's own v-space denoising loss, (s^2+1)/s^2 (x0_hat-x0)^2: "
                                 "UFOGen's), none (default: the method preset)", "objective")
    recon_reduction: ReconReduction | None = option(
        None, "video: over all elements of a video (pseudo-huber of the whole-video L2 norm; sum of squares), "
        "element: mean over elements (default: the preset; SF-V element, chosen in the mini-world study: the "
        "whole-video form's gradient on x0_hat is lambda per video at any size while the adversarial one falls as "
        "1/sqrt(elements), the per-element mean scales like it, so lambda means the same at every size; the "
        "paper-literal reading is video with --lambda 0.1)", "objective")
    recon_weight: float | None = option(None, "reconstruction weight lambda (default: the preset; SF-V 0.01 with the "
                                        "per-element reduction, UFOGen 1)", "objective", flag="--lambda")
    huber_c: float | None = option(None, "pseudo-Huber c (default: 0.00054 sqrt(d), d = elements per video; lcm: "
                                   "0.001, AnimateLCM's)", "objective")
    r1: R1 = option("approx", "R1 on real inputs: approx (finite difference (s(x + eps n) - s(x)) / eps: one more D "
                    "forward; fits 80 GB at 768x448), exact (double backward through D under the math attention "
                    "kernel: ~160 GiB per GPU at 768x448, see --estimate-memory), lazy (exact every --r1-every), "
                    "none", "objective")
    r1_every: int = option(16, "k of --r1 lazy (penalty weighted by k)", "objective")
    r1_gamma: float = option(1e-5, "R1 weight gamma", "objective")
    r1_eps: float = option(0.01, "perturbation of the approximate R1", "objective")
    cmap_dim: int = option(64, "projection dimension of the heads", "objective")
    lcm_guidance_first: str = option("1,1.25,1.5", "lcm: the teacher's CFG scale at the first frame, drawn per video "
                                     "from these (comma-separated; AnimateLCM's)", "objective")
    lcm_guidance_last: str = option("2,2.25,2.5", "lcm: the teacher's CFG scale at the last frame (linear over the "
                                    "frames in between), drawn per video from these", "objective")
    # optimisation
    optimizer: Optimizer | None = option(None, "SM3 (pytorch-optimizer) or AdamW (default: the preset; sm3, lcm: "
                                         "adamw)", "optimisation")
    lr_g: float | None = option(None, "generator learning rate (default: the preset; 1e-5, lcm: 1e-6)",
                                "optimisation")
    lr_d: float = option(1e-4, "discriminator heads learning rate", "optimisation")
    momentum: float | None = option(None, "SM3 momentum / AdamW beta1 (default: the preset; 0.5, lcm: 0.9)",
                                    "optimisation")
    beta: float = option(0.999, "SM3 beta / AdamW beta2", "optimisation")
    weight_decay: float | None = option(None, "AdamW only (default: the preset; 0, lcm: 1e-3)", "optimisation")
    max_grad_norm: float = option(0.0, "0: no clipping (norms are still logged)", "optimisation")
    ema: float = option(0.95, "EMA decay of the generator (lcm: of the target network)", "optimisation")
    batch_size: int = option(1, "videos per device per micro-batch", "optimisation")
    grad_accum: int | None = option(None, "micro-batches per step (default: the preset; 4, lcm: 1)", "optimisation")
    gradient_checkpointing: bool = option(True, "G and the frozen D backbone", "optimisation")
    # output
    export_weights: Literal["ema", "raw"] | None = option(
        None, "weights in OUT/export/unet: ema (lcm: the target network) or raw (the trained network; default: "
        "the preset; ema, lcm: raw)", "output", run_only=True)
    milestone_every: int = option(10000, "steps between milestones, exports kept beside the last checkpoints "
                                  "(OUT/milestones/step-XXXXXX/unet, 6.1 GB at full size); 0: none", "output",
                                  run_only=True)
    process_group_timeout: int = option(PROCESS_GROUP_TIMEOUT_S, "seconds a process waits for the others in a "
                                        "collective (barrier, all-reduce) before the run fails (accelerate's "
                                        "InitProcessGroupKwargs); must exceed the longest one-process pause: a "
                                        "checkpoint write (its time is logged), the export, an FVD evaluation",
                                        "output", run_only=True)
    # evaluation (FVD while training: sfv_train.evaluation; does not change the weights)
    fvd_every: int = option(-1, "steps between FVD evaluations of the exported generator (--export-weights: the EMA "
                            "by default) (and at the last step), logged to the console, logs/metrics.jsonl, "
                            "TensorBoard (eval/fvd), OUT/fvd_vs_step.png and OUT/fvd_best.json; 0: off; -1: auto "
                            "(--stack mini: every min(250, max_steps // 8) steps; otherwise off)", "evaluation",
                            run_only=True)
    fvd_videos: int = option(32, "videos of the fixed evaluation set (the first of the dataset's test split, "
                             "balanced over classes, as `sfv-bench run` selects them)", "evaluation", run_only=True)
    fvd_data: str = option("", "dataset of the evaluation set in UCF-101's layout (default: --data)", "evaluation",
                           run_only=True)
    fvd_split: Literal["test", "train"] = option(
        "test", "split of the evaluation set: test (what the tables report) or train (with --fvd-data a held-out "
        "validation set, e.g. `sfv-bench study`'s: choose settings there, not on test)", "evaluation",
        run_only=True)
    fvd_detector: str = option("", "FVD detector: toy | mini | stylegan-v | tats | PATH (default: the world's: mini "
                               "with --stack mini, toy with --stack tiny, stylegan-v otherwise)", "evaluation",
                               run_only=True)

    def resolved(self) -> "TrainConfig":
        """A checked copy with every default filled: types and choices (``validate``), the method's preset
        for options left at None, the run folder a ``--resume`` names, the world's dataset and size, the FVD
        schedule and detector, then the rules between options (UserError on bad input)."""
        c = validate(TrainConfig, self.to_dict())
        c._fill_preset()
        c._resolve_resume()
        c._fill_world_defaults()
        c._fill_fvd_defaults()
        c._check()
        parse_scales(c.lcm_guidance_first, "--lcm-guidance-first")
        parse_scales(c.lcm_guidance_last, "--lcm-guidance-last")
        c.data = str(Path(c.data).expanduser().absolute())   # one spelling per folder (resume compares it)
        return c

    def _fill_preset(self) -> None:
        for k, v in PRESETS[self.method].items():
            if getattr(self, k) is None:
                setattr(self, k, v)

    def _resolve_resume(self) -> None:
        """``--resume RUN`` -> out RUN, resume latest; ``--resume CKPT`` -> out: the run holding CKPT."""
        if self.resume in ("", "latest"):
            return
        path = Path(self.resume).expanduser()
        if run_folder(self.resume):
            if self.out and Path(self.out).expanduser().absolute() != path.absolute():
                raise UserError(f"--resume {path} is a run folder and --out {self.out} another one: drop --out")
            self.out, self.resume = str(path), "latest"
        elif (path / "state.json").is_file():
            self.out = self.out or str(path.absolute().parent.parent)
        else:
            raise UserError(f"--resume {path}: not a finished checkpoint folder (no state.json) nor a run "
                            f"folder (no config.json)")

    def _fill_world_defaults(self) -> None:
        """--stack tiny / mini: the world's synthetic dataset and generation size; else the paper's size."""
        if self.stack in ("tiny", "mini"):
            from sfv_core.data.synthetic import default_dataset_root
            from sfv_core.protocol import WORLDS, Protocol
            if not self.data:
                self.data = str(default_dataset_root(**WORLDS[self.stack].dataset))
            world = Protocol(**WORLDS[self.stack].protocol)
            self.width, self.height = self.width or world.gen_width, self.height or world.gen_height
        self.width, self.height = self.width or PAPER_TRAIN_SIZE[0], self.height or PAPER_TRAIN_SIZE[1]

    def _fill_fvd_defaults(self) -> None:
        from sfv_core.protocol import WORLDS

        if self.fvd_every < 0:                          # auto: on in the mini world only
            self.fvd_every = max(1, min(FVD_AUTO_EVERY, self.max_steps // 8)) if self.stack == "mini" else 0
        if not self.fvd_detector:
            self.fvd_detector = WORLDS.get(self.stack, WORLDS["ucf101"]).detector

    def _check(self) -> None:
        """The ranges and the rules between options (the choices are the fields' types)."""
        c = self
        checks = [
            (c.method != "lcm" or c.recon in LCM_RECON,
             f"--method lcm takes --recon {' or '.join(LCM_RECON)}, its consistency distance (got {c.recon!r})"),
            (c.huber_c is None or c.huber_c >= 0, f"--huber-c must be >= 0 (got {c.huber_c})"),
            (c.recon_weight >= 0, f"--lambda must be >= 0 (got {c.recon_weight})"),
            (c.width % 8 == 0 and c.height % 8 == 0 and c.width >= 16 and c.height >= 16,
             f"--width/--height must be multiples of 8, at least 16 (got {c.width}x{c.height})"),
            (c.num_frames >= 2 and c.fps >= 1, "--num-frames must be >= 2 and --fps >= 1"),
            (c.p_std != 0, "--p-std must not be 0"),
            (c.t_d >= 2, "--t-d must be >= 2"),
            (c.batch_size >= 1 and c.grad_accum >= 1 and c.max_steps >= 1,
             "--batch-size, --grad-accum, --max-steps must be >= 1"),
            (c.r1_every >= 1 and c.r1_gamma >= 0 and c.r1_eps > 0, "--r1-every >= 1, --r1-gamma >= 0, --r1-eps > 0"),
            (0 <= c.ema < 1, "--ema must be in [0, 1)"),
            (c.lr_g > 0 and c.lr_d > 0, "learning rates must be > 0"),
            (c.checkpoint_every >= 1 and c.log_every >= 1 and c.preview_every >= 0,
             "--checkpoint-every and --log-every must be >= 1, --preview-every >= 0"),
            (c.teacher_steps >= 1 and c.teacher_batch >= 1, "--teacher-steps and --teacher-batch must be >= 1"),
            (c.checkpoints_total_limit >= 0 and c.milestone_every >= 0,
             "--checkpoints-total-limit and --milestone-every must be >= 0"),
            (c.process_group_timeout >= 1, "--process-group-timeout must be >= 1 second"),
            (c.fvd_videos >= 2, f"--fvd-videos must be >= 2 (got {c.fvd_videos})"),
            (bool(c.data), f"--data is required with --stack {c.stack} (a folder of videos; only --stack tiny "
                           f"defaults to the synthetic dataset)"),
            (bool(c.out), "--out is required (the run folder)"),
        ]
        for ok, msg in checks:
            if not ok:
                raise UserError(msg)


RUN_ONLY = run_only_fields(TrainConfig)   # options a resume may change (they do not change the weights)


def parse_scales(text, flag: str) -> tuple[float, ...]:
    """Comma-separated guidance scales (``--lcm-guidance-first/-last``) -> floats, each finite and >= 0."""
    try:
        vals = tuple(float(v) for v in str(text).split(","))
    except ValueError:
        vals = ()
    if not vals or not all(math.isfinite(v) and v >= 0 for v in vals):
        raise UserError(f"{flag} takes comma-separated guidance scales >= 0 such as 1,1.25,1.5 (got {text!r})")
    return vals


def run_folder(resume: str) -> Path | None:
    """The run folder a ``--resume`` value names (a folder holding config.json, not a checkpoint's
    state.json), else None."""
    if resume in ("", "latest"):
        return None
    path = Path(resume).expanduser()
    return path if (path / "config.json").is_file() and not (path / "state.json").exists() else None


def read_config_json(path: Path) -> dict:
    """A config.json written by a run (UserError naming the file when it is unreadable or garbage)."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise UserError(f"{path} is not a readable run configuration ({str(e).splitlines()[0]}): restore it "
                        f"(a copy is in each checkpoints/step-XXXXXX/config.json) or choose another --out") from None
    if not isinstance(data, dict):
        raise UserError(f"{path} is not a run configuration (not a JSON object): restore it from a "
                        f"checkpoints/step-XXXXXX/config.json or choose another --out")
    return {**UNRECORDED_VALUES, **data}


# Options a run's config.json may lack (runs written before the option existed), with the value such a run
# was trained with (a resume keeps it)
UNRECORDED_VALUES = {"d_norm": "frames"}


def resume_defaults(resume: str, out: str) -> dict:
    """Option defaults of a resumed run: the config.json of the run (``--resume OUT``, ``--resume`` with
    ``--out OUT``) or of the checkpoint (``--resume CKPT``), without out/resume; {} when there is none.
    Options typed again override these."""
    if resume == "latest":
        folder = Path(out).expanduser() if out else None
    else:
        folder = Path(resume).expanduser() if resume else None
    if folder is None or not (folder / "config.json").is_file():
        return {}
    fields = TrainConfig.__dataclass_fields__
    return {k: v for k, v in read_config_json(folder / "config.json").items()
            if k in fields and k not in ("out", "resume")}


def resume_config(out, **changes) -> TrainConfig:
    """The configuration that continues the run in ``out``: its config.json with ``changes`` (run options
    such as ``max_steps``), what ``sfv-train --resume OUT --max-steps N`` builds."""
    values = resume_defaults(str(out), "")
    if not values:
        raise UserError(f"{out} holds no run (no config.json): start it with TrainConfig(out=...)")
    return TrainConfig(**{**values, **changes, "out": str(out), "resume": "latest"})
