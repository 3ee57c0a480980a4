"""The mini world's teacher: an SVD UNet trained as SVD is, on the pool's clips (``sfv_train.pool``).

EDM with SVD's v-parameterisation (sigma_data = 1; scalings and the Denoiser from
``methods.models.edm``, so the maths has one home): ln sigma ~ N(p_mean, p_std^2), sigma clipped to
[0.002, 700], x = x0 + sigma eps, loss = mean squared error of the UNet output F against the
v-target F* = (x0 - c_skip x) / c_out (= the x0 error weighted by (sigma^2 + 1) / sigma^2).

Data: x0 = vae.encode(frames).latent_dist.mode() * scaling_factor for every pool clip, and the CLIP
embedding of each clip's frame 0 (the stack's frozen image encoder, as ``clip_embeddings`` computes
it), both encoded ONCE and cached in ``out/latents.safetensors`` under a key of the VAE's and the
image encoder's weights (sha256), the scaling factor and the pool's bytes; another key re-encodes.
The image latent is the UNSCALED posterior mode of frame 0 + noise_aug_strength x noise, as
``encode_condition`` computes it; it is encoded afresh at every step with newly drawn noise (16
frames of 32x32 through the encoder: ~5% of a step at batch 16), so the teacher sees new augmentation
noise every time. added_time_ids = [fps - 1, motion_bucket_id, noise_aug_strength]. Conditioning
dropout: with probability ``cond_dropout`` a clip's embedding AND image latent are both zero (the
pipeline's unconditional branch for classifier-free guidance). All randomness comes from the loop's
generator, so a resume continues exactly.

The EMA of the weights (decay min(ema_decay, (1 + step) / (10 + step))) is exported as
``out/export/unet`` (``save_pretrained``) with ``out/export/sfv_train.json``. Logged: the loss, the
loss per sigma bucket (buckets present in the step's batch), and every ``eval_every`` steps and at
the end the loss of the model and the EMA at fixed sigmas on fixed clips and noise (held-out clips
when given) -- a noise-free curve.
"""
from __future__ import annotations

import copy
import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from methods.models.edm import SIGMA_MAX, SIGMA_MIN, Denoiser, scalings
from sfv_core.errors import UserError
from sfv_core.fsutil import atomic_path, sha256_json

from .autoencoder import check_clips, load_vae, to_pixels, vae_folder, warmup_cosine
from .checkpoint import export_model
from .ema import ema_update
from .loop import TrainLoop
from .loop_config import LoopConfig

BUCKETS = (0.5, 2.0, 8.0)                    # sigma bucket edges of the per-bucket training loss
VAL_SIGMAS = (0.05, 0.3, 1.0, 3.0, 10.0)     # the fixed-sigma evaluation


def _bucket_names() -> list[str]:
    edges = ["0", *(f"{e:g}" for e in BUCKETS)]
    return [f"{lo}-{hi}" for lo, hi in zip(edges, edges[1:])] + [f"{BUCKETS[-1]:g}+"]


@dataclass
class DiffusionConfig(LoopConfig):
    stack: str = ""                 # pipeline folder: frozen image encoder + feature extractor, the UNet to train, the VAE
    vae: str = ""                   # a VAE folder replacing the stack's (e.g. a VAE run's export); "" = the stack's
    scaling_factor: float = 0.0     # latents = posterior mode x this; 0 = the VAE config's scaling_factor
    batch_size: int = 16
    lr: float = 3e-4
    warmup_steps: int = 100
    min_lr_ratio: float = 1.0       # cosine decay to this fraction of lr at max_steps; 1 = constant
    weight_decay: float = 0.01
    max_grad_norm: float = 1.0
    p_mean: float = 0.7             # ln sigma ~ N(p_mean, p_std^2)
    p_std: float = 1.6
    cond_dropout: float = 0.1
    noise_aug_strength: float = 0.02
    fps: int = 7
    motion_bucket_id: int = 127
    ema_decay: float = 0.999
    eval_every: int = 500
    eval_clips: int = 16

    def resolved(self):
        c = super().resolved()
        if not c.stack:
            raise UserError("the diffusion trainer needs a stack folder (stack): the image encoder and the UNet")
        if c.batch_size < 1 or c.eval_every < 1 or c.eval_clips < 1 or c.p_std <= 0 or c.lr < 0:
            raise UserError("diffusion training: batch_size, eval_every and eval_clips must be >= 1, p_std > 0, lr >= 0")
        if not 0 <= c.cond_dropout < 1 or not 0 <= c.ema_decay < 1:
            raise UserError("diffusion training: cond_dropout and ema_decay must be in [0, 1)")
        if c.vae:
            c.vae = str(vae_folder(c.vae))
        return c


def module_sha256(module) -> str:
    """sha256 of a model's config and weights (names and bytes)."""
    config = module.config
    h = hashlib.sha256(sha256_json(config.to_dict() if hasattr(config, "to_dict") else dict(config)).encode())
    for k, v in sorted(module.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


class DiffusionTrainer(TrainLoop):
    """The teacher UNet of a stack on the pool; see the module doc.

    ``pool``: uint8 (N, T, H, W, 3) training clips; ``heldout``: optional uint8 (M, T, H, W, 3) clips
    for the fixed-sigma evaluation (default: the pool's first ``eval_clips``)."""

    name = "diffusion"
    postfix = ("loss",)
    tracker_names = {"loss": "loss/v", **{f"loss_sigma_{b}": f"loss_sigma/{b}" for b in _bucket_names()}}

    def __init__(self, cfg: DiffusionConfig, pool, heldout=None):
        super().__init__(cfg)
        self.pool = check_clips(pool, "pool")
        self.heldout = None if heldout is None else check_clips(heldout, "held-out")
        self.desc = "teacher"

    # ------------------------------------------------------------------------------- setup
    def build(self) -> None:
        from methods.models.stacks import load_pipeline

        cfg, dev = self.cfg, self.device
        if self.world > 1:
            raise UserError("the mini-world trainers run in one process: launch without accelerate's multi-process")
        pipe = load_pipeline(cfg.stack, device=dev, dtype=torch.float32)
        self.vae = (load_vae(cfg.vae) if cfg.vae else pipe.vae).to(dev).eval().requires_grad_(False)
        self.clip = pipe.image_encoder.eval().requires_grad_(False)
        self.clip_norm = (pipe.feature_extractor.image_mean, pipe.feature_extractor.image_std)
        self.scale = cfg.scaling_factor or float(self.vae.config.scaling_factor)
        self.unet = pipe.unet.train().requires_grad_(True)
        if self.unet.config.addition_time_embed_dim * 3 != self.unet.add_embedding.linear_1.in_features:
            raise UserError(f"{cfg.stack}: the UNet does not take 3 added time ids")
        self.ema = copy.deepcopy(self.unet).eval().requires_grad_(False)
        self.opt = torch.optim.AdamW(self.unet.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.time_ids = torch.tensor([[cfg.fps - 1, cfg.motion_bucket_id, cfg.noise_aug_strength]], device=dev)
        self.latents, self.embeds = self.encode_pool()
        ev = self.heldout if self.heldout is not None else self.pool
        self.eval_clips = np.array(ev[:cfg.eval_clips])
        self.eval_latents, self.eval_embeds = self.encode(self.eval_clips)
        self.log(f"teacher: {len(self.pool)} pool clips, latents {tuple(self.latents.shape[1:])} x {self.scale:.4g}, "
                 f"batch {cfg.batch_size}, lr {cfg.lr:g}, ln sigma ~ N({cfg.p_mean}, {cfg.p_std}^2), "
                 f"cond dropout {cfg.cond_dropout}; step {self.step} -> {cfg.max_steps}")

    @torch.no_grad()
    def encode(self, clips: np.ndarray, chunk: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
        """Scaled latents (N, T, 4, h, w) and frame-0 CLIP embeddings (N, 1, D) of uint8 clips, on the device."""
        from methods.models.conditioning import clip_embeddings, images_to_float

        lat, emb = [], []
        for i in range(0, len(clips), chunk):
            c = np.array(clips[i:i + chunk])
            z = self.vae.encode(to_pixels(c).to(self.device)).latent_dist.mode() * self.scale
            lat.append(z.reshape(len(c), c.shape[1], *z.shape[1:]))
            emb.append(clip_embeddings(self.clip, images_to_float(c[:, 0]), self.device, *self.clip_norm))
        return torch.cat(lat), torch.cat(emb)

    def encode_pool(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The pool's latents and embeddings from out/latents.safetensors, encoded when missing or stale."""
        from safetensors import safe_open
        from safetensors.torch import save_file

        path = self.out / "latents.safetensors"
        pool_hash = hashlib.sha256(np.ascontiguousarray(self.pool).data).hexdigest()
        key = sha256_json({"vae": module_sha256(self.vae), "image_encoder": module_sha256(self.clip),
                           "clip_norm": self.clip_norm, "scale": self.scale, "pool": [pool_hash, self.pool.shape]})
        if path.is_file():
            with safe_open(str(path), "pt") as f:
                if (f.metadata() or {}).get("key") == key:
                    return f.get_tensor("latents").to(self.device), f.get_tensor("image_embeds").to(self.device)
            self.log(f"{path.name}: made with another VAE, image encoder or pool; encoding again")
        self.log(f"encoding {len(self.pool)} pool clips (VAE latents, CLIP embeddings of frame 0) into {path}")
        lat, emb = self.encode(self.pool)
        if self.acc.is_main_process:
            with atomic_path(path, suffix=".safetensors") as tmp:
                save_file({"latents": lat.cpu().contiguous(), "image_embeds": emb.cpu().contiguous()}, str(tmp),
                          metadata={"key": key, "scaling_factor": repr(self.scale)})
        return lat, emb

    # ------------------------------------------------------------------------------- checkpoints, export
    def checkpoint_parts(self) -> tuple[dict, dict]:
        return {"unet": self.unet, "ema": self.ema}, {"optimizer_unet": self.opt}

    def export(self) -> Path:
        """out/export/unet (the EMA weights, diffusers folder) + out/export/sfv_train.json."""
        cfg = self.cfg
        return export_model(self.out, self.acc, self.ema, "unet", {
            "trainer": "diffusion", "weights": "ema", "train_steps": self.step, "unet": "unet",
            "scaling_factor": self.scale, "stack": cfg.stack, "vae": cfg.vae or "stack",
            "parameterisation": "EDM, SVD's v-prediction (sigma_data 1): D = c_skip x + c_out F(c_in x; 0.25 ln sigma)",
            "config": cfg.to_dict()})

    # ------------------------------------------------------------------------------- one step
    @torch.no_grad()
    def cond_latent(self, first: np.ndarray, gen: torch.Generator) -> torch.Tensor:
        """Unscaled posterior mode of the noise-augmented frames (B, H, W, 3) -> (B, 4, h, w)."""
        x = to_pixels(first)
        x = x + self.cfg.noise_aug_strength * torch.randn(x.shape, generator=gen)
        return self.vae.encode(x.to(self.device)).latent_dist.mode()

    def v_loss(self, model, x0, emb, cond, sigma, eps) -> torch.Tensor:
        """Per-clip mean squared error of F(x0 + sigma eps) against the v-target (B,)."""
        s = sigma.view(-1, 1, 1, 1, 1)
        x = x0 + s * eps
        ids = self.time_ids.expand(len(x0), -1)
        with self.autocast():
            v = Denoiser(model, emb, cond, ids).model_output(x, sigma)
        c_skip, c_out, _, _ = scalings(s)
        return (v.float() - (x0 - c_skip * x) / c_out).pow(2).mean(dim=(1, 2, 3, 4))

    def train_step(self) -> dict:
        cfg, gen, dev = self.cfg, self.gen, self.device
        lr = cfg.lr * warmup_cosine(self.step, cfg.warmup_steps, cfg.max_steps, cfg.min_lr_ratio)
        for g in self.opt.param_groups:
            g["lr"] = lr
        idx = torch.randperm(len(self.pool), generator=gen)[:cfg.batch_size]
        b = len(idx)
        cond = self.cond_latent(self.pool[idx.numpy(), 0], gen)
        keep = (torch.rand(b, generator=gen) >= cfg.cond_dropout).float().to(dev)
        emb = self.embeds[idx.to(dev)] * keep.view(-1, 1, 1)
        cond = cond * keep.view(-1, 1, 1, 1)
        sigma = (cfg.p_mean + cfg.p_std * torch.randn(b, generator=gen)).exp().clamp(SIGMA_MIN, SIGMA_MAX)
        x0 = self.latents[idx.to(dev)]
        eps = torch.randn(x0.shape, generator=gen).to(dev)
        per = self.v_loss(self.unet, x0, emb, cond, sigma.to(dev), eps)
        loss = per.mean()
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        m = {"loss": loss.item(), "grad_norm_unet": self.clip_grad(self.unet.parameters(), cfg.max_grad_norm)}
        self.opt.step()
        ema_update(self.ema, self.unet, min(cfg.ema_decay, (1 + self.step) / (10 + self.step)))
        which = np.searchsorted(BUCKETS, sigma.numpy())
        per = per.detach().cpu().numpy()
        for k, name in enumerate(_bucket_names()):
            if (which == k).any():
                m[f"loss_sigma_{name}"] = float(per[which == k].mean())
        self.step += 1
        if self.step % cfg.eval_every == 0 or self.step == cfg.max_steps:
            self.evaluate()
        return m

    @torch.no_grad()
    def evaluate(self) -> dict:
        """v-loss of the model and the EMA at VAL_SIGMAS on the eval clips, with fixed noise (seeded apart
        from the training generator): its own metrics.jsonl line, val/... in TensorBoard."""
        gen = torch.Generator().manual_seed(self.cfg.seed + 12345)
        x0, emb = self.eval_latents, self.eval_embeds
        cond = self.cond_latent(self.eval_clips[:, 0], gen)
        ev = {}
        for s in VAL_SIGMAS:
            eps = torch.randn(x0.shape, generator=gen).to(self.device)
            sigma = torch.full((len(x0),), s, device=self.device)
            for tag, model in (("val", self.unet), ("val_ema", self.ema)):
                ev[f"{tag}_sigma_{s:g}"] = float(self.v_loss(model, x0, emb, cond, sigma, eps).mean())
        for tag in ("val", "val_ema"):
            ev[tag] = float(np.mean([ev[f"{tag}_sigma_{s:g}"] for s in VAL_SIGMAS]))
        self.acc.log({k.replace("_sigma_", "/sigma_"): v for k, v in ev.items()}, step=self.step)
        self.append_metrics(ev)
        self.log(f"step {self.step}: fixed-sigma v-loss {ev['val']:.4g} (EMA {ev['val_ema']:.4g})")
        return ev
