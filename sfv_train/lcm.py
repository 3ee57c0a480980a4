"""``sfv-train --method lcm``: consistency distillation of an SVD UNet, AnimateLCM's recipe for SVD.

Reference: G-U-N/AnimateLCM, ``animatelcm_svd/`` at commit f873122358c101cd191533adb9cd517899fbfb01
(``train_svd_lcm.py`` = T, ``animate_lcm_utils.py`` = U below). What this file implements, written
from a reading of that code, with where each number comes from:

* Levels: N = 40 Karras levels s_0 = 700 > ... > s_39 = 0.002, rho 7, plus s_40 = 0 (T:13 launches with
  ``--N=40``, the argparse default 100 at T:547-552 is not what was run; sigma_min/max/rho at
  T:657-665 and T:693; the levels and the appended 0 at U:36-40). They are
  ``methods.sampling.animatelcm_levels(40)``, the very levels the ``lcm`` sampler steps through.
* Index n uniform on 0..N-1 (U:43, U:65-71; the Pmean 0.7 / Pstd 1.6 passed at T:693 are unused),
  skipping step k = 1: the teacher goes from level n to n + 1 (T:1074).
* x_n = x0 + s_n eps (T:1017). Consistency function = SVD's EDM denoiser (sigma_data = 1, T:661):
  c_in = 1/sqrt(s^2+1), c_skip = 1/(s^2+1), c_out = -s/sqrt(s^2+1), UNet timestep 0.25 ln s (U:46-51,
  U:74-75, T:1109). At s_40 = 0 that is c_skip = 1, c_out = 0: the boundary condition f(x, 0) = x.
  The reference's sampler uses the same scalings (``animatelcm_scheduler.py``:289-314 with
  sigma_data 1), and so does ``methods.sampling.sample_lcm`` (D(x; s) of methods.models.edm).
* Teacher (frozen pretrained UNet) with classifier-free guidance: uncond = zero image latent AND zero
  CLIP embedding, same added time ids (T:1068-1076); per-frame scale linspace(a, b, frames) with
  a ~ {1, 1.25, 1.5}, b ~ {2, 2.25, 2.5} (T:1078-1081); v = v_u + g (v_c - v_u). One Euler step of the
  probability-flow ODE: x_{n+1} = x_n + (x_n - D_teacher(x_n; s_n)) / s_n * (s_{n+1} - s_n) (U:77-84).
* Target: D_target(x_{n+1}; s_{n+1}) of the target network, conditional, no guidance, no gradient
  (T:1084-1096); at s_{n+1} = 0 it is x_{n+1} (the reference calls the UNet with timestep
  0.25 ln 1e-44 and multiplies by c_out = 0; here the call is skipped). Student: D_student(x_n; s_n)
  (T:1105-1109). No w-conditioning: the guided teacher is distilled into an unguided student.
* Loss: mean of w_n (sqrt((D_student - target)^2 + c^2) - c) over elements, c = 0.001, with
  w_n = (s_n - s_{n+1})^(-0.1) (T:1111-1113, U:48, U:57). ``--recon mse`` / ``--recon-reduction video``
  / ``--lambda`` change the distance, its reduction and a global scale.
* Target network = EMA of the student, decay 0.95 after every optimiser step, initialised from the
  pretrained UNet (T:553-557, T:1133, U:107-118, T:681-686). No gradient clipping (T:1123-1124
  commented out). AdamW lr 1e-6, betas (0.9, 0.999), weight decay 1e-3, eps 1e-8 (T:9, T:11,
  T:429-449, T:815-821); the lr schedule is ``constant`` (T:374-378), which ignores the
  ``--lr_warmup_steps=1000`` of T:9. Batch 1 per GPU, no accumulation (T:4), 50K steps (T:5).
  No conditioning dropout (T:389-394: None "for consistency learning").
* Export: the online student (T:1303-1317; the reference's extra ``--use_ema`` copy is off in its
  command): ``--export-weights raw``, this method's preset; ``ema`` exports the target network.

Where the reference does not apply (our choices): the data and condition are this repo's cached
latents (``sfv_train.data``): the protocol's frames/size/fps, fps-1 and motion bucket 127 time ids
and a fixed noise_aug_strength with per-video seeded noise, where the reference trains 25-frame
SVD-xt at 576x320 on WebVid with noise_aug ~ lognormal(-3, 0.5) drawn per step (T:1004-1035); the
guidance pair is drawn per video from the per-process generator (the reference: one ``np.random``
draw per batch, the same at its batch size 1); the cond/uncond teacher calls are one batch-2 call;
bf16 autocast on CUDA instead of fp16.
"""
from __future__ import annotations

import contextlib
import copy
from pathlib import Path

import torch

from methods.models.edm import SIGMA_MAX, Denoiser
from methods.sampling import LCM_TRAIN_LEVELS, animatelcm_levels

from .config import parse_scales
from .data import sample_indices
from .ema import ema_update
from .trainer import Trainer

HUBER_C = 0.001        # T:1112
WEIGHT_POWER = 0.1     # U:48
PREVIEW_STEPS = 4


def lcm_sigmas(n: int = LCM_TRAIN_LEVELS) -> torch.Tensor:
    """s_0 .. s_{n-1} (descending Karras levels, 700 .. 0.002) then s_n = 0, float32 (U:36-40)."""
    lv = torch.from_numpy(animatelcm_levels(n, n))
    return torch.cat([lv, lv.new_zeros(1)]).float()


def loss_weights(sigmas: torch.Tensor) -> torch.Tensor:
    """w_n = (1 / (s_n - s_{n+1}))^0.1 for n = 0..N-1 (U:48), from float64 differences."""
    s = sigmas.double()
    return ((1 / (s[:-1] - s[1:])) ** WEIGHT_POWER).float()


def draw_guidance(gen: torch.Generator, batch: int, frames: int, first, last) -> torch.Tensor:
    """(B, T, 1, 1, 1): per video linspace(a, b, T), a uniform over ``first``, b over ``last`` (T:1078)."""
    ia = torch.randint(len(first), (batch,), generator=gen)
    ib = torch.randint(len(last), (batch,), generator=gen)
    g = torch.stack([torch.linspace(first[i], last[j], frames) for i, j in zip(ia.tolist(), ib.tolist())])
    return g.view(batch, frames, 1, 1, 1)


@torch.no_grad()
def consistency_target(teacher, target, x: torch.Tensor, n: torch.Tensor, sigmas: torch.Tensor, cond: dict,
                       guidance: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(x_{n+1}, D_target(x_{n+1}; s_{n+1})): the teacher's guided Euler step from level n to n + 1, then
    the target network's consistency function there (x_{n+1} itself where s_{n+1} = 0). Float32."""
    emb, lat, ids = cond["image_embeds"], cond["cond_latent"], cond["added_time_ids"]
    s, s_next = sigmas[n], sigmas[n + 1]
    x = x.float()
    d = Denoiser(teacher, emb, lat, ids, guidance.to(x))(x, s)
    view = (-1,) + (1,) * (x.ndim - 1)
    sv, snv = s.to(x).view(view), s_next.to(x).view(view)
    x_next = x + (x - d) / sv * (snv - sv)
    live = s_next > 0
    if not bool(live.any()):
        return x_next, x_next.clone()
    d_next = Denoiser(target, emb, lat, ids)(x_next, torch.where(live, s_next, torch.ones_like(s_next)))
    return x_next, torch.where(live.to(x.device).view(view), d_next.float(), x_next)


def consistency_loss(pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor, distance: str = "pseudo-huber",
                     reduction: str = "element", c: float = HUBER_C) -> torch.Tensor:
    """Batch mean of w_b * dist_b (T:1111-1113). pseudo-huber: element -> mean of sqrt(d^2 + c^2) - c,
    video -> sqrt(||d||^2 + c^2) - c; mse: element -> mean d^2, video -> ||d||^2."""
    d2 = (pred.float() - target.float()).square().flatten(1)
    if distance == "mse":
        per = d2.sum(1) if reduction == "video" else d2.mean(1)
    elif reduction == "video":
        per = torch.sqrt(d2.sum(1) + c * c) - c
    else:
        per = (torch.sqrt(d2 + c * c) - c).mean(1)
    return (weight.to(per) * per).mean()


class LCMTrainer(Trainer):
    """Consistency distillation (see the module doc): G = the online student, ``ema`` = the target
    network (EMA of G), ``teacher`` = the frozen pretrained UNet. Data and stack: ``Trainer.build``."""

    postfix = ("loss",)
    tracker_names = {"loss": "loss/consistency", "sigma": "noise/sigma", "guidance": "teacher/guidance"}

    def __init__(self, cfg):
        super().__init__(cfg)
        self.sigmas = lcm_sigmas()
        self.weights = loss_weights(self.sigmas)
        self.g_first = parse_scales(self.cfg.lcm_guidance_first, "--lcm-guidance-first")
        self.g_last = parse_scales(self.cfg.lcm_guidance_last, "--lcm-guidance-last")

    def objective(self) -> str:
        cfg = self.cfg
        return (f"consistency distillation over {LCM_TRAIN_LEVELS} levels (teacher CFG linspace"
                f"({{{cfg.lcm_guidance_first}}}, {{{cfg.lcm_guidance_last}}}), {cfg.recon} {cfg.recon_reduction}"
                f"{f' c {cfg.huber_c}' if cfg.recon == 'pseudo-huber' else ''}, target EMA {cfg.ema})")

    def build_models(self, unet) -> None:
        """Student (``unet``, trained), target network and teacher (frozen copies of it), optimiser."""
        cfg = self.cfg
        unet.requires_grad_(False)
        self.teacher = copy.deepcopy(unet).eval()
        self.ema = copy.deepcopy(unet).eval()
        self.G = unet.requires_grad_(True).train()
        if cfg.gradient_checkpointing:
            self.G.enable_gradient_checkpointing()
        self.opt_g = self._optimizer(self.G.parameters(), cfg.lr_g)
        self.G = self.acc.prepare_model(self.G)

    def checkpoint_parts(self) -> tuple[dict, dict]:
        return {"generator": self.acc.unwrap_model(self.G), "ema": self.ema}, {"optimizer_g": self.opt_g}

    def export_unet(self):
        """The UNet the export holds: the online student (raw, the preset) or the target network (ema)."""
        return self.ema if self.cfg.export_weights == "ema" else self.acc.unwrap_model(self.G)

    def export_info(self) -> dict:
        """sfv_train.json: what `sfv-bench run --methods lcm:N` loads."""
        return {"method": "lcm", "steps": [1, 2, 4, 8], "levels": LCM_TRAIN_LEVELS, "sigma": SIGMA_MAX,
                "sampling": f"AnimateLCM's sampler (methods.sampling.sample_lcm, the `lcm` method): sigmas = "
                            f"animatelcm_sigmas(N) ({LCM_TRAIN_LEVELS} Karras levels 0.002..700, rho 7, idx = "
                            f"arange(N) * ({LCM_TRAIN_LEVELS} // N)), x = sqrt(700^2 + 1) noise, x <- D(x; s_i) + "
                            f"s_(i+1) z, no CFG"}

    def preview_latents(self, b: dict, noise: torch.Tensor) -> torch.Tensor:
        """A 4-step ``sample_lcm`` video of the exported weights."""
        from methods.sampling import animatelcm_sigmas, sample_lcm

        den = Denoiser(self.export_unet(), b["image_embeds"], b["cond_latent"], b["added_time_ids"])
        gens = [torch.Generator(self.device).manual_seed(self.cfg.seed + 1)]
        return sample_lcm(den, noise, animatelcm_sigmas(PREVIEW_STEPS), gens)

    def train_step(self) -> dict:
        cfg, acc, gen = self.cfg, self.acc, self.gen
        accum, n_levels = cfg.grad_accum, len(self.weights)
        m = {"loss": 0.0, "sigma": 0.0, "guidance": 0.0}
        self.G.train()
        for a in range(accum):
            idx = sample_indices(len(self.data), cfg.seed, self.step, a, accum, cfg.batch_size, self.rank, self.world)
            b = self.data.batch(idx, self.device)
            x0 = b["latents"]
            n = torch.randint(n_levels, (len(idx),), generator=gen)
            eps = torch.randn(x0.shape, generator=gen).to(self.device)
            g = draw_guidance(gen, len(idx), x0.shape[1], self.g_first, self.g_last).to(self.device)
            s = self.sigmas[n]
            x = x0.float() + s.to(self.device).view(-1, 1, 1, 1, 1) * eps
            with self.autocast():
                _, target = consistency_target(self.teacher, self.ema, x, n, self.sigmas, b, g)
            sync = contextlib.nullcontext() if a == accum - 1 else acc.no_sync(self.G)
            with sync:
                with self.autocast():
                    pred = Denoiser(self.G, b["image_embeds"], b["cond_latent"], b["added_time_ids"])(x, s)
                loss = cfg.recon_weight * consistency_loss(pred, target, self.weights[n], cfg.recon,
                                                           cfg.recon_reduction, cfg.huber_c)
                acc.backward(loss / accum)
            m["loss"] += loss.item() / accum
            m["sigma"] += float(s.mean()) / accum
            m["guidance"] += float(g.mean()) / accum
        m["grad_norm_g"] = self.clip_grad(self.G.parameters(), cfg.max_grad_norm)
        self.opt_g.step()
        self.opt_g.zero_grad(set_to_none=True)
        ema_update(self.ema, acc.unwrap_model(self.G), cfg.ema)
        self.step += 1
        return m

    def run(self) -> Path:
        path = super(Trainer, self).run()
        self.log(f"exported {path / 'unet'} (weights: {self.cfg.export_weights}); generate with "
                 f"`sfv-bench run --methods lcm:4 --lcm-unet {path / 'unet'}`")
        return path
