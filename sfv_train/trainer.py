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

Run folder::

    config.json                   the resolved configuration (compared on --resume)
    checkpoints/step-XXXXXX/      generator/ema/heads .safetensors, optimizer_{g,d}.pt, rng-<rank>.pt,
                                  state.json, config.json -- written to .tmp-step-XXXXXX, then renamed
    export/unet/                  diffusers UNet folder (EMA weights by default), safetensors
    export/sfv_train.json         method, steps, sampling sigma, configuration
    previews/step-XXXXXX.mp4      one-step sample of the EMA generator on a fixed condition
    logs/sfv-train/               TensorBoard events (accelerate tracker)
    logs/metrics.jsonl            the logged metrics, one JSON line per logged step
"""
from __future__ import annotations

import contextlib
import copy
import json
import os
import random
import shutil
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

from bench.fsutil import UserError, atomic_write_json

from . import losses
from .config import TrainConfig, diff_keys
from .data import (ClipSettings, LatentDataset, find_videos, prepare_latents, prepare_teacher,
                   sample_indices)
from .disc import Discriminator
from .model import denoise, ema_update
from .noise import SIGMA_MAX, NoiseSampler

CKPT_PREFIX = "step-"


def list_checkpoints(root: Path) -> list[Path]:
    """Finished checkpoints (``step-XXXXXX`` with a state.json), oldest first."""
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and p.name.startswith(CKPT_PREFIX)
             and p.name[len(CKPT_PREFIX):].isdigit() and (p / "state.json").is_file()]
    return sorted(found, key=lambda p: int(p.name[len(CKPT_PREFIX):]))


def _tensorboard_available() -> bool:
    try:
        import tensorboard  # noqa: F401
        return True
    except ImportError:
        return False


def _rng_state(gen: torch.Generator) -> dict:
    py = random.getstate()
    np_state = np.random.get_state()
    state = {"python": [py[0], list(py[1]), py[2]],
             "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), int(np_state[2]),
                       int(np_state[3]), float(np_state[4])],
             "torch": torch.get_rng_state(), "train": gen.get_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict, gen: torch.Generator) -> None:
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = state["numpy"]
    np.random.set_state((n[0], n[1].numpy().astype(np.uint32), n[2], n[3], n[4]))
    torch.set_rng_state(state["torch"])
    gen.set_state(state["train"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _save_safetensors(state_dict: dict, path: Path) -> None:
    from safetensors.torch import save_file
    save_file({k: v.detach().contiguous().cpu() for k, v in state_dict.items()}, str(path))


def _load_safetensors(path: Path) -> dict:
    from safetensors.torch import load_file
    return load_file(str(path))


def _flat_config(d: dict) -> dict:
    """Tracker hparams: only bool/str/int/float values."""
    return {k: (v if isinstance(v, (bool, str, int, float)) else json.dumps(v)) for k, v in d.items()}


class Trainer:
    def __init__(self, cfg: TrainConfig, log=None):
        self.cfg = cfg.resolved()
        self._log = log
        self.out = Path(self.cfg.out).expanduser()
        self.ckpt_root = self.out / "checkpoints"

    # ------------------------------------------------------------------------------- helpers
    def log(self, msg: str) -> None:
        if getattr(self, "acc", None) is not None and not self.acc.is_main_process:
            return
        if self._log is not None:
            self._log(msg)
        elif getattr(self, "pbar", None) is not None:
            self.pbar.write(msg)
        else:
            print(msg, flush=True)

    def _autocast(self):
        if not self.bf16:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)

    # ------------------------------------------------------------------------------- checks
    def _check_run_folder(self) -> Path | None:
        """Refuse bad resume situations before anything is written; return the checkpoint to load."""
        cfg = self.cfg
        existing = list_checkpoints(self.ckpt_root)
        if not cfg.resume:
            if existing:
                raise UserError(f"{self.out} already holds checkpoints (latest {existing[-1].name}): pass --resume "
                                f"to continue that run, or choose another --out")
            return None
        if cfg.resume == "latest":
            if not existing:
                self.log(f"--resume: no checkpoint in {self.ckpt_root} yet, starting from step 0")
                self._compare_config(self.out / "config.json")
                return None
            ckpt = existing[-1]
        else:
            ckpt = Path(cfg.resume).expanduser()
            if not (ckpt / "state.json").is_file():
                raise UserError(f"--resume {ckpt}: not a finished checkpoint folder (no state.json); pass "
                                f"--resume latest or a {self.ckpt_root}/{CKPT_PREFIX}XXXXXX folder")
        self._compare_config(ckpt / "config.json")
        self._compare_config(self.out / "config.json")
        return ckpt

    def _compare_config(self, path: Path) -> None:
        if not path.is_file():
            return
        old = TrainConfig(**{k: v for k, v in json.loads(path.read_text()).items()
                             if k in TrainConfig.__dataclass_fields__}).compared()
        diff = diff_keys(old, self.cfg.compared())
        if diff:
            shown = ", ".join(f"{k} ({old.get(k)!r} -> {self.cfg.compared().get(k)!r})" for k in diff[:6])
            raise UserError(f"--resume: {path} was written with another configuration; differing: {shown}. "
                            f"Use the same options or another --out")

    # ------------------------------------------------------------------------------- setup
    def setup(self) -> None:
        from accelerate import Accelerator
        from accelerate.utils import ProjectConfiguration

        from methods.stacks import load_pipeline, resolve_stack

        cfg = self.cfg
        resume_from = self._check_run_folder()
        items = find_videos(cfg.data, cfg.split, cfg.fold)
        stack_dir = resolve_stack(cfg.stack)

        cpu = cfg.device == "cpu" or (cfg.device == "auto" and not torch.cuda.is_available())
        report = cfg.report_to
        if report == "auto":
            report = "tensorboard" if _tensorboard_available() else "none"
        self.acc = acc = Accelerator(
            cpu=cpu, mixed_precision="no", log_with=None if report == "none" else report,
            project_config=ProjectConfiguration(project_dir=str(self.out), logging_dir=str(self.out / "logs")))
        self.device = acc.device
        self.bf16 = cfg.mixed_precision == "bf16" or (cfg.mixed_precision == "auto" and self.device.type == "cuda")
        self.rank, self.world = acc.process_index, acc.num_processes

        pipe = load_pipeline(stack_dir, device=self.device, dtype=torch.float32)
        settings = ClipSettings(cfg.width, cfg.height, cfg.num_frames, cfg.fps, cfg.motion_bucket_id,
                                cfg.noise_aug_strength, cfg.seed)
        cache_root = Path(cfg.latent_cache) if cfg.latent_cache else None
        pairs = prepare_latents(pipe, items, settings, stack_dir, self.device, cache_root, self.rank, self.world,
                                acc.wait_for_everyone, self.log)
        real = None
        if cfg.method == "ladd":
            real = prepare_teacher(stack_dir, pairs, settings, cfg.teacher_steps, cfg.teacher_max_guidance,
                                   self.device, cache_root / "teacher" if cache_root else None,
                                   self.rank, self.world, acc.wait_for_everyone, self.log, unet=pipe.unet)
        self.data = LatentDataset([f for _, f in pairs], real)
        self.vae = SimpleNamespace(vae=pipe.vae)   # for previews
        self.vae.vae.requires_grad_(False)

        unet = pipe.unet
        del pipe
        self.build(unet)
        if resume_from is not None:
            self._load_checkpoint(resume_from)
        self.G = acc.prepare_model(self.G)

        if acc.is_main_process:
            atomic_write_json(self.out / "config.json", cfg.to_dict())
        if report != "none":
            acc.init_trackers("sfv-train", config=_flat_config(cfg.to_dict()))
        self.log(f"sfv-train: method {cfg.method}, {len(self.data)} clips ({cfg.num_frames} frames "
                 f"{cfg.width}x{cfg.height} @ {cfg.fps} fps), D noise {cfg.d_noise}, heads {cfg.heads}, "
                 f"recon {cfg.recon}, R1 {cfg.r1}, {cfg.optimizer}, {self.world} process(es) on {self.device}"
                 f"{', bf16' if self.bf16 else ''}; step {self.step} -> {cfg.max_steps}")

    def build(self, unet) -> None:
        """Generator, EMA, discriminator, optimisers, noise sampler and RNG from the pretrained UNet.

        Needs ``self.device``, ``self.rank``; D copies the pretrained encoder (frozen), the EMA
        starts at the pretrained weights, heads are initialised from ``torch.manual_seed(seed)``
        (identical on every process)."""
        cfg = self.cfg
        unet.requires_grad_(False)
        torch.manual_seed(cfg.seed)
        self.D = Discriminator(unet, heads=cfg.heads, cmap_dim=cfg.cmap_dim).to(self.device)
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
        self.gen = torch.Generator().manual_seed(cfg.seed * 1000 + 1 + self.rank)
        self.step = 0

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
    def _load_checkpoint(self, ckpt: Path) -> None:
        state = json.loads((ckpt / "state.json").read_text())
        if state["num_processes"] != self.world:
            raise UserError(f"--resume: {ckpt} was written by {state['num_processes']} process(es), this run has "
                            f"{self.world}: launch with the same number of processes")
        self.G.load_state_dict(_load_safetensors(ckpt / "generator.safetensors"))
        self.ema.load_state_dict(_load_safetensors(ckpt / "ema.safetensors"))
        self.D.load_head_state_dict(_load_safetensors(ckpt / "heads.safetensors"))
        self.opt_g.load_state_dict(torch.load(ckpt / "optimizer_g.pt", map_location=self.device, weights_only=True))
        self.opt_d.load_state_dict(torch.load(ckpt / "optimizer_d.pt", map_location=self.device, weights_only=True))
        _set_rng_state(torch.load(ckpt / f"rng-{self.rank}.pt", weights_only=True), self.gen)
        self.step = int(state["step"])
        self.log(f"resumed from {ckpt} (step {self.step})")

    def save_checkpoint(self) -> Path:
        acc, step = self.acc, self.step
        final = self.ckpt_root / f"{CKPT_PREFIX}{step:06d}"
        tmp = self.ckpt_root / f".tmp-{CKPT_PREFIX}{step:06d}"
        if acc.is_main_process:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
        acc.wait_for_everyone()
        torch.save(_rng_state(self.gen), tmp / f"rng-{self.rank}.pt")
        acc.wait_for_everyone()
        if acc.is_main_process:
            _save_safetensors(acc.unwrap_model(self.G).state_dict(), tmp / "generator.safetensors")
            _save_safetensors(self.ema.state_dict(), tmp / "ema.safetensors")
            _save_safetensors(self.D.head_state_dict(), tmp / "heads.safetensors")
            torch.save(self.opt_g.state_dict(), tmp / "optimizer_g.pt")
            torch.save(self.opt_d.state_dict(), tmp / "optimizer_d.pt")
            atomic_write_json(tmp / "config.json", self.cfg.to_dict())
            atomic_write_json(tmp / "state.json", {
                "step": step, "num_processes": self.world, "time": time.time(), "method": self.cfg.method,
                "clips_seen": step * self.cfg.grad_accum * self.cfg.batch_size * self.world,
                "data_order": "sfv_train.data.sample_indices(n, seed, step, micro, accum, batch, rank, world)"})
            if final.exists():
                shutil.rmtree(final)
            os.replace(tmp, final)
            limit = self.cfg.checkpoints_total_limit
            if limit > 0:
                for old in list_checkpoints(self.ckpt_root)[:-limit]:
                    shutil.rmtree(old, ignore_errors=True)
        acc.wait_for_everyone()
        return final

    def export(self) -> Path:
        """out/export/unet (diffusers folder, safetensors) + out/export/sfv_train.json, replaced atomically."""
        acc, cfg = self.acc, self.cfg
        final = self.out / "export"
        if acc.is_main_process:
            model = self.ema if cfg.export_weights == "ema" else acc.unwrap_model(self.G)
            tmp = self.out / ".export-tmp"
            shutil.rmtree(tmp, ignore_errors=True)
            model.save_pretrained(tmp / "unet", safe_serialization=True)
            atomic_write_json(tmp / "sfv_train.json", {
                "method": cfg.method, "steps": 1, "sigma": SIGMA_MAX, "train_steps": self.step,
                "weights": cfg.export_weights, "stack": cfg.stack, "unet": "unet",
                "sampling": "x = 700 * noise; x0 = c_skip x + c_out F(c_in x; 0.25 ln 700) (EDM, one step)",
                "config": cfg.to_dict()})
            old = self.out / ".export-old"
            shutil.rmtree(old, ignore_errors=True)
            if final.exists():
                os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        acc.wait_for_everyone()
        return final

    @torch.no_grad()
    def preview(self) -> Path | None:
        """One-step sample (sigma 700) of the EMA generator on the first clip's condition -> mp4."""
        if not self.acc.is_main_process:
            return None
        from bench.videoio import write_video
        from methods.conditioning import decode_latents, frames_to_uint8

        b = self.data.batch([0], self.device)
        noise = torch.randn(b["latents"].shape, generator=torch.Generator().manual_seed(self.cfg.seed))
        sigma = torch.full((1,), SIGMA_MAX)
        x0 = denoise(self.ema, noise.to(self.device) * SIGMA_MAX, sigma, b["cond_latent"], b["image_embeds"],
                     b["added_time_ids"])
        video = frames_to_uint8(decode_latents(self.vae, x0, self.cfg.num_frames))[0]
        path = self.out / "previews" / f"{CKPT_PREFIX}{self.step:06d}.mp4"
        write_video(path, video, fps=self.cfg.fps)
        return path

    # ------------------------------------------------------------------------------- one step
    def _d_input(self, x, sigma_d, eps_d):
        s = sigma_d.to(self.device, torch.float32).view(-1, 1, 1, 1, 1)
        return (x.float() + s * eps_d) / (s * s + 1).sqrt()

    def _disc(self, x_in, sigma_d, b):
        c_noise = 0.25 * sigma_d.to(self.device, torch.float32).log()
        with self._autocast():
            return self.D(x_in, c_noise, b["cond_latent"], b["image_embeds"], b["added_time_ids"])

    def _recon(self, x0_hat, x0):
        cfg = self.cfg
        if cfg.recon == "none":
            return torch.zeros((), device=self.device)
        if cfg.recon == "mse":
            return losses.mse(x0_hat, x0)
        c = cfg.huber_c if cfg.huber_c is not None else losses.huber_c_auto(x0)
        return losses.pseudo_huber(x0_hat, x0, c)

    def train_step(self) -> dict:
        cfg, acc, gen = self.cfg, self.acc, self.gen
        accum = cfg.grad_accum
        m = {k: 0.0 for k in ("g_adv", "g_rec", "g_loss", "d_loss", "acc_real", "acc_fake", "sigma_d")}
        stash = []
        # ---- G phase (heads frozen)
        for p in self.D.head_parameters():
            p.requires_grad_(False)
        self.G.train()
        for a in range(accum):
            idx = sample_indices(len(self.data), cfg.seed, self.step, a, accum, cfg.batch_size, self.rank, self.world)
            b = self.data.batch(idx, self.device)
            x0 = b["latents"]
            g_idx, sigma = self.noise.sample_g(len(idx), gen)
            eps = torch.randn(x0.shape, generator=gen).to(self.device)
            sigma_d = self.noise.sample_d(g_idx, gen)
            eps_d = torch.randn(x0.shape, generator=gen).to(self.device)
            x_t = x0 + sigma.to(self.device, torch.float32).view(-1, 1, 1, 1, 1) * eps
            sync = contextlib.nullcontext() if a == accum - 1 else acc.no_sync(self.G)
            with sync:
                with self._autocast():
                    x0_hat = denoise(self.G, x_t, sigma, b["cond_latent"], b["image_embeds"], b["added_time_ids"])
                x0_hat = x0_hat.float()
                logits = self._disc(self._d_input(x0_hat, sigma_d, eps_d), sigma_d, b)
                l_adv = losses.hinge_g(logits)
                l_rec = self._recon(x0_hat, x0)
                loss = l_adv + cfg.recon_weight * l_rec
                acc.backward(loss / accum)
            stash.append((b, x0_hat.detach(), sigma_d, eps_d))
            m["g_adv"] += l_adv.item() / accum
            m["g_rec"] += l_rec.item() / accum
            m["g_loss"] += loss.item() / accum
            m["sigma_d"] += float(sigma_d.mean()) / accum
        m["grad_norm_g"] = self._clip(self.G.parameters())
        self.opt_g.step()
        self.opt_g.zero_grad(set_to_none=True)
        ema_update(self.ema, acc.unwrap_model(self.G), cfg.ema)

        # ---- D phase (backbone frozen, heads train)
        for p in self.D.head_parameters():
            p.requires_grad_(True)
        self.opt_d.zero_grad(set_to_none=True)
        r1_on = cfg.r1 in ("exact", "approx") or (cfg.r1 == "lazy" and self.step % cfg.r1_every == 0)
        r1_on = r1_on and cfg.r1_gamma > 0
        r1_w = cfg.r1_gamma * (cfg.r1_every if cfg.r1 == "lazy" else 1)
        exact = r1_on and cfg.r1 in ("exact", "lazy")
        r1_total = 0.0
        for b, fake, sigma_d, eps_d in stash:
            real_in = self._d_input(b["latents"], sigma_d, eps_d)
            fake_in = self._d_input(fake, sigma_d, eps_d)
            kernel = contextlib.nullcontext()
            if exact:
                from torch.nn.attention import SDPBackend, sdpa_kernel
                kernel = sdpa_kernel(SDPBackend.MATH)
                real_in.requires_grad_(True)
            with kernel:
                lr = self._disc(real_in, sigma_d, b)
                lf = self._disc(fake_in, sigma_d, b)
                loss = losses.hinge_d(lr, lf)
                r1 = None
                if exact:
                    r1 = losses.r1_exact(losses.score(lr), real_in)
                elif r1_on:
                    n = torch.randn(real_in.shape, generator=gen).to(self.device)
                    lp = self._disc(real_in + cfg.r1_eps * n, sigma_d, b)
                    r1 = losses.r1_approx(losses.score(lr), losses.score(lp), cfg.r1_eps)
                total = loss if r1 is None else loss + r1_w * r1
                (total / accum).backward()
            m["d_loss"] += loss.item() / accum
            m["acc_real"] += losses.accuracy(lr, True) / accum
            m["acc_fake"] += losses.accuracy(lf, False) / accum
            if r1 is not None:
                r1_total += r1.item() / accum
        if r1_on:
            m["r1"] = r1_total
        if self.world > 1:
            for p in self.D.head_parameters():
                if p.grad is not None:
                    torch.distributed.all_reduce(p.grad)
                    p.grad /= self.world
        m["grad_norm_d"] = self._clip(self.D.head_parameters())
        self.opt_d.step()
        self.opt_d.zero_grad(set_to_none=True)
        self.step += 1
        return m

    def _mean_over_processes(self, m: dict) -> dict:
        if self.world == 1:
            return m
        keys = sorted(m)
        v = self.acc.reduce(torch.tensor([m[k] for k in keys], device=self.device, dtype=torch.float64), "mean")
        return dict(zip(keys, v.tolist()))

    def _append_metrics(self, m: dict) -> None:
        """One JSON line per logged step in out/logs/metrics.jsonl (main process)."""
        if self.acc.is_main_process:
            path = self.out / "logs" / "metrics.jsonl"
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "a") as f:
                f.write(json.dumps({"step": self.step, **m}) + "\n")

    def _clip(self, params) -> float:
        params = [p for p in params if p.grad is not None]
        limit = self.cfg.max_grad_norm if self.cfg.max_grad_norm > 0 else float("inf")
        return float(torch.nn.utils.clip_grad_norm_(params, limit))

    # ------------------------------------------------------------------------------- run
    def run(self) -> Path:
        from tqdm.auto import tqdm

        self.setup()
        cfg, acc = self.cfg, self.acc
        self.history: list[dict] = []
        self.pbar = tqdm(total=cfg.max_steps, initial=self.step, desc=f"sfv-train {cfg.method}",
                         disable=not (cfg.progress and acc.is_main_process), dynamic_ncols=True, file=sys.stdout)
        try:
            while self.step < cfg.max_steps:
                m = self._mean_over_processes(self.train_step())
                self.history.append({"step": self.step, **m})
                for k, v in m.items():
                    if not np.isfinite(v):
                        raise FloatingPointError(f"non-finite {k} = {v} at step {self.step}")
                self.pbar.update(1)
                if self.step % cfg.log_every == 0 or self.step == cfg.max_steps:
                    acc.log(m, step=self.step)
                    self._append_metrics(m)
                    self.pbar.set_postfix({k: f"{m[k]:.3g}" for k in ("g_loss", "d_loss", "acc_real", "acc_fake")})
                    self.log(f"step {self.step}: " + " ".join(f"{k} {v:.4g}" for k, v in m.items()))
                if self.step % cfg.checkpoint_every == 0 or self.step == cfg.max_steps:
                    self.save_checkpoint()
                if cfg.preview_every and self.step % cfg.preview_every == 0:
                    self.preview()
        finally:
            self.pbar.close()
            self.pbar = None
        path = self.export()
        acc.end_training()
        self.log(f"exported {path / 'unet'} (weights: {cfg.export_weights}); generate with "
                 f"`sfv-bench run --methods {cfg.method}:1 --{cfg.method}-unet {path / 'unet'}`")
        return path


def train(cfg: TrainConfig, log=None) -> Trainer:
    t = Trainer(cfg, log=log)
    t.run()
    return t
