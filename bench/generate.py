"""The samples store of a run: ``samples/<spec>/<sample_id>.npz`` (uint8 (T, H, W, 3), lossless,
atomic) with a ``.json`` sidecar (UNet seconds and calls, seed). The sidecar is written first: the
``.npz`` is the completion marker a resumed run looks for.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from sfv_core.data.transforms import resize_frames
from sfv_core.data.ucf101 import load_condition
from sfv_core.data.videoio import read_video, save_array
from sfv_core.fsutil import atomic_write_json


def spec_dirname(spec: str) -> str:
    return spec.replace(":", "_").replace("/", "_")


def missing(refs, out: Path) -> list:
    """The refs whose sample is not finished in ``out``."""
    return [r for r in refs if not (out / f"{r.sample_id}.npz").exists()]


def generate_method(method, refs, seeds: dict, out: Path, protocol, *, batch_size: int = 1,
                    save_size: str = "score", label: str = "", progress: bool = False) -> None:
    """Generate every missing sample of ``refs`` with a loaded ``method``; each sample is written atomically.

    One untimed warm-up first (lazy init, allocator and kernel selection are excluded from the times)."""
    todo = missing(refs, out)
    if not todo:
        return
    conditions = protocol.conditions()
    conds = {}

    def cond(ref):
        if ref.sample_id not in conds:
            conds[ref.sample_id] = load_condition(ref, protocol)
        return conds[ref.sample_id]

    method.warmup(protocol.gen_height, protocol.gen_width, conditions)
    bar = tqdm(total=len(todo), desc=f"{label:>14}", disable=not progress, unit="video")
    for i in range(0, len(todo), batch_size):
        chunk = todo[i:i + batch_size]
        images = np.stack([cond(r) for r in chunk])
        videos = method.generate(images, [seeds[r.sample_id] for r in chunk], conditions)
        times = method.last_unet_times()
        calls = method.unet_calls_per_video()
        for j, ref in enumerate(chunk):
            v = videos[j]  # AnimateLCM*: the adapter returns the first 14 of its 25 frames
            if save_size == "score":
                v = resize_frames(v, protocol.score_width, protocol.score_height)
            atomic_write_json(out / f"{ref.sample_id}.json", {
                "unet_seconds": times[j], "unet_calls": calls["calls"], "unet_batch": calls["batch"],
                "seed": seeds[ref.sample_id], "frames_generated": int(videos.shape[1])})
            save_array(out / f"{ref.sample_id}.npz", v)
            conds.pop(ref.sample_id, None)
        bar.update(len(chunk))
    bar.close()


def read_samples(refs, out: Path, protocol):
    """Yield (video at the scoring size, UNet seconds) of each finished sample, in ``refs`` order."""
    for ref in refs:
        v = read_video(out / f"{ref.sample_id}.npz")
        seconds = json.loads((out / f"{ref.sample_id}.json").read_text())["unet_seconds"]
        yield resize_frames(v, protocol.score_width, protocol.score_height), seconds
