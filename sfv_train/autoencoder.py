"""The mini world's VAE trainer: ``AutoencoderKLTemporalDecoder`` (``MINI_CONFIGS["vae"]``) learns to
reconstruct the pool's clips (``sfv_train.pool``), in two stages chosen by ``VAEConfig.stage``:

``frames``  random single frames of the pool (batch 8, lr 1e-3), decoded with ``num_frames=1``. The
            frames of one clip are nearly redundant, so a batch of distinct frames learns far more per
            step than whole clips (the mini-world probe: ~30.7 dB held-out PSNR at 32x32 after ~9.8k
            steps, 25 min on one thread; whole clips from scratch stalled near 19 dB). With T=1 the
            side taps of the temporal decoder's Conv3d(3,1,1) layers get no gradient, so a random
            init (``zero_temporal``) sets them to zero first: the decoder then starts, and stays,
            frame-wise, and the export decodes clips at T=14 as well as frames (probe: 30.2 dB at
            T=14, better than a further clip stage: 29.2 dB).
``clips``   whole clips (batch 2, lr 3e-4), decoded with ``num_frames=14`` so the temporal decoder
            learns its frame mixing; started from the frames stage's export (``init``). Optional.

Loss: MSE of the reconstruction of the posterior mode + ``kl_weight`` x KL. AdamW, linear warm-up,
cosine decay to ``min_lr_ratio`` x lr at ``max_steps`` (the lr is a function of the step, so a resume
needs no scheduler state), gradients clipped. The data order comes from the loop's generator
(``self.gen``), so a resume continues exactly. Every ``eval_every`` steps and at the end: the
held-out PSNR (uint8 frames, mean over frames; per class when labels are given) as its own line in
logs/metrics.jsonl and as ``eval/...`` in TensorBoard.

Export: ``out/export/vae`` (``save_pretrained``, safetensors; scaling_factor left as it is),
``out/export/sfv_train.json`` and ``out/export/quality.json``: held-out PSNR decoded with
``num_frames=1`` and with the clip length, and mean / std (overall and per channel) of the latents'
posterior mode over the pool; the build sets ``scaling_factor = 1 / latent_std``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from sfv_core.errors import UserError
from sfv_core.fsutil import atomic_write_json

from .checkpoint import export_model
from .loop import TrainLoop
from .loop_config import LoopConfig

STAGES = {"frames": (8, 1e-3), "clips": (2, 3e-4)}     # stage -> default (batch size, lr)


@dataclass
class VAEConfig(LoopConfig):
    stage: str = "frames"         # frames (single frames, num_frames=1) | clips (whole clips, num_frames=T)
    init: str = ""                # VAE folder (or a run folder with export/vae) to start from; "" = random init
    batch_size: int = 0           # frames or clips per step; 0 = 8 (frames) / 2 (clips)
    lr: float = 0.0               # 0 = 1e-3 (frames) / 3e-4 (clips)
    warmup_steps: int = 100
    min_lr_ratio: float = 0.05    # the cosine ends at this fraction of lr
    weight_decay: float = 0.0
    kl_weight: float = 1e-6
    max_grad_norm: float = 1.0
    eval_every: int = 500
    std_clips: int = 0            # pool clips whose latents give quality.json's statistics; 0 = all
    zero_temporal: bool = True    # random init only: zero the temporal Conv3d side taps (see the module doc)

    def resolved(self):
        c = super().resolved()
        if c.stage not in STAGES:
            raise UserError(f"VAE stage {c.stage!r} is not one of {', '.join(STAGES)}")
        bs, lr = STAGES[c.stage]
        c.batch_size = c.batch_size or bs
        c.lr = c.lr or lr
        if c.batch_size < 1 or c.lr < 0 or c.warmup_steps < 0 or c.eval_every < 1 or c.std_clips < 0:
            raise UserError("VAE training: batch_size and eval_every must be >= 1, lr, warmup_steps and "
                            "std_clips >= 0")
        if c.init:
            c.init = str(vae_folder(c.init))
        return c


def warmup_cosine(step: int, warmup: int, total: int, floor: float) -> float:
    """Learning-rate factor at ``step`` (0-based): linear warm-up over ``warmup`` steps, then a cosine
    from 1 down to ``floor`` at ``total`` (``floor`` 1: constant after the warm-up)."""
    if step < warmup:
        return (step + 1) / warmup
    t = min(1.0, (step - warmup) / max(1, total - warmup))
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * t))


def vae_folder(path) -> Path:
    """The diffusers VAE folder that ``path`` names: the folder itself, or a run / export folder holding one."""
    path = Path(path).expanduser()
    for d in (path, path / "vae", path / "export" / "vae"):
        if (d / "config.json").is_file() and any(d.glob("diffusion_pytorch_model.*")):
            return d.absolute()
    raise UserError(f"{path} holds no diffusers VAE (config.json, vae/ or export/vae/): pass a VAE run's export")


@torch.no_grad()
def zero_temporal_taps(vae) -> int:
    """Zero the first and last time taps of every Conv3d with kernel (3, 1, 1): the layer then mixes no
    frames until trained on clips. Returns how many layers it changed."""
    n = 0
    for m in vae.modules():
        if isinstance(m, torch.nn.Conv3d) and tuple(m.kernel_size) == (3, 1, 1):
            m.weight[:, :, 0].zero_()
            m.weight[:, :, 2].zero_()
            n += 1
    return n


def load_vae(path):
    from diffusers import AutoencoderKLTemporalDecoder

    folder = vae_folder(path)
    try:
        return AutoencoderKLTemporalDecoder.from_pretrained(folder, local_files_only=True)
    except (OSError, ValueError) as e:
        raise UserError(f"could not load the VAE in {folder}: {str(e).splitlines()[0]}") from None


def check_clips(clips, what: str) -> np.ndarray:
    """A uint8 (N, T, H, W, 3) array of clips, or a one-line error."""
    if not isinstance(clips, np.ndarray) or clips.dtype != np.uint8 or clips.ndim != 5 or clips.shape[-1] != 3:
        got = f"{clips.dtype} {clips.shape}" if isinstance(clips, np.ndarray) else type(clips).__name__
        raise UserError(f"the {what} clips must be a uint8 array (N, T, H, W, 3), got {got}")
    if len(clips) == 0:
        raise UserError(f"the {what} clips are empty")
    return clips


def to_pixels(u8: np.ndarray) -> torch.Tensor:
    """uint8 (..., H, W, 3) -> float32 (B, 3, H, W) in [-1, 1], frames flattened (as the pipeline scales)."""
    from methods.models.conditioning import images_to_float

    u8 = np.array(u8)       # a copy: the pool may be a read-only memory map
    return images_to_float(u8.reshape(-1, *u8.shape[-3:])) * 2.0 - 1.0


def psnr(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-frame PSNR (dB) of uint8 frames (..., H, W, 3)."""
    d = (a.astype(np.float64) - b.astype(np.float64)) ** 2
    mse = d.reshape(*d.shape[:-3], -1).mean(-1)
    return 10 * np.log10(255.0 ** 2 / np.maximum(mse, 1e-10))


@torch.no_grad()
def reconstruct(vae, clips: np.ndarray, num_frames: int, device, chunk: int = 8) -> np.ndarray:
    """uint8 clips (M, T, H, W, 3) through encode (posterior mode) and decode -> uint8 of the same shape."""
    from methods.models.conditioning import frames_to_uint8

    out = []
    for i in range(0, len(clips), chunk):
        c = clips[i:i + chunk]
        y = vae.decode(vae.encode(to_pixels(c).to(device)).latent_dist.mode(), num_frames=num_frames).sample
        out.append(frames_to_uint8(y.reshape(*c.shape[:2], *y.shape[1:])))
    return np.concatenate(out)


def heldout_psnr(vae, clips: np.ndarray, labels, num_frames: int, device) -> dict:
    """{'psnr': mean over clips and frames, 'psnr_class_<label>': the same per class (with labels)}."""
    p = psnr(reconstruct(vae, clips, num_frames, device), np.asarray(clips)).mean(1)
    out = {"psnr": float(p.mean())}
    if labels is not None:
        for lab in np.unique(labels):
            out[f"psnr_class_{lab}"] = float(p[labels == lab].mean())
    return out


@torch.no_grad()
def latent_stats(vae, clips: np.ndarray, device, chunk: int = 8) -> dict:
    """Mean and std (overall, per channel) of the posterior mode of every frame of ``clips``."""
    s = s2 = 0.0
    n = 0
    for i in range(0, len(clips), chunk):
        z = vae.encode(to_pixels(clips[i:i + chunk]).to(device)).latent_dist.mode().double()
        s = s + z.sum(dim=(0, 2, 3))
        s2 = s2 + z.pow(2).sum(dim=(0, 2, 3))
        n += z[:, 0].numel()
    mean, sq = s / n, s2 / n
    total_mean = float(mean.mean())
    return {"latent_mean": total_mean, "latent_std": math.sqrt(float(sq.mean()) - total_mean ** 2),
            "latent_channel_mean": mean.tolist(), "latent_channel_std": (sq - mean ** 2).sqrt().tolist()}


class AutoencoderTrainer(TrainLoop):
    """One VAE stage (``cfg.stage``) on the pool; see the module doc.

    ``pool``: uint8 (N, T, H, W, 3) training clips; ``heldout``: uint8 (M, T, H, W, 3) evaluation clips;
    ``labels``: optional (M,) class of each held-out clip (per-class PSNR)."""

    name = "vae"
    postfix = ("mse",)
    tracker_names = {"mse": "loss/mse", "kl": "loss/kl", "loss": "loss/total"}

    def __init__(self, cfg: VAEConfig, pool, heldout, labels=None):
        super().__init__(cfg)
        self.pool = check_clips(pool, "pool")
        self.heldout = check_clips(heldout, "held-out")
        self.labels = None if labels is None else np.asarray(labels)
        if self.labels is not None and self.labels.shape != (len(heldout),):
            raise UserError(f"labels: one per held-out clip ({len(heldout)}), got shape {self.labels.shape}")
        self.num_frames = 1 if self.cfg.stage == "frames" else self.pool.shape[1]
        self.desc = f"vae {self.cfg.stage}"

    def build(self) -> None:
        from diffusers import AutoencoderKLTemporalDecoder

        from methods.models.configs import MINI_CONFIGS

        cfg = self.cfg
        if self.world > 1:
            raise UserError("the mini-world trainers run in one process: launch without accelerate's multi-process")
        if cfg.init:
            vae = load_vae(cfg.init)
        else:
            torch.manual_seed(cfg.seed)
            vae = AutoencoderKLTemporalDecoder.from_config(MINI_CONFIGS["vae"])
            if cfg.zero_temporal:
                zero_temporal_taps(vae)
        self.vae = vae.to(self.device).train().requires_grad_(True)
        self.opt = torch.optim.AdamW(self.vae.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.log(f"vae {cfg.stage}: {len(self.pool)} pool clips, batch {cfg.batch_size} "
                 f"{'frames' if cfg.stage == 'frames' else 'clips'}, lr {cfg.lr:g}, "
                 f"{'init ' + cfg.init if cfg.init else 'random init'}; step {self.step} -> {cfg.max_steps}")

    def checkpoint_parts(self) -> tuple[dict, dict]:
        return {"vae": self.vae}, {"optimizer_vae": self.opt}

    def batch(self) -> np.ndarray:
        """The step's uint8 frames (B, H, W, 3) or clips (B, T, H, W, 3), drawn without replacement."""
        n, t = self.pool.shape[:2]
        if self.cfg.stage == "frames":
            pick = torch.randperm(n * t, generator=self.gen)[:self.cfg.batch_size].numpy()
            return self.pool[pick // t, pick % t]
        return self.pool[np.sort(torch.randperm(n, generator=self.gen)[:self.cfg.batch_size].numpy())]

    def train_step(self) -> dict:
        cfg = self.cfg
        lr = cfg.lr * warmup_cosine(self.step, cfg.warmup_steps, cfg.max_steps, cfg.min_lr_ratio)
        for g in self.opt.param_groups:
            g["lr"] = lr
        x = to_pixels(self.batch()).to(self.device)
        with self.autocast():
            post = self.vae.encode(x).latent_dist
            y = self.vae.decode(post.mode(), num_frames=self.num_frames).sample
        mse = (y.float() - x).pow(2).mean()
        kl = post.kl().float().mean()
        loss = mse + cfg.kl_weight * kl
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        m = {"loss": loss.item(), "mse": mse.item(), "kl": kl.item(),
             "grad_norm_vae": self.clip_grad(self.vae.parameters(), cfg.max_grad_norm)}
        self.opt.step()
        self.step += 1
        if self.step % cfg.eval_every == 0 or self.step == cfg.max_steps:
            self.evaluate()
        return m

    def evaluate(self) -> dict:
        """Held-out PSNR at this stage's num_frames: its own metrics.jsonl line, eval/... in TensorBoard."""
        self.vae.eval()
        ev = heldout_psnr(self.vae, self.heldout, self.labels, self.num_frames, self.device)
        self.vae.train()
        self.acc.log({f"eval/{k.replace('_class_', '/class_')}": v for k, v in ev.items()}, step=self.step)
        self.append_metrics(ev)
        self.log(f"step {self.step}: held-out PSNR {ev['psnr']:.2f} dB (num_frames {self.num_frames})")
        return ev

    def quality(self) -> dict:
        """quality.json: held-out PSNR with num_frames 1 and T (overall, per class), latent statistics."""
        self.vae.eval()
        q = {"stage": self.cfg.stage, "steps": self.step, "heldout_clips": len(self.heldout)}
        for key, frames in (("frames", 1), ("clips", self.heldout.shape[1])):
            ev = heldout_psnr(self.vae, self.heldout, self.labels, frames, self.device)
            q[f"psnr_{key}"] = ev.pop("psnr")
            if ev:
                q[f"psnr_{key}_per_class"] = {k.removeprefix("psnr_class_"): v for k, v in ev.items()}
        clips = self.pool[:self.cfg.std_clips] if self.cfg.std_clips else self.pool
        q["latent_clips"] = len(clips)
        q.update(latent_stats(self.vae, clips, self.device))
        self.vae.train()
        return q

    def export(self) -> Path:
        """out/export/vae + sfv_train.json (atomically), then out/export/quality.json."""
        cfg = self.cfg
        q = self.quality()
        path = export_model(self.out, self.acc, self.vae, "vae", {
            "trainer": "vae", "stage": cfg.stage, "train_steps": self.step, "vae": "vae", "quality": q,
            "config": cfg.to_dict()})
        atomic_write_json(path / "quality.json", q)
        self.log(f"exported {path / 'vae'}: held-out PSNR {q['psnr_frames']:.2f} dB (num_frames 1), "
                 f"{q['psnr_clips']:.2f} dB (num_frames {self.heldout.shape[1]}); latent std {q['latent_std']:.4g}")
        return path
