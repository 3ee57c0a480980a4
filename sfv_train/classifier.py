"""The mini world's FVD detector: an I3D trained on the training pool as a small multi-task network.

Why trained: seeded random I3Ds at the mini world's size (32x32 clips seen at 64x64, 1/8 width) did
not rank temporal shuffling monotonically, so FVD there would not reward good motion. The network is
``InceptionI3d(num_classes=K, width_mult, input_size=64)``, unchanged; its K logits ARE the FVD
features, laid out as heads (``heads()``):

* ``class`` (C = 10): the synthetic class (cross-entropy, label smoothing, so logits stay bounded);
* ``arrow`` (2): the clip played forward or reversed (cross-entropy);
* ``blur``, ``noise``, ``shuffle``, ``frozen`` (1 each): the level of that degradation applied to the
  clip, normalised to [0, 1] (sigma / blur_max, std / noise_max, frames moved / T, frames frozen /
  (T - 1)) and scaled by ``level_scale`` in the feature (MSE), so a level shift moves the features
  about as much as a class change does.

K = C + 6 = 16: small enough for FVD at N = 64 to be well conditioned.

Standardised at export (``head_scales``, ``standardised``): each head's outputs are divided by their
spread on real, undegraded pool clips (the root of the head's mean per-output variance over
``STANDARDISE_CLIPS`` evenly spaced pool clips), folded into the final 1x1x1 conv's weight and bias, so
the exported network's features are the trained ones / scale exactly. Why: as trained, the class
logits spread 1.7 over real clips and the other heads 0.10-0.34, so FVD's trace term was ~90% class
variance and the degradations the detector was taught barely moved it (frozen video 15, svd:4 6.6
against svd:25 5.1 at N = 150). One scale per head (not per output) keeps the class and arrow argmax.

Augmentation, drawn per clip from the run's generator (so a resume continues exactly): with
``appearance``, a random colour-channel order and left-right flip (every (class, group) of the pool has
its own background, so without it the class head learns backgrounds and fails on the test groups);
reversed with ``p_reverse``; then each degradation independently with ``p_degrade`` at a level uniform over its
whole range (continuous; frame counts are integers): temporal shuffle (a random k frames move in one
cycle, all of them misplaced), frozen video (the last k frames replaced by frame 0), Gaussian blur
(sigma in (0, blur_max] px of the 32x32 clip), additive Gaussian noise (std in (0, noise_max] of 255);
all on the uint8 clip, which the detector's own ``preprocess`` then resizes (bilinear) and maps to
[-1, 1], as FVD does.

Honesty: the network is TAUGHT these four degradations, so that FVD rises with their severity is
partly by construction (benchmarks/bench_detector_sensitivity.py measures it on the evaluation's real
test clips, which the pool never contains, at severities between round values, but inside the
training ranges). That is acceptable for a
toy world: its FVD only has to order the mini world's methods sensibly (blurry, noisy, jerky or static
videos worse than sharp moving ones), not to match any published detector, and its numbers are
labelled as such everywhere. Unlike the Kinetics I3D, this one knows nothing beyond 10 synthetic
classes and these degradations; other defects move its features only as far as they happen to.

The network is FVD's own (``sfv_fvd.i3d.InceptionI3d``) and its input rule the detector's
(``sfv_fvd.detectors.preprocess``): ``DetectorTrainer(cfg, pool, labels, heldout, heldout_labels)``; labels
are the classes (slots) of the clips, ``pool_labels(spec)`` for a pool.
Batches are drawn from the loop's generator, so a resume continues exactly. BatchNorm runs in train
mode while training (momentum ``bn_momentum``); the export holds the eval-mode network's state dict.
Learning rate: at 2e-3 the level heads collapsed to a constant within a few steps; 3e-4..5e-4 learn.

Export (``out/export/``, replaced atomically): ``detector.safetensors`` (the state dict) and
``detector.json`` (num_classes = feature_dim = K, width_mult, input_size, heads, sha256 of the
safetensors file, figures on the held-out array: class accuracy, arrow-of-time accuracy (each clip
forward and reversed), mean absolute normalised level error per degradation).
"""
from __future__ import annotations

import math
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from sfv_core.data.synthetic import class_names
from sfv_core.errors import UserError
from sfv_core.fsutil import atomic_write_json, save_safetensors, sha256_file
from sfv_fvd.detectors import preprocess
from sfv_fvd.i3d import InceptionI3d

from .autoencoder import check_clips, warmup_cosine
from .loop import TrainLoop
from .loop_config import LoopConfig

DEGRADATIONS = ("blur", "noise", "shuffle", "frozen")
STANDARDISE_CLIPS = 512


# ------------------------------------------------------------------------------- degradations
# Each takes a uint8 clip (T, H, W, 3) tensor and returns a uint8 clip; level 0 returns it unchanged.

def blur(clip: torch.Tensor, sigma: float, gen=None) -> torch.Tensor:
    """Gaussian blur of every frame, ``sigma`` in pixels (separable, edges replicated)."""
    if sigma <= 0:
        return clip
    r = max(1, math.ceil(3 * sigma))
    k = torch.exp(-torch.arange(-r, r + 1, dtype=torch.float32) ** 2 / (2 * sigma * sigma))
    k = k / k.sum()
    x = F.pad(clip.permute(0, 3, 1, 2).float(), (r, r, r, r), mode="replicate")
    x = F.conv2d(x, k.view(1, 1, 1, -1).expand(3, 1, 1, -1), groups=3)
    x = F.conv2d(x, k.view(1, 1, -1, 1).expand(3, 1, -1, 1), groups=3)
    return x.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous()


def noise(clip: torch.Tensor, std: float, gen=None) -> torch.Tensor:
    """Additive Gaussian noise of ``std`` (0..255 scale), rounded and clipped."""
    if std <= 0:
        return clip
    x = clip.float() + std * torch.randn(clip.shape, generator=gen)
    return x.round().clamp(0, 255).to(torch.uint8)


def shuffle(clip: torch.Tensor, frac: float, gen=None) -> torch.Tensor:
    """round(frac * T) random frames move one place along a cycle: every one of them is misplaced."""
    k = shuffled_frames(len(clip), frac)
    if k == 0:
        return clip
    sel = torch.randperm(len(clip), generator=gen)[:k]
    out = clip.clone()
    out[sel] = clip[sel.roll(1)]
    return out


def shuffled_frames(frames: int, frac: float) -> int:
    k = int(round(frac * frames))
    return k if k >= 2 else 0          # one frame cannot move alone


def frozen(clip: torch.Tensor, k: float, gen=None) -> torch.Tensor:
    """The last ``k`` frames replaced by frame 0 (the video stops, then jumps back)."""
    k = int(k)
    if k <= 0:
        return clip
    out = clip.clone()
    out[len(clip) - k:] = clip[0]
    return out


APPLY = {"blur": blur, "noise": noise, "shuffle": shuffle, "frozen": frozen}


# ------------------------------------------------------------------------------- configuration

@dataclass
class DetectorConfig(LoopConfig):
    classes: int = 10                 # the synthetic classes (labels 0 .. classes-1)
    batch_size: int = 16
    lr: float = 1e-3                  # AdamW: linear warm-up, cosine decay to min_lr_ratio x lr at max_steps
    warmup_steps: int = 50
    min_lr_ratio: float = 0.05
    weight_decay: float = 1e-4
    max_grad_norm: float = 5.0
    width_mult: float = 0.125
    input_size: int = 64
    dropout: float = 0.1              # I3D's dropout before the logits, while training
    bn_momentum: float = 0.01         # BatchNorm running statistics while training (I3D's own: 0.001)
    label_smoothing: float = 0.1
    p_reverse: float = 0.5
    appearance: bool = True           # random left-right flip and colour-channel order (not a feature)
    p_degrade: float = 0.5            # each degradation, independently
    blur_max: float = 3.0             # sigma, pixels of the 32x32 clip
    noise_max: float = 40.0           # std, of 255
    level_scale: float = 4.0          # feature value of a level-1 degradation
    w_arrow: float = 0.5
    w_level: float = 4.0
    w_shuffle: float = 1.0            # extra weight of the shuffle level (4 made every head worse in the build)
    log_every: int = 25
    checkpoint_every: int = 200

    def resolved(self):
        c = super().resolved()
        if c.batch_size < 1 or c.classes < 2 or c.level_scale <= 0:
            raise UserError(f"detector training needs batch_size >= 1, classes >= 2 and level_scale > 0 "
                            f"(got {c.batch_size}, {c.classes}, {c.level_scale})")
        if c.input_size % 32 or not 0 < c.width_mult <= 1:
            raise UserError(f"input_size must be a multiple of 32 and width_mult in (0, 1] "
                            f"(got {c.input_size}, {c.width_mult})")
        return c


def heads(classes: int) -> list[dict]:
    """Where each output lives in the K logits (the FVD features)."""
    out = [{"name": "class", "start": 0, "size": classes, "loss": "cross-entropy",
            "labels": class_names(classes)},
           {"name": "arrow", "start": classes, "size": 2, "loss": "cross-entropy", "labels": ["forward", "reversed"]}]
    for i, name in enumerate(DEGRADATIONS):
        out.append({"name": name, "start": classes + 2 + i, "size": 1, "loss": "mse",
                    "target": "level_scale * normalised level"})
    return out


def head_scales(feats: torch.Tensor, hs: list[dict]) -> dict[str, float]:
    """Per head: the root of its outputs' mean variance over ``feats`` (N, K) of real clips."""
    return {h["name"]: float(feats[:, h["start"]:h["start"] + h["size"]].double().var(0, unbiased=False)
                             .mean().sqrt()) for h in hs}


def standardised(state: dict, hs: list[dict], scales: dict[str, float]) -> dict:
    """``state`` with each head's logits (weight and bias of ``logits.conv3d``) divided by its scale."""
    div = torch.ones(sum(h["size"] for h in hs), dtype=torch.float64)
    for h in hs:
        if not scales[h["name"]] > 0:
            raise ValueError(f"head {h['name']}: scale {scales[h['name']]} (a constant output cannot be standardised)")
        div[h["start"]:h["start"] + h["size"]] = scales[h["name"]]
    out = dict(state)
    for key, shape in (("logits.conv3d.weight", (-1, 1, 1, 1, 1)), ("logits.conv3d.bias", (-1,))):
        out[key] = (state[key].double() / div.view(shape)).to(state[key].dtype)
    return out


# ------------------------------------------------------------------------------- the trainer

def pool_labels(spec) -> np.ndarray:
    """The class (slot) of every clip of a pool (``sfv_train.pool.PoolSpec``), in order."""
    return np.array([slot for slot, _, _ in spec.keys()])


def _check_labels(labels, clips, classes: int, what: str) -> torch.Tensor:
    lab = np.asarray(labels)
    if lab.shape != (len(clips),) or not np.issubdtype(lab.dtype, np.integer) or lab.min() < 0 or lab.max() >= classes:
        raise UserError(f"{what} labels: one integer class in 0..{classes - 1} per clip ({len(clips)}), "
                        f"got {lab.dtype} {lab.shape}")
    return torch.from_numpy(lab.astype(np.int64))


class DetectorTrainer(TrainLoop):
    """Trains the mini detector (an ``InceptionI3d`` fed by the detector's ``preprocess``); see the module
    doc. ``pool`` / ``heldout``: uint8 (N, T, H, W, 3) clips with their class labels (N,)."""

    name = "mini-detector"
    postfix = ("loss", "acc_class", "acc_arrow")
    tracker_names = {"loss": "loss/total", "loss_class": "loss/class", "loss_arrow": "loss/arrow",
                     "loss_level": "loss/level", "acc_class": "accuracy/class", "acc_arrow": "accuracy/arrow"}

    def __init__(self, cfg: DetectorConfig, pool, labels, heldout, heldout_labels):
        super().__init__(cfg)
        c = self.cfg.classes
        self.clips = torch.from_numpy(np.array(check_clips(pool, "pool")))      # a copy: pools are memory maps
        self.labels = _check_labels(labels, pool, c, "pool")
        self.held = torch.from_numpy(np.array(check_clips(heldout, "held-out")))
        self.held_labels = _check_labels(heldout_labels, heldout, c, "held-out")
        self.frames = self.clips.shape[1]
        self.maxima = {"blur": self.cfg.blur_max, "noise": self.cfg.noise_max, "shuffle": 1.0,
                       "frozen": float(self.frames - 1)}
        self.K = c + 2 + len(DEGRADATIONS)
        self.desc = "mini detector"

    def build(self) -> None:
        cfg = self.cfg
        if self.world > 1:
            raise UserError("the mini-world trainers run in one process: launch without accelerate's multi-process")
        torch.manual_seed(cfg.seed)
        net = InceptionI3d(num_classes=self.K, width_mult=cfg.width_mult, input_size=cfg.input_size)
        net.dropout.p = cfg.dropout
        for m in net.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.momentum = cfg.bn_momentum
        self.net = net.to(self.device).train()
        self.opt = torch.optim.AdamW(self.net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.log(f"mini detector: I3D width {cfg.width_mult:g} at {cfg.input_size}px, K = {self.K} features, "
                 f"{len(self.clips)} pool clips, {len(self.held)} held out, batch {cfg.batch_size} on {self.device}; "
                 f"step {self.step} -> {cfg.max_steps}")

    def checkpoint_parts(self) -> tuple[dict, dict]:
        return {"detector": self.net}, {"optimizer": self.opt}

    def checkpoint_state(self) -> dict:
        return {"clips_seen": self.step * self.cfg.batch_size}

    # -- data ---------------------------------------------------------------------------------
    def augment(self, clips: torch.Tensor, gen) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Random appearance, reversal and degradations of uint8 (B, T, H, W, 3) -> (clips, reversed (B,),
        levels (B, 4))."""
        cfg = self.cfg
        out, rev, levels = [], torch.zeros(len(clips), dtype=torch.long), torch.zeros(len(clips), len(DEGRADATIONS))
        t = self.frames
        for i, clip in enumerate(clips):
            u = torch.rand(2 + 2 * len(DEGRADATIONS), generator=gen).tolist()
            if cfg.appearance:
                clip = clip[..., torch.randperm(3, generator=gen)]
                clip = clip.flip(2) if u[-1] < 0.5 else clip
            if u[0] < cfg.p_reverse:
                clip, rev[i] = clip.flip(0), 1
            for j, name in enumerate(("shuffle", "frozen", "blur", "noise")):   # time first, noise last
                if u[1 + 2 * j] >= cfg.p_degrade:
                    continue
                level = self._level(name, u[2 + 2 * j], t)
                clip = APPLY[name](clip, level, gen)
                levels[i, DEGRADATIONS.index(name)] = self._normalised(name, level, t)
            out.append(clip)
        return torch.stack(out), rev, levels

    def _level(self, name: str, u: float, frames: int) -> float:
        if name == "frozen":
            return float(1 + min(int(u * (frames - 1)), frames - 2))    # 1 .. T-1 frames
        return (1.0 - u) * self.maxima[name]                             # (0, max]

    def _normalised(self, name: str, level: float, frames: int) -> float:
        if name == "shuffle":
            return shuffled_frames(frames, level) / frames
        return level / self.maxima[name]

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        x = preprocess(clips, self.device, self.cfg.input_size)
        with self.autocast():
            return self.net(x).float()

    def losses(self, y, labels, rev, levels) -> dict:
        cfg, c = self.cfg, self.cfg.classes
        l_class = F.cross_entropy(y[:, :c], labels, label_smoothing=cfg.label_smoothing)
        l_arrow = F.cross_entropy(y[:, c:c + 2], rev, label_smoothing=cfg.label_smoothing)
        w = torch.ones(len(DEGRADATIONS), device=y.device)
        w[DEGRADATIONS.index("shuffle")] = cfg.w_shuffle
        l_level = (F.mse_loss(y[:, c + 2:] / cfg.level_scale, levels, reduction="none") * w).sum(1).mean()
        return {"loss": l_class + cfg.w_arrow * l_arrow + cfg.w_level * l_level, "loss_class": l_class,
                "loss_arrow": l_arrow, "loss_level": l_level}

    def train_step(self) -> dict:
        cfg = self.cfg
        self.net.train()
        for g in self.opt.param_groups:
            g["lr"] = cfg.lr * warmup_cosine(self.step, cfg.warmup_steps, cfg.max_steps, cfg.min_lr_ratio)
        idx = torch.randint(len(self.clips), (cfg.batch_size,), generator=self.gen)
        clips, rev, levels = self.augment(self.clips[idx], self.gen)
        labels = self.labels[idx].to(self.device)
        y = self.forward(clips)
        parts = self.losses(y, labels, rev.to(self.device), levels.to(self.device))
        self.acc.backward(parts["loss"])
        m = {k: v.item() for k, v in parts.items()}
        m["grad_norm"] = self.clip_grad(self.net.parameters(), cfg.max_grad_norm)
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        self.step += 1
        c = cfg.classes
        m["acc_class"] = (y[:, :c].argmax(1) == labels).float().mean().item()
        m["acc_arrow"] = (y[:, c:c + 2].argmax(1).cpu() == rev).float().mean().item()
        return m

    # -- figures and export --------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self, batch: int = 32) -> dict:
        """Eval-mode figures on the held-out clips: class accuracy (forward clips), arrow-of-time accuracy
        (each clip forward and reversed), mean absolute normalised level error per degradation (each
        clip at a seeded random level of that degradation alone)."""
        gen = torch.Generator().manual_seed(12345)
        c, t, held, n = self.cfg.classes, self.frames, self.held, len(self.held)
        labels = self.held_labels.to(self.device)
        fwd, back = self.features(held, batch), self.features(held.flip(1), batch)
        out = {"heldout_clips": n,
               "class_accuracy": (fwd[:, :c].argmax(1) == labels).float().mean().item(),
               "arrow_accuracy": ((fwd[:, c:c + 2].argmax(1) == 0).float().sum()
                                  + (back[:, c:c + 2].argmax(1) == 1).float().sum()).item() / (2 * n),
               "level_mae": {}}
        for j, name in enumerate(DEGRADATIONS):
            lv = [self._level(name, u, t) for u in torch.rand(n, generator=gen).tolist()]
            clips = torch.stack([APPLY[name](clip, v, gen) for clip, v in zip(held, lv)])
            target = torch.tensor([self._normalised(name, v, t) for v in lv], device=self.device)
            pred = self.features(clips, batch)[:, c + 2 + j] / self.cfg.level_scale
            out["level_mae"][name] = (pred - target).abs().mean().item()
        return out

    @torch.no_grad()
    def features(self, clips: torch.Tensor, batch: int = 32) -> torch.Tensor:
        """The eval-mode network's (unstandardised) outputs for uint8 clips, float32 (N, K)."""
        net = self.net.eval()
        try:
            return torch.cat([net(preprocess(clips[i:i + batch], self.device, self.cfg.input_size)).float()
                              for i in range(0, len(clips), batch)])
        finally:
            self.net.train()

    def export(self) -> Path:
        """out/export/detector.safetensors + detector.json, replacing any previous export atomically."""
        cfg = self.cfg
        figures = self.evaluate()
        hs = heads(cfg.classes)
        pick = torch.linspace(0, len(self.clips) - 1, min(STANDARDISE_CLIPS, len(self.clips))).round().long()
        scales = head_scales(self.features(self.clips[pick]), hs)
        final, tmp, old = self.out / "export", self.out / ".export-tmp", self.out / ".export-old"
        shutil.rmtree(tmp, ignore_errors=True)
        save_safetensors(standardised(self.net.eval().state_dict(), hs, scales), tmp / "detector.safetensors")
        self.net.train()
        atomic_write_json(tmp / "detector.json", {
            "num_classes": self.K, "feature_dim": self.K, "width_mult": cfg.width_mult, "input_size": cfg.input_size,
            "heads": hs, "level_scale": cfg.level_scale, "level_maxima": self.maxima,
            "feature_scale": {"per_head": scales, "clips": len(pick),
                              "rule": "features = trained outputs / the head's spread on real pool clips"},
            "sha256": sha256_file(tmp / "detector.safetensors"), "train_steps": self.step, "figures": figures,
            "config": cfg.to_dict()})
        shutil.rmtree(old, ignore_errors=True)
        if final.exists():
            os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
        self.log(f"exported {final}: held-out class accuracy {figures['class_accuracy']:.3f}, arrow of time "
                 f"{figures['arrow_accuracy']:.3f}, level MAE "
                 + " ".join(f"{k} {v:.3f}" for k, v in figures["level_mae"].items()))
        return final
