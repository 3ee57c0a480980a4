"""Training data: video folders -> clips -> cached latents (+ LADD teacher latents).

Rules:

* Videos: a UCF-101 root (``UCF-101/`` + ``ucfTrainTestlist/``, sfv_core.data.ucf101.UCF101) gives the videos
  of ``split`` / ``fold`` (default: the training list of fold 1, so the test videos the benchmark
  conditions on are never trained on); any other folder gives every video below it
  (sfv_core.data.videoio.list_videos). No videos -> UserError.
* Clip: ``num_frames`` frames at ``fps`` from frame 0: index_k = round(k * src_fps / fps)
  (sfv_core.data.clips.clip_indices, clip_start "first"); arrays without a frame rate (.npy/.npz) are read
  as if recorded at ``fps``. A video too short is skipped; when every video is too short (or
  undecodable) -> UserError. Frames are brought to width x height
  (``resize``: stretched like the benchmark's default geometry, or cover-cropped), so frame 0 is the
  conditioning image.
* Latents: ``vae.encode(2 x - 1).latent_dist.mode() * scaling_factor`` per frame (the scaled
  latent space the UNet denoises). Condition: methods.conditioning.encode_condition on frame 0 --
  CLIP embedding, noise-augmented image latent (noise from a per-video seed), added time ids
  [fps - 1, motion_bucket_id, noise_aug_strength] -- the same code the benchmark generates with;
  its noise comes from ``sfv_core.seeds.sample_seed(seed, rel)``.
* Cache: one safetensors file per video under ``<cache>/<key>/``, key = hash of the stack's VAE
  and image encoder (config + weight file sizes and mtimes), the clip settings and the seed;
  the file name hashes the video's path, size and mtime. Written atomically, encoded once.
  With several processes, each encodes its share of the videos not cached yet and waits for the others.
* LADD teacher latents: the multi-step ``svd`` method (methods.svd.SVDMethod.generate_latents:
  Euler over SVD's Karras schedule, batch-2 CFG rising from 1.0 to 3.0 over frames) from each
  video's conditioning frame with the per-video seed (so its condition is exactly the cached one),
  cached the same way, keyed by the stack's UNet and the precision too; made in the run's half precision
  (autocast), in batches, shared out evenly over the processes, the estimated time logged first.
* Work shared over processes: the videos not cached yet, every P-th to each process (``my_share``).
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from sfv_core.data.clips import clip_indices, frames_needed
from sfv_core.data.transforms import resize_cover_crop, resize_frames
from sfv_core.data.ucf101 import UCF101
from sfv_core.data.videoio import VideoDecodeError, list_videos, read_video, video_info
from sfv_core.errors import UserError
from sfv_core.fsutil import (atomic_write_json, cache_dir, file_signature, load_safetensors, save_safetensors,
                             sha256_json)
from sfv_core.protocol import GenerationConditions
from sfv_core.seeds import sample_seed

log = logging.getLogger(__name__)

CACHE_VERSION = 1
KEYS = ("latents", "cond_latent", "image_embeds", "added_time_ids")


@dataclass(frozen=True)
class ClipSettings:
    """What the cached latents depend on: the clips' generation conditions (``sfv_core.protocol``; width and
    height are the training size, ``resize`` how a source frame gets there) and the seed of the per-video
    noise."""
    conditions: GenerationConditions
    seed: int

    def __post_init__(self):
        if self.conditions.width is None or self.conditions.height is None:
            raise ValueError("training clips need a width and a height")

    @classmethod
    def of(cls, cfg) -> "ClipSettings":
        """From a TrainConfig (or anything with its clip fields)."""
        return cls(GenerationConditions.of(None, width=cfg.width, height=cfg.height, num_frames=cfg.num_frames,
                                           fps=cfg.fps, motion_bucket_id=cfg.motion_bucket_id,
                                           noise_aug_strength=cfg.noise_aug_strength, resize=cfg.resize), cfg.seed)

    def fit(self, frames: np.ndarray) -> np.ndarray:
        """uint8 (T, H, W, 3) source frames -> (T, height, width, 3), by the protocol's rule."""
        c = self.conditions
        if c.resize == "stretch":
            return resize_frames(frames, c.width, c.height)
        return resize_cover_crop(frames, c.width, c.height)

    def cache_key(self) -> dict:
        """The values a clip's latents depend on (the decode settings are not among them)."""
        c = self.conditions
        return {"width": c.width, "height": c.height, "num_frames": c.num_frames, "fps": c.fps,
                "motion_bucket_id": c.motion_bucket_id, "noise_aug_strength": c.noise_aug_strength,
                "seed": self.seed, "resize": c.resize}


@dataclass(frozen=True)
class VideoItem:
    path: Path
    rel: str


def find_videos(root, split: str = "train", fold: int = 1) -> list[VideoItem]:
    """Videos of a UCF-101 root (the split list) or of a plain folder, sorted by relative path."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise UserError(f"data folder {root} does not exist: pass a folder of videos (UCF-101 layout or plain)")
    try:
        ucf = UCF101(root)
    except UserError:
        ucf = None
    if ucf is not None:
        items = [VideoItem(r.path, r.rel) for r in ucf.refs(split, fold) if r.path.is_file()]
        where = f"the {split} list of fold {fold} of {root}"
    else:
        items = [VideoItem(p, p.relative_to(root).as_posix()) for p in list_videos(root)]
        where = str(root)
    if not items:
        raise UserError(f"no videos found in {where}: pass a folder holding .avi/.mp4/.mkv/.mov/.webm/.npy/.npz "
                        f"videos (a UCF-101 root or a plain folder); `sfv-bench make-synthetic DIR` writes one")
    return sorted(items, key=lambda v: v.rel)


def clip_frame_indices(n_src: int, src_fps: float, settings: ClipSettings) -> list[int] | None:
    """Source frames of the clip (from frame 0), or None when the video is too short."""
    c = settings.conditions
    return clip_indices(n_src, src_fps if src_fps > 0 else float(c.fps), c.num_frames, c.fps)


def load_clip(item: VideoItem, settings: ClipSettings) -> np.ndarray | None:
    """uint8 (T, height, width, 3) clip or None when too short. Raises VideoDecodeError."""
    n, fps, _, _ = video_info(item.path)
    idx = clip_frame_indices(n, fps, settings)
    if idx is None:
        return None
    return settings.fit(read_video(item.path, idx))


def component_signature(stack_dir: Path, names) -> dict:
    """Identity of stack components: their config and the size/mtime of their weight files."""
    out = {}
    for name in names:
        d = Path(stack_dir) / name
        files = sorted(p for p in d.glob("*") if p.is_file())
        out[name] = [[p.name, p.stat().st_size, p.stat().st_mtime_ns] if p.suffix != ".json"
                     else [p.name, hashlib.sha256(p.read_bytes()).hexdigest()] for p in files]
    return out


@torch.no_grad()
def encode_clip(pipe, clip: np.ndarray, settings: ClipSettings, rel: str, device) -> dict:
    """Latents and condition of one uint8 clip (T, H, W, 3) -> dict of CPU float32 tensors."""
    from methods.models.conditioning import encode_condition

    vae = pipe.vae
    x = torch.from_numpy(clip).to(device).permute(0, 3, 1, 2).float().div(255.0) * 2 - 1
    lat = torch.cat([vae.encode(x[i:i + 8].to(vae.dtype)).latent_dist.mode() for i in range(0, len(x), 8)])
    lat = lat.float() * vae.config.scaling_factor
    gen = torch.Generator(device).manual_seed(sample_seed(settings.seed, rel))
    c = settings.conditions
    cond = encode_condition(pipe, clip[:1], [gen], device, num_frames=1, fps=c.fps,
                            motion_bucket_id=c.motion_bucket_id, noise_aug_strength=c.noise_aug_strength)
    return {"latents": lat.cpu(), "cond_latent": cond.image_latents[0, 0].float().cpu(),
            "image_embeds": cond.image_embeddings[0].float().cpu(),
            "added_time_ids": cond.added_time_ids[0].float().cpu()}


class LatentCache:
    """Per-video cached tensors under ``root/<key>/``; see the module docstring."""

    def __init__(self, root: Path, key: dict):
        self.key = key
        self.dir = Path(root) / sha256_json(key)[:16]
        self.dir.mkdir(parents=True, exist_ok=True)
        meta = self.dir / "key.json"
        if not meta.exists():
            atomic_write_json(meta, key)

    def path(self, item: VideoItem, tag: str = "") -> Path:
        h = hashlib.sha256(json.dumps([item.rel, file_signature(item.path)[1:], tag]).encode()).hexdigest()[:20]
        return self.dir / f"{Path(item.rel).stem}-{h}.safetensors"


SKIP = "skip"  # marker written for a video too short or undecodable, so it is not retried


def prepare_latents(pipe, items: list[VideoItem], settings: ClipSettings, stack_dir: Path, *, device,
                    cache_root: Path | None = None, rank: int = 0, world: int = 1,
                    wait=None) -> list[tuple[VideoItem, Path]]:
    """Encode (once) every video's clip; return (item, cached file) of the usable videos, in item order.
    ``rank`` / ``world`` / ``wait`` (a barrier): this process's share of the work (``my_share``)."""
    key = {"version": CACHE_VERSION, "what": "latents", "clip": settings.cache_key(),
           "stack": component_signature(stack_dir, ("vae", "image_encoder", "feature_extractor"))}
    cache = LatentCache(cache_root or cache_dir("train-latents"), key)
    missing = [it for it in items if not cache.path(it).exists() and not cache.path(it, SKIP).exists()]
    todo = my_share(missing, rank, world, wait)
    if todo and rank == 0:
        log.info(f"encoding {len(missing)} of {len(items)} videos to latents (cache {cache.dir})")
    for it in todo:
        try:
            clip = load_clip(it, settings)
        except VideoDecodeError as e:
            warnings.warn(f"skipping undecodable video {e}", stacklevel=2)
            clip = None
        if clip is None:
            save_safetensors({"skip": torch.zeros(1)}, cache.path(it, SKIP))
            continue
        save_safetensors(encode_clip(pipe, clip, settings, it.rel, device), cache.path(it))
    if wait is not None:
        wait()
    pairs = [(it, cache.path(it)) for it in items if cache.path(it).exists()]
    if not pairs:
        c = settings.conditions
        need = frames_needed(25.0, c.num_frames, c.fps)
        raise UserError(f"none of the {len(items)} videos gives a clip of {c.num_frames} frames at "
                        f"{c.fps} fps (a 25 fps video needs {need} frames): use longer videos or "
                        f"ask for fewer --num-frames / a lower --fps")
    skipped = len(items) - len(pairs)
    if skipped and rank == 0:
        log.info(f"skipped {skipped} of {len(items)} videos (too short for the clip or undecodable)")
    return pairs


def prepare_teacher(stack_dir: Path, pairs: list[tuple[VideoItem, Path]], settings: ClipSettings, *, steps: int,
                    max_guidance: float, device, cache_root: Path | None = None, rank: int = 0, world: int = 1,
                    wait=None, unet=None, half=None, batch: int = 4) -> list[Path]:
    """LADD's data: latents of the ``svd:<steps>`` method (methods.svd.SVDMethod.generate_latents) from
    each usable video's conditioning frame, seeded with the video's seed -- so the teacher's condition
    (noise augmentation included) is exactly the cached one the student is trained with.

    ``half``: the run's autocast dtype (torch.bfloat16 / float16; None: float32), part of the cache key;
    ``batch`` videos per call (one seeded generator each: the same draws as one by one). The videos not
    cached yet are shared out evenly (process r takes every P-th of them), each batch is cached as soon as
    it is made (an interrupted run resumes there), and the estimated time (one UNet call timed, times
    the calls) is logged before the first batch."""
    from methods import get_method

    precision = str(half).replace("torch.", "") if half is not None else "float32"
    key = {"version": CACHE_VERSION, "what": "teacher", "steps": steps, "max_guidance": max_guidance,
           "clip": settings.cache_key(), "precision": precision,
           "stack": component_signature(stack_dir, ("unet", "vae", "image_encoder"))}
    cache = LatentCache(cache_root or cache_dir("teacher"), key)
    out = [cache.path(it, "teacher") for it, _ in pairs]
    missing = [i for i in range(len(pairs)) if not out[i].exists()]
    todo = my_share(missing, rank, world, wait)
    if todo:
        method = get_method(f"svd:{steps}", max_guidance=float(max_guidance))
        method.load(stack_dir, device, torch.float32, unet=unet)  # unet: the stack's, already loaded
        autocast = (torch.autocast(torch.device(device).type, dtype=half) if half is not None
                    else contextlib.nullcontext())
        chunks = [todo[k:k + batch] for k in range(0, len(todo), batch)]
        if rank == 0:
            per_call = unet_call_seconds(method.pipe.unet, len(chunks[0]) * (2 if method.cfg else 1),
                                         settings, device, autocast)
            minutes = len(chunks) * steps * per_call / 60
            log.info(f"generating teacher latents with svd:{steps}{' (CFG)' if method.cfg else ''} for "
                     f"{len(missing)} of {len(pairs)} videos, {precision}, batches of {batch}, {world} process(es): "
                     f"~{minutes:.1f} min ({len(chunks)} batch(es) x {steps} UNet calls per process, one measured: "
                     f"{per_call:.2f} s; cache {cache.dir})")
        for chunk in chunks:
            images = np.concatenate([settings.fit(read_video(pairs[i][0].path, [0])) for i in chunk])
            seeds = [sample_seed(settings.seed, pairs[i][0].rel) for i in chunk]
            with autocast:
                lat = method.generate_latents(images, seeds, settings.conditions)
            for i, x in zip(chunk, lat):
                save_safetensors({"latents": x.float().cpu()}, out[i])
        method.unload()
    if wait is not None:
        wait()
    return out


def my_share(missing: list, rank: int, world: int, wait=None) -> list:
    """This process's part of the work not cached yet: every ``world``-th item from ``rank``, so no process
    waits at the next barrier for more than one item's time. ``wait`` (a barrier) makes every process
    list ``missing`` before any writes."""
    if wait is not None and world > 1:
        wait()
    return missing[rank::world]


@torch.no_grad()
def unet_call_seconds(unet, n: int, settings: ClipSettings, device, autocast) -> float:
    """Seconds of one UNet call on ``n`` videos of the clip's latent size (zeros), in ``autocast``."""
    import time

    from methods.models.timing import sync

    c = unet.config
    h, w = settings.conditions.height // 8, settings.conditions.width // 8
    x = torch.zeros(n, settings.conditions.num_frames, c.in_channels, h, w, device=device)
    emb = torch.zeros(n, 1, c.cross_attention_dim, device=device)
    ids = torch.zeros(n, c.projection_class_embeddings_input_dim // c.addition_time_embed_dim, device=device)
    with autocast:
        sync(device)
        start = time.perf_counter()
        unet(x, torch.zeros(n, device=device), encoder_hidden_states=emb, added_time_ids=ids, return_dict=False)
        sync(device)
    return time.perf_counter() - start


class LatentDataset:
    """Cached items; ``batch(indices)`` stacks them. ``real`` overrides ``latents`` (LADD's teacher data)."""

    def __init__(self, files: list[Path], real: list[Path] | None = None):
        self.files, self.real = list(files), list(real) if real is not None else None
        self._mem: dict[int, dict] = {}

    def __len__(self) -> int:
        return len(self.files)

    def item(self, i: int) -> dict:
        if i not in self._mem:
            d = load_safetensors(self.files[i])
            if self.real is not None:
                d["latents"] = load_safetensors(self.real[i])["latents"]
            if len(self._mem) < 512:  # small sets stay in memory
                self._mem[i] = d
            return d
        return self._mem[i]

    def batch(self, indices, device) -> dict:
        items = [self.item(int(i)) for i in indices]
        return {k: torch.stack([it[k] for it in items]).to(device) for k in KEYS}


def sample_indices(n: int, seed: int, step: int, micro: int, accum: int, batch: int, rank: int,
                   world: int) -> list[int]:
    """Indices of micro-batch ``micro`` of optimisation step ``step`` on process ``rank``.

    A stream over epochs, each a permutation of 0..n-1 drawn from torch.Generator(seed + epoch);
    position p = ((step * accum + micro) * world + rank) * batch + i. Depends on nothing else, so a
    resumed run reads exactly the same data.
    """
    out = []
    for i in range(batch):
        p = ((step * accum + micro) * world + rank) * batch + i
        epoch, j = divmod(p, n)
        out.append(int(_perm(n, seed, epoch)[j]))
    return out


_PERMS: dict = {}


def _perm(n: int, seed: int, epoch: int) -> torch.Tensor:
    key = (n, seed, epoch)
    if key not in _PERMS:
        if len(_PERMS) > 8:
            _PERMS.clear()
        _PERMS[key] = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100003 + epoch))
    return _PERMS[key]
