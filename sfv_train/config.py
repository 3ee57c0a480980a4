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

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from sfv_core.env import PROCESS_GROUP_TIMEOUT_S
from sfv_core.errors import UserError
from sfv_core.protocol import GEN

METHODS = ("sfv", "ufogen", "ladd", "lcm")
HEAD_CHOICES = ("both", "spatial", "temporal")
D_NORM_CHOICES = ("videos", "frames", "none")
D_NOISE_CHOICES = ("lognormal-discrete", "next-level", "lognormal")
RECON_CHOICES = ("pseudo-huber", "mse", "diffusion", "none")
RECON_REDUCTIONS = ("video", "element")
R1_CHOICES = ("exact", "lazy", "approx", "none")
OPTIMIZERS = ("sm3", "adamw")
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
LCM_RECON = ("pseudo-huber", "mse")     # the consistency distances --method lcm takes
# Options that do not change the trained weights: they may differ between a run and its resume.
RUN_ONLY = {"out", "resume", "max_steps", "checkpoint_every", "checkpoints_total_limit", "log_every",
            "preview_every", "device", "latent_cache", "report_to", "progress", "export_weights",
            "fvd_every", "fvd_videos", "fvd_detector", "fvd_data", "fvd_split", "milestone_every",
            "process_group_timeout", "teacher_batch", "estimate_memory"}
FVD_AUTO_EVERY = 250      # --fvd-every -1 with --stack mini: every min(250, max_steps // 8) steps


def opt(default, help: str, group: str, **cli):
    """A TrainConfig field with what the command line needs (the parser is generated from these):
    ``help``, ``group``, and optionally ``choices``, ``flag`` (default --field-name), ``metavar``,
    ``negate`` (a store_false switch named by ``flag``)."""
    return field(default=default, metadata={"help": help, "group": group, **cli})


@dataclass
class TrainConfig:
    # run
    data: str = opt("", "folder of videos: a UCF-101 root (its train list is used) or any folder (--stack tiny: "
                    "default the synthetic dataset)", "run")
    out: str = opt("", "run folder (checkpoints, export, logs, previews)", "run")
    method: str = opt("sfv", "sfv / ufogen / ladd: latent adversarial training of a one-step generator; lcm: "
                      "AnimateLCM consistency distillation (sample it with `sfv-bench run --methods lcm:N`); sets "
                      "the presets below", "run", choices=METHODS)
    stack: str = opt("svd", "SVD stack: svd | svd-xt | tiny | mini | pipeline folder | HF repo id (cache only)", "run")
    mini_world: str = opt("", "the mini world's folder that --stack mini and --fvd-detector mini read (default: the "
                          "shipped one, or $SFV_MINI_WORLD)", "run")
    resume: str = opt("", "continue a run: alone (with --out) or with a run folder: from its newest intact checkpoint, "
                      "with the run's config.json as defaults (change only run options such as --max-steps); "
                      "with a checkpoint folder: from that checkpoint", "run", nargs="?", const="latest",
                      metavar="OUT|CKPT")
    max_steps: int = opt(50000, "optimisation steps (the run ends there)", "run")
    seed: int = opt(0, "heads init, noise, data order, conditioning noise", "run")
    device: str = opt("auto", "auto | cpu | cuda[:N] (under accelerate launch: set by accelerate)", "run")
    estimate_memory: bool = opt(False, "print this run's per-GPU memory (weights, gradients, optimiser state, EMA, "
                                "D, VAE/CLIP, activations, each R1) counted on fake tensors from the stack's "
                                "configurations (no GPU, weights or data needed; minutes at full size) and exit",
                                "run", nargs="?", const=True, metavar="on|off")
    # data
    split: str = opt("train", "UCF-101 split list (UCF-101 roots only)", "data", choices=("train", "test", "all"))
    fold: int = opt(1, "UCF-101 split fold", "data", choices=(1, 2, 3))
    width: int = opt(0, "training width (0: the paper's 768, or the world's size with --stack mini / tiny)", "data")
    height: int = opt(0, "training height (0: the paper's 448, or the world's size with --stack mini / tiny)", "data")
    resize: str = opt("stretch", "how source frames become width x height: stretch (the benchmark's default "
                      "geometry) or cover-center-crop", "data", choices=("stretch", "cover-center-crop"))
    num_frames: int = opt(GEN.num_frames, "frames per clip", "data")
    fps: int = opt(GEN.fps, "clip frame rate (also the fps conditioning)", "data")
    motion_bucket_id: int = opt(GEN.motion_bucket_id, "added time id", "data")
    noise_aug_strength: float = opt(GEN.noise_aug_strength, "noise on the conditioning image", "data")
    latent_cache: str = opt("", "latent cache folder (default: $SFV_BENCH_CACHE/train-latents)", "data")
    teacher_steps: int = opt(25, "LADD: steps of the svd teacher", "data")
    teacher_max_guidance: float = opt(3.0, "LADD: teacher CFG max scale", "data")
    teacher_batch: int = opt(4, "LADD: videos per teacher call (x2 with CFG), in the run's precision", "data")
    # objective
    heads: str = opt("both", "discriminator heads (Table 2)", "objective", choices=HEAD_CHOICES)
    d_norm: str = opt("frames", "the heads' local batch norm: frames (StyleGAN-T's: groups of 8 rows, i.e. frames or "
                      "positions of one video, real and fake in separate calls), videos (groups of up to 8 whole "
                      "videos, half real half fake, one D call: D's loss falls faster, but the validation FVD of the "
                      "mini-world study was worse), none", "objective", choices=D_NORM_CHOICES)
    d_noise: str | None = opt(None, "noise before D (default: the method preset)", "objective", choices=D_NOISE_CHOICES)
    p_mean: float | None = opt(None, "lognormal P_mean (Table 3; default: the method preset)", "objective")
    p_std: float | None = opt(None, "lognormal P_std, sign ignored (default: the method preset)", "objective")
    t_d: int = opt(1000, "Karras levels of the discretised lognormal", "objective")
    recon: str | None = opt(None, "reconstruction loss of x0_hat against x0: pseudo-huber (SF-V eq. 9), mse, "
                            "diffusion (the teacher's own v-space denoising loss, (s^2+1)/s^2 (x0_hat-x0)^2: UFOGen's), "
                            "none (default: the method preset)", "objective", choices=RECON_CHOICES)
    recon_reduction: str | None = opt(None, "video: over all elements of a video (pseudo-huber of the whole-video L2 "
                                      "norm; sum of squares), element: mean over elements (default: the preset; "
                                      "SF-V element since the mini-world study: the whole-video form's gradient on "
                                      "x0_hat is lambda per video at any size while the adversarial one falls as "
                                      "1/sqrt(elements), the per-element mean scales like it, so lambda means the "
                                      "same at every size; the paper-literal reading is video with --lambda 0.1)",
                                      "objective", choices=RECON_REDUCTIONS)
    recon_weight: float | None = opt(None, "reconstruction weight lambda (default: the preset; SF-V 0.01 with the per-element reduction, "
                                     "UFOGen 1)",
                                     "objective", flag="--lambda")
    huber_c: float | None = opt(None, "pseudo-Huber c (default: 0.00054 sqrt(d), d = elements per video; lcm: "
                                "0.001, AnimateLCM's)", "objective")
    r1: str = opt("approx", "R1 on real inputs: approx (finite difference (s(x + eps n) - s(x)) / eps: one more D "
                  "forward; fits 80 GB at 768x448), exact (double backward through D under the math attention "
                  "kernel: ~160 GiB per GPU at 768x448, see --estimate-memory), lazy (exact every --r1-every), none",
                  "objective", choices=R1_CHOICES)
    r1_every: int = opt(16, "k of --r1 lazy (penalty weighted by k)", "objective")
    r1_gamma: float = opt(1e-5, "R1 weight gamma", "objective")
    r1_eps: float = opt(0.01, "perturbation of the approximate R1", "objective")
    cmap_dim: int = opt(64, "projection dimension of the heads", "objective")
    lcm_guidance_first: str = opt("1,1.25,1.5", "lcm: the teacher's CFG scale at the first frame, drawn per video "
                                  "from these (comma-separated; AnimateLCM's)", "objective")
    lcm_guidance_last: str = opt("2,2.25,2.5", "lcm: the teacher's CFG scale at the last frame (linear over the "
                                 "frames in between), drawn per video from these", "objective")
    # optimisation
    optimizer: str | None = opt(None, "SM3 (pytorch-optimizer) or AdamW (default: the preset; sm3, lcm: adamw)",
                                "optimisation", choices=OPTIMIZERS)
    lr_g: float | None = opt(None, "generator learning rate (default: the preset; 1e-5, lcm: 1e-6)", "optimisation")
    lr_d: float = opt(1e-4, "discriminator heads learning rate", "optimisation")
    momentum: float | None = opt(None, "SM3 momentum / AdamW beta1 (default: the preset; 0.5, lcm: 0.9)",
                                 "optimisation")
    beta: float = opt(0.999, "SM3 beta / AdamW beta2", "optimisation")
    weight_decay: float | None = opt(None, "AdamW only (default: the preset; 0, lcm: 1e-3)", "optimisation")
    max_grad_norm: float = opt(0.0, "0: no clipping (norms are still logged)", "optimisation")
    ema: float = opt(0.95, "EMA decay of the generator (lcm: of the target network)", "optimisation")
    batch_size: int = opt(1, "videos per device per micro-batch", "optimisation")
    grad_accum: int | None = opt(None, "micro-batches per step (default: the preset; 4, lcm: 1)", "optimisation")
    mixed_precision: str = opt("auto", "bf16 autocast (auto: on CUDA only)", "optimisation",
                               choices=("auto", "no", "bf16"))
    gradient_checkpointing: bool = opt(True, "G and the frozen D backbone", "optimisation", metavar="on|off")
    # output
    checkpoint_every: int = opt(1000, "steps between checkpoints (and at the end)", "output")
    log_every: int = opt(10, "steps between log lines / tracker points", "output")
    preview_every: int = opt(1000, "0: no preview videos", "output")
    report_to: str = opt("auto", "accelerate tracker (auto: tensorboard when installed)", "output",
                         choices=("auto", "tensorboard", "none"))
    export_weights: str | None = opt(None, "weights in OUT/export/unet: ema (lcm: the target network) or raw (the "
                                     "trained network; default: the preset; ema, lcm: raw)", "output",
                                     choices=("ema", "raw"))
    progress: bool = opt(True, "no progress bar", "output", flag="--no-progress", negate=True)
    # what a run keeps and how long a process waits for the others (README, Training: checkpoints)
    checkpoints_total_limit: int = opt(2, "keep the newest K checkpoints (0: all); the start-up log says what one "
                                       "weighs (18.7 GB at full size with SM3)", "output")
    milestone_every: int = opt(10000, "steps between milestones, exports kept beside the last checkpoints "
                               "(OUT/milestones/step-XXXXXX/unet, 6.1 GB at full size); 0: none", "output")
    process_group_timeout: int = opt(PROCESS_GROUP_TIMEOUT_S, "seconds a process waits for the others in a collective (barrier, "
                                     "all-reduce) before the run fails (accelerate's InitProcessGroupKwargs); "
                                     "must exceed the longest one-process pause: a checkpoint write (its time is "
                                     "logged), the export, an FVD evaluation", "output")
    # evaluation (FVD while training: sfv_train.evaluation; does not change the weights)
    fvd_every: int = opt(-1, "steps between FVD evaluations of the exported generator (--export-weights: the EMA "
                         "by default) (and at the last step), logged "
                         "to the console, logs/metrics.jsonl, TensorBoard (eval/fvd), OUT/fvd_vs_step.png and "
                         "OUT/fvd_best.json; 0: off; -1: auto (--stack mini: every min(250, max_steps // 8) "
                         "steps; otherwise off)", "evaluation")
    fvd_videos: int = opt(32, "videos of the fixed evaluation set (the first of the dataset's test split, "
                          "balanced over classes, as `sfv-bench run` selects them)", "evaluation")
    fvd_data: str = opt("", "dataset of the evaluation set in UCF-101's layout (default: --data)", "evaluation")
    fvd_split: str = opt("test", "split of the evaluation set: test (what the tables report) or train (with --fvd-data "
                         "a held-out validation set, e.g. `sfv-bench study`'s: choose settings there, not on test)",
                         "evaluation", choices=("test", "train"))
    fvd_detector: str = opt("", "FVD detector: toy | mini | stylegan-v | tats | PATH (default: the world's: mini "
                            "with --stack mini, toy with --stack tiny, stylegan-v otherwise)", "evaluation")

    def resolved(self) -> "TrainConfig":
        """Fill preset values for options left at None and validate (UserError on bad input)."""
        if self.method not in METHODS:
            raise UserError(f"unknown --method {self.method!r}; valid: {', '.join(METHODS)}")
        c = dataclasses.replace(self)
        for k, v in PRESETS[c.method].items():
            if getattr(c, k) is None:
                setattr(c, k, v)
        if c.resume not in ("", "latest"):          # a run folder (-> latest) or a checkpoint folder
            path = Path(c.resume).expanduser()
            if run_folder(c.resume):
                if c.out and Path(c.out).expanduser().absolute() != path.absolute():
                    raise UserError(f"--resume {path} is a run folder and --out {c.out} another one: drop --out")
                c.out, c.resume = str(path), "latest"
            elif (path / "state.json").is_file():
                c.out = c.out or str(path.absolute().parent.parent)
            else:
                raise UserError(f"--resume {path}: not a finished checkpoint folder (no state.json) nor a run "
                                f"folder (no config.json)")
        if c.stack in ("tiny", "mini"):
            from sfv_core.data.synthetic import default_dataset_root
            from sfv_core.protocol import WORLDS, Protocol
            if not c.data:
                c.data = str(default_dataset_root(**WORLDS[c.stack].dataset))
            world = Protocol(**WORLDS[c.stack].protocol)
            c.width, c.height = c.width or world.gen_width, c.height or world.gen_height
        c.width, c.height = c.width or 768, c.height or 448
        if c.fvd_every < 0:                          # auto: on in the mini world only
            c.fvd_every = max(1, min(FVD_AUTO_EVERY, c.max_steps // 8)) if c.stack == "mini" else 0
        if not c.fvd_detector:
            from sfv_core.protocol import WORLDS
            c.fvd_detector = WORLDS.get(c.stack, WORLDS["ucf101"]).detector
        checks = [
            (c.method == "lcm" or c.d_noise in D_NOISE_CHOICES,
             f"--d-noise must be one of {', '.join(D_NOISE_CHOICES)} (got {c.d_noise!r})"),
            (c.method != "lcm" or c.recon in LCM_RECON,
             f"--method lcm takes --recon {' or '.join(LCM_RECON)}, its consistency distance (got {c.recon!r})"),
            (c.huber_c is None or c.huber_c >= 0, f"--huber-c must be >= 0 (got {c.huber_c})"),
            (c.recon in RECON_CHOICES, f"--recon must be one of {', '.join(RECON_CHOICES)} (got {c.recon!r})"),
            (c.recon_reduction in RECON_REDUCTIONS, f"--recon-reduction must be video or element (got {c.recon_reduction!r})"),
            (c.recon_weight >= 0, f"--lambda must be >= 0 (got {c.recon_weight})"),
            (c.heads in HEAD_CHOICES, f"--heads must be one of {', '.join(HEAD_CHOICES)} (got {c.heads!r})"),
            (c.fvd_split in ("test", "train"), f"--fvd-split must be test or train (got {c.fvd_split!r})"),
            (c.d_norm in D_NORM_CHOICES, f"--d-norm must be one of {', '.join(D_NORM_CHOICES)} (got {c.d_norm!r})"),
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
            (c.teacher_steps >= 1 and c.teacher_batch >= 1, "--teacher-steps and --teacher-batch must be >= 1"),
            (c.checkpoints_total_limit >= 0 and c.milestone_every >= 0,
             "--checkpoints-total-limit and --milestone-every must be >= 0"),
            (c.process_group_timeout >= 1, "--process-group-timeout must be >= 1 second"),
            (c.report_to in ("auto", "tensorboard", "none"), "--report-to must be auto, tensorboard or none"),
            (c.fvd_videos >= 2, f"--fvd-videos must be >= 2 (got {c.fvd_videos})"),
            (bool(c.data), f"--data is required with --stack {c.stack} (a folder of videos; only --stack tiny "
                           f"defaults to the synthetic dataset)"),
            (bool(c.out), "--out is required (the run folder)"),
        ]
        for ok, msg in checks:
            if not ok:
                raise UserError(msg)
        parse_scales(c.lcm_guidance_first, "--lcm-guidance-first")
        parse_scales(c.lcm_guidance_last, "--lcm-guidance-last")
        c.data = str(Path(c.data).expanduser().absolute())   # one spelling per folder (resume compares it)
        return c

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def compared(self) -> dict:
        """The values a resumed run must share with the run it continues."""
        return {k: v for k, v in self.to_dict().items() if k not in RUN_ONLY}


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
    return {**LEGACY, **data}


# Options added after runs were written, with the value those runs were trained with (a resume keeps it)
LEGACY = {"d_norm": "frames"}


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
