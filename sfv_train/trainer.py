"""The training loop: SF-V latent adversarial training (and UFOGen / LADD on the same framework).

One optimisation step (``grad_accum`` micro-batches of ``batch_size`` videos per process):

G phase, per micro-batch: x0 (real latents; LADD: teacher latents), sigma uniform over the upper
three generator levels, x_t = x0 + sigma eps, x0_hat = D_G(x_t; sigma) (EDM, eq. 6); sigma' from
the D-noise rule, D input c_in(sigma') (x0_hat + sigma' eps') (eq. 8); loss = -D(fake) +
lambda recon(x0_hat, x0) (pseudo-Huber / MSE / none), divided by grad_accum. Heads are frozen in
this phase (no gradient to them). Then G's optimiser steps and EMA(0.95) follows.
D phase, per micro-batch, with the SAME x0, x0_hat (detached), sigma' and eps' (real and fake
share the noise): hinge loss on D(c_in(sigma') (x0 + sigma' eps')) vs D(c_in (x0_hat + sigma' eps'))
plus gamma R1 (exact: double backward under the math SDPA backend; lazy: exact every k steps,
weighted k; approx: finite difference). Only the heads get gradients; the backbone is frozen.

Multi-process (``accelerate launch``): G is wrapped in DDP by accelerate (plain DDP; gradients
synchronised on the last micro-batch only); head gradients are all-reduced by hand after the D
phase (DDP cannot double-backward through R1). Randomness: one CPU ``torch.Generator`` per
process seeded from (seed, rank); the data order is a pure function of (seed, step), so resume
continues exactly.

The run folder and the loop: ``sfv_train.loop``. ``--method lcm`` (AnimateLCM consistency
distillation) is ``sfv_train.lcm.LCMTrainer``, a subclass reusing ``build`` (data, stack); ``train``
picks the class (``sfv_train.train.trainer_class``).
"""
from __future__ import annotations

import contextlib
import copy
from pathlib import Path

import torch

from methods.models.edm import SIGMA_MAX, Denoiser, c_noise, scale_input
from sfv_core.errors import UserError

from . import losses
from .checkpoint import CKPT_PREFIX, export_model
from .config import TrainConfig
from .data import (ClipSettings, LatentDataset, find_videos, prepare_latents, prepare_teacher,
                   sample_indices)
from .disc import Discriminator, HeadsCheckpoint, interleave
from .ema import ema_update
from .loop import TrainLoop
from .noise import NoiseSampler
from .probes import GradProbe, d_stats


class Trainer(TrainLoop):
    """SF-V / UFOGen / LADD (``cfg.method``) on one loop; see the module doc."""

    name = "sfv-train"
    postfix = ("g_loss", "d_loss", "acc_real", "acc_fake", "gn_ratio")
    tracker_names = {"g_loss": "loss/g", "g_adv": "loss/g_adv", "g_rec": "loss/g_rec", "d_loss": "loss/d",
                     "r1": "loss/r1", "acc_real": "accuracy/real", "acc_fake": "accuracy/fake",
                     "sigma_d": "noise/sigma_d"}
    # the probes (sfv_train.probes): grad_x0/adv, grad_x0/ratio, accuracy/real_spatial, logit_abs/fake, ...
    tracker_prefixes = {**TrainLoop.tracker_prefixes, "gn_": "grad_x0/", "acc_": "accuracy/", "logit_abs_": "logit_abs/"}

    # G, EMA, D and so the optimiser state (bfloat16 lets the full-size model fit a CPU; see --mixed-precision)
    weights_dtype = torch.float32

    def __init__(self, cfg: TrainConfig):
        super().__init__(cfg)
        self.desc = f"sfv-train {self.cfg.method}"

    # ------------------------------------------------------------------------------- setup
    def build(self) -> None:
        """Data (cached latents; LADD: teacher latents), generator, EMA, discriminator, optimisers.

        D copies the pretrained encoder (frozen), the EMA starts at the pretrained weights, heads are
        initialised from ``torch.manual_seed(seed)`` (identical on every process)."""
        from methods.models.stacks import load_pipeline, resolve_stack
        from sfv_core.data.synthetic import default_dataset_root, make_synthetic
        from sfv_core.protocol import WORLDS

        cfg, acc = self.cfg, self.acc
        world = WORLDS.get(cfg.stack)
        if world and world.dataset and Path(cfg.data) == default_dataset_root(**world.dataset).absolute():
            self.log(f"--data: the synthetic dataset in {cfg.data} (the {cfg.stack} stack's default)")
            with acc.main_process_first():          # made once
                make_synthetic(cfg.data, **world.dataset)
        items = find_videos(cfg.data, cfg.split, cfg.fold)
        with acc.main_process_first():              # the tiny stack is built once, by the main process
            stack_dir = resolve_stack(cfg.stack, cfg.mini_world)
        pipe = load_pipeline(stack_dir, device=self.device, dtype=self.weights_dtype)
        settings = ClipSettings.of(cfg)
        cache_root = Path(cfg.latent_cache) if cfg.latent_cache else None
        share = dict(rank=self.rank, world=self.world, wait=acc.wait_for_everyone)   # this process's part
        pairs = prepare_latents(pipe, items, settings, stack_dir, device=self.device, cache_root=cache_root, **share)
        real = None
        if cfg.method == "ladd":
            real = prepare_teacher(stack_dir, pairs, settings, steps=cfg.teacher_steps,
                                   max_guidance=cfg.teacher_max_guidance, device=self.device,
                                   cache_root=cache_root / "teacher" if cache_root else None, **share,
                                   unet=pipe.unet, half=torch.bfloat16 if self.bf16 else None,
                                   batch=cfg.teacher_batch)
        self.data = LatentDataset([f for _, f in pairs], real)
        self.vae = pipe.vae.requires_grad_(False)   # for previews
        self.stack_dir = stack_dir
        # the FVD evaluation samples with these and the EMA UNet (the image encoder is kept only then)
        self.stack_parts = ({k: v for k, v in pipe.components.items() if k != "unet"}
                            if getattr(cfg, "fvd_every", 0) > 0 else None)
        self.build_models(pipe.unet)
        self.log(f"sfv-train: method {cfg.method}, {len(self.data)} clips ({cfg.num_frames} frames "
                 f"{cfg.width}x{cfg.height} @ {cfg.fps} fps), {self.objective()}, {cfg.optimizer} lr {cfg.lr_g}, "
                 f"{self.world} process(es) on {self.device}{', bf16' if self.bf16 else ''}; "
                 f"step {self.step} -> {cfg.max_steps}")

    def objective(self) -> str:
        """What the start-up line says about the objective."""
        cfg = self.cfg
        return (f"D noise {cfg.d_noise}, heads {cfg.heads} (norm {cfg.d_norm}), recon {cfg.recon} "
                f"({cfg.recon_reduction}, lambda {cfg.recon_weight:g}), R1 {cfg.r1}")

    def build_models(self, unet) -> None:
        """Generator (``unet``, trained), EMA, discriminator (frozen encoder copy + heads), optimisers."""
        cfg = self.cfg
        unet.requires_grad_(False)
        torch.manual_seed(cfg.seed)
        self.D = Discriminator(unet, heads=cfg.heads, cmap_dim=cfg.cmap_dim, norm=cfg.d_norm).to(self.device)
        self.D.train()
        self.ema = copy.deepcopy(unet).eval()
        self.G = unet
        self.G.requires_grad_(True)
        self.G.train()
        if cfg.gradient_checkpointing:
            self.G.enable_gradient_checkpointing()
            self.D.backbone.enable_gradient_checkpointing()
        self.opt_g = self._optimizer(self.G.parameters(), cfg.lr_g)
        self.opt_d = self._optimizer(self.D.head_parameters(), cfg.lr_d)
        self.noise = NoiseSampler(cfg.d_noise, cfg.p_mean, cfg.p_std, t_d=cfg.t_d)
        self.G = self.acc.prepare_model(self.G)

    def _optimizer(self, params, lr):
        cfg = self.cfg
        params = list(params)
        if cfg.optimizer == "adamw":
            return torch.optim.AdamW(params, lr=lr, betas=(cfg.momentum, cfg.beta), weight_decay=cfg.weight_decay)
        try:
            from pytorch_optimizer import SM3
        except ImportError as e:
            raise UserError("--optimizer sm3 needs the pytorch-optimizer package (pip install pytorch-optimizer) "
                            "or use --optimizer adamw") from e
        return SM3(params, lr=lr, momentum=cfg.momentum, beta=cfg.beta)

    # ------------------------------------------------------------------------------- checkpoints
    def checkpoint_parts(self) -> tuple[dict, dict]:
        return ({"generator": self.acc.unwrap_model(self.G), "ema": self.ema, "heads": HeadsCheckpoint(self.D)},
                {"optimizer_g": self.opt_g, "optimizer_d": self.opt_d})

    def checkpoint_state(self) -> dict:
        cfg = self.cfg
        return {"method": cfg.method, "clips_seen": self.step * cfg.grad_accum * cfg.batch_size * self.world,
                "data_order": "sfv_train.data.sample_indices(n, seed, step, micro, accum, batch, rank, world)"}

    def export_info(self) -> dict:
        """What sfv_train.json says of this method's export (the sampler that loads it)."""
        return {"method": self.cfg.method, "steps": 1, "sigma": SIGMA_MAX,
                "sampling": "x = 700 * noise; x0 = c_skip x + c_out F(c_in x; 0.25 ln 700) (EDM, one step)"}

    def export(self, final: Path | None = None) -> Path:
        """out/export/unet (diffusers folder, safetensors) + out/export/sfv_train.json, replaced atomically
        (``final``: another folder, e.g. a milestone)."""
        cfg = self.cfg
        return export_model(self.out, self.acc, self.export_unet(), "unet", {
            **self.export_info(), "train_steps": self.step, "weights": cfg.export_weights, "stack": cfg.stack,
            "unet": "unet", "config": cfg.to_dict()}, final)

    def preview_latents(self, b: dict, noise: torch.Tensor) -> torch.Tensor:
        """The preview's sample: one step (sigma 700) of the EMA generator."""
        from methods.sampling import sample_onestep

        return sample_onestep(Denoiser(self.ema, b["image_embeds"], b["cond_latent"], b["added_time_ids"]), noise)

    @torch.no_grad()
    def preview(self) -> Path | None:
        """``preview_latents`` on the first clip's condition, decoded -> previews/step-XXXXXX.mp4."""
        if not self.acc.is_main_process:
            return None
        from methods.models.conditioning import decode_latents, frames_to_uint8
        from sfv_core.data.videoio import write_video

        b = self.data.batch([0], self.device)
        noise = torch.randn(b["latents"].shape, generator=torch.Generator().manual_seed(self.cfg.seed))
        x0 = self.preview_latents(b, noise.to(self.device))
        video = frames_to_uint8(decode_latents(self.vae, x0, self.cfg.num_frames))[0]
        path = self.out / "previews" / f"{CKPT_PREFIX}{self.step:06d}.mp4"
        write_video(path, video, fps=self.cfg.fps)
        return path

    def export_unet(self):
        """The UNet the export holds (``--export-weights``): the EMA generator by default."""
        return self.ema if self.cfg.export_weights == "ema" else self.acc.unwrap_model(self.G)

    # ------------------------------------------------------------------------------- FVD while training
    def eval_spec(self) -> str:
        """The `sfv-bench run` method spec the export is sampled with, so the FVD while training is the
        benchmark's: one step from sigma 700 (sfv, ufogen, ladd); lcm: AnimateLCM's sampler, 4 steps.
        A trainer with another sampler overrides this (or ``sample_videos``)."""
        return "lcm:4" if self.cfg.method == "lcm" else f"{self.cfg.method}:1"

    @torch.no_grad()
    def sample_videos(self, images, seeds, conditions):
        """The exported generator (``export_unet()``: the EMA by default) on conditioning images uint8
        (H, W, 3), one seed each -> uint8 (B, T, H, W, 3): the benchmark's adapter for ``eval_spec()`` (its
        conditioning, seeded draws, sampler and decode) on the stack's VAE and image encoder, float32, in
        eval mode. Changes no RNG, no weight, and leaves every module in the mode it was in."""
        unet = self.export_unet()
        if getattr(self, "_sampler", None) is None or self._sampler.pipe.unet is not unet:
            from methods.models.stacks import load_pipeline, resolve_stack
            from methods.registry import get_method

            stack = getattr(self, "stack_dir", None) or resolve_stack(self.cfg.stack, self.cfg.mini_world)
            parts = getattr(self, "stack_parts", None)
            if parts is not None:
                from diffusers import StableVideoDiffusionPipeline
                pipe = StableVideoDiffusionPipeline(**parts, unet=unet)
            else:                                       # a subclass that kept no parts: read them again
                pipe = load_pipeline(stack, self.device, torch.float32, unet=unet)
            self._sampler = get_method(self.eval_spec()).load(stack, self.device, torch.float32, pipe=pipe)
        modes = [(m, m.training) for m in unet.modules()]
        unet.eval()
        try:
            return self._sampler.generate(images, seeds, conditions)
        finally:
            for m, mode in modes:
                m.training = mode

    # ------------------------------------------------------------------------------- one step
    def _d_input(self, x, sigma_d, eps_d):
        """D's input c_in(sigma') (x + sigma' eps') (eq. 8), float32."""
        s = sigma_d.to(self.device, torch.float32).view(-1, 1, 1, 1, 1)
        return scale_input(x.float() + s * eps_d, s)

    def _disc(self, x_in, sigma_d, b):
        timestep = c_noise(sigma_d.to(self.device, torch.float32))
        with self.autocast():
            return self.D(x_in, timestep, b["cond_latent"], b["image_embeds"], b["added_time_ids"])

    def _disc_pair(self, real_in, fake_in, sigma_d, b, want: str = "both"):
        """(real logits, fake logits). ``--d-norm videos``: ONE call on the interleaved batch r0 f0 r1 f1 ...,
        so every normalisation group of up to 8 videos holds real and fake alike; otherwise one call per side
        that ``want`` asks for ("both", "real" or "fake"; the other side is None)."""
        if self.D.norm != "videos":
            return (self._disc(real_in, sigma_d, b) if want != "fake" else None,
                    self._disc(fake_in, sigma_d, b) if want != "real" else None)
        both = {k: interleave(b[k], b[k]) for k in ("cond_latent", "image_embeds", "added_time_ids")}
        out = self._disc(interleave(real_in, fake_in), interleave(sigma_d, sigma_d), both)
        return [o[0::2] for o in out], [o[1::2] for o in out]

    def _recon(self, x0_hat, x0, sigma):
        return losses.reconstruction(x0_hat, x0, sigma, self.cfg.recon, self.cfg.recon_reduction, self.cfg.huber_c)

    def train_step(self) -> dict:
        m = {k: 0.0 for k in ("g_adv", "g_rec", "g_loss", "d_loss", "acc_real", "acc_fake", "sigma_d")}
        stash = self.g_phase(m)
        self.d_phase(stash, m)
        self.step += 1
        return m

    def g_phase(self, m: dict) -> list:
        """G's micro-batches, its optimiser step and the EMA; adds to the metrics ``m``; returns the stash
        the D phase reuses: (batch, x0_hat detached, sigma', eps') per micro-batch."""
        accum = self.cfg.grad_accum
        stash, probe = [], GradProbe()
        self.D.train_heads(False)
        self.G.train()
        for micro in range(accum):
            b, x0_hat, sigma_d, eps_d, terms = self._g_micro_batch(micro, probe)
            stash.append((b, x0_hat.detach(), sigma_d, eps_d))
            for k, v in terms.items():
                m[k] += v / accum
            m["sigma_d"] += float(sigma_d.mean()) / accum
        m.update(probe.metrics())
        self._g_optimizer_step(m)
        return stash

    def _g_draws(self, micro: int):
        """Batch ``micro`` of this step and its draws, in this order: sigma, eps, sigma', eps'."""
        cfg, gen = self.cfg, self.gen
        idx = sample_indices(len(self.data), cfg.seed, self.step, micro, cfg.grad_accum, cfg.batch_size,
                             self.rank, self.world)
        b = self.data.batch(idx, self.device)
        g_idx, sigma = self.noise.sample_g(len(idx), gen)
        eps = torch.randn(b["latents"].shape, generator=gen).to(self.device)
        sigma_d = self.noise.sample_d(g_idx, gen)
        eps_d = torch.randn(b["latents"].shape, generator=gen).to(self.device)
        return b, sigma, eps, sigma_d, eps_d

    def _g_micro_batch(self, micro: int, probe: GradProbe):
        """One G micro-batch: forward, loss and G's backward. Returns (batch, x0_hat, sigma', eps', loss terms)."""
        cfg, accum = self.cfg, self.cfg.grad_accum
        b, sigma, eps, sigma_d, eps_d = self._g_draws(micro)
        x0 = b["latents"]
        x_t = x0 + sigma.to(self.device, torch.float32).view(-1, 1, 1, 1, 1) * eps
        sync = contextlib.nullcontext() if micro == accum - 1 else self.acc.no_sync(self.G)
        with sync:
            with self.autocast():
                x0_hat = Denoiser(self.G, b["image_embeds"], b["cond_latent"], b["added_time_ids"])(x_t, sigma)
            x0_hat = x0_hat.float()
            # each term differentiated w.r.t. its own copy of x0_hat (the probe's two gradients), then
            # their sum sent back through G: the gradient of l_adv + lambda l_rec, one G backward
            x_adv, x_rec = (x0_hat.detach().requires_grad_(True) for _ in range(2))
            fake_in = self._d_input(x_adv, sigma_d, eps_d)
            logits = self._disc_pair(self._d_input(x0, sigma_d, eps_d), fake_in, sigma_d, b, "fake")[1]
            l_adv = losses.hinge_g(logits)
            l_rec = self._recon(x_rec, x0, sigma)
            loss = l_adv + cfg.recon_weight * l_rec
            (g_adv,) = torch.autograd.grad(l_adv, x_adv)
            g_rec = (torch.autograd.grad(cfg.recon_weight * l_rec, x_rec)[0] if l_rec.requires_grad
                     else torch.zeros_like(x_rec))
            probe.add(g_adv, g_rec)
            self.acc.backward(x0_hat, gradient=(g_adv + g_rec) / accum)     # = (l_adv + lambda l_rec) / accum
        terms = {"g_adv": l_adv.item(), "g_rec": l_rec.item(), "g_loss": loss.item()}
        return b, x0_hat, sigma_d, eps_d, terms

    def _g_optimizer_step(self, m: dict) -> None:
        m["grad_norm_g"] = self.clip_grad(self.G.parameters(), self.cfg.max_grad_norm)
        self.opt_g.step()
        self.opt_g.zero_grad(set_to_none=True)
        ema_update(self.ema, self.acc.unwrap_model(self.G), self.cfg.ema)

    def d_phase(self, stash: list, m: dict) -> None:
        """D's micro-batches on the G phase's stash (heads train, the backbone stays frozen), R1 as
        ``--r1`` asks, and D's optimiser step; adds to the metrics ``m``."""
        accum = self.cfg.grad_accum
        seen = {"real": [], "fake": [], "sigma": []}
        self.D.train_heads(True)
        self.opt_d.zero_grad(set_to_none=True)
        r1 = self._r1_plan()
        r1_total = 0.0
        for b, fake, sigma_d, eps_d in stash:
            loss, lr, lf, r1_value = self._d_micro_batch(b, fake, sigma_d, eps_d, r1)
            m["d_loss"] += loss.item() / accum
            m["acc_real"] += losses.accuracy(lr, True) / accum
            m["acc_fake"] += losses.accuracy(lf, False) / accum
            seen["real"].append(lr), seen["fake"].append(lf), seen["sigma"].append(sigma_d)
            if r1_value is not None:
                r1_total += r1_value.item() / accum
        if r1["on"]:
            m["r1"] = r1_total
        m.update(d_stats(seen["real"], seen["fake"], self.D.head_kinds, seen["sigma"]))
        self._d_optimizer_step(m)

    def _r1_plan(self) -> dict:
        """This step's R1: on (``--r1`` exact / approx every step, lazy every ``r1_every`` steps; never with
        gamma 0), its weight (lazy: gamma k) and whether it is the exact gradient (exact, lazy)."""
        cfg = self.cfg
        on = cfg.r1 in ("exact", "approx") or (cfg.r1 == "lazy" and self.step % cfg.r1_every == 0)
        on = on and cfg.r1_gamma > 0
        weight = cfg.r1_gamma * (cfg.r1_every if cfg.r1 == "lazy" else 1)
        return {"on": on, "weight": weight, "exact": on and cfg.r1 in ("exact", "lazy")}

    def _d_micro_batch(self, b, fake, sigma_d, eps_d, r1: dict):
        """One D micro-batch: hinge loss (+ weighted R1), backward. -> (hinge loss, real/fake logits, R1 or None)"""
        real_in = self._d_input(b["latents"], sigma_d, eps_d)
        fake_in = self._d_input(fake, sigma_d, eps_d)
        kernel = contextlib.nullcontext()
        if r1["exact"]:
            from torch.nn.attention import SDPBackend, sdpa_kernel
            kernel = sdpa_kernel(SDPBackend.MATH)             # double backward through attention
            real_in.requires_grad_(True)
        with kernel:
            lr, lf = self._disc_pair(real_in, fake_in, sigma_d, b)
            loss = losses.hinge_d(lr, lf)
            r1_value = self._r1(lr, real_in, fake_in, sigma_d, b, r1) if r1["on"] else None
            total = loss if r1_value is None else loss + r1["weight"] * r1_value
            (total / self.cfg.grad_accum).backward()
        return loss, lr, lf, r1_value

    def _r1(self, lr, real_in, fake_in, sigma_d, b, r1: dict) -> torch.Tensor:
        """R1 on the real inputs: exact (double backward) or the finite difference along one normal draw."""
        if r1["exact"]:
            return losses.r1_exact(losses.score(lr), real_in)
        eps = self.cfg.r1_eps
        n = torch.randn(real_in.shape, generator=self.gen).to(self.device)
        lp = self._disc_pair(real_in + eps * n, fake_in, sigma_d, b, "real")[0]
        return losses.r1_approx(losses.score(lr), losses.score(lp), eps)

    def _d_optimizer_step(self, m: dict) -> None:
        """Heads' gradients averaged over the processes (DDP cannot double-backward through R1), then the step."""
        if self.world > 1:
            for p in self.D.head_parameters():
                if p.grad is not None:
                    torch.distributed.all_reduce(p.grad)
                    p.grad /= self.world
        m["grad_norm_d"] = self.clip_grad(self.D.head_parameters(), self.cfg.max_grad_norm)
        self.opt_d.step()
        self.opt_d.zero_grad(set_to_none=True)

    def run(self) -> Path:
        path = super().run()
        cfg = self.cfg
        self.log(f"exported {path / 'unet'} (weights: {cfg.export_weights}); generate with "
                 f"`sfv-bench run --methods {cfg.method}:1 --{cfg.method}-unet {path / 'unet'}`")
        return path
