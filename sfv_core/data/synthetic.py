"""A synthetic dataset in UCF-101's exact layout (``sfv-bench make-synthetic DIR``).

Layout written under ``root`` (the same as the real download)::

    UCF-101/<Class>/v_<Class>_gXX_cYY.avi     mpeg4 AVI, 25 fps, 320x240 by default
    ucfTrainTestlist/classInd.txt             "1 BouncingBall" (1-based, classes sorted by name)
    ucfTrainTestlist/trainlist0{1,2,3}.txt    "BouncingBall/v_BouncingBall_g03_c01.avi 1"
    ucfTrainTestlist/testlist0{1,2,3}.txt     "BouncingBall/v_BouncingBall_g01_c01.avi"
    sfv_synthetic.json                        parameters; written last (idempotence marker)

List files use CRLF line endings, as the real ones do.

Classes: moving shapes and textures, each class with its own kind of motion (``KINDS``: a ball
bouncing diagonally, a square sliding horizontally, a bar rotating about its centre, a disk whose
radius pulses, a diagonal grating drifting across the frame, ...). With more classes than kinds,
kinds repeat with a faster speed range and a numeric suffix (``BouncingBall2``). Every video draws
its own colours, sizes, start positions, speeds and phases inside its class's range; the two
levels of randomness mimic UCF-101: a group (``gXX``, one actor/scene in UCF) fixes the
background, a clip (``cYY``) the moving object. Random numbers come from
``numpy.random.default_rng([seed, class_slot, group(, clip)])``, so a video does not change when
the dataset gets more classes, groups or clips. Edges are anti-aliased, so motion is smooth at
sub-pixel speed. Same seed and parameters -> identical bytes on one machine (numpy float32 maths and
the mpeg4 encoder are deterministic); another CPU or numpy build may differ by rounding.

Cost: about 85 ms of CPU per default video (60 frames of 320x240: ~50 ms drawing, ~35 ms mpeg4
encoding); the default 70 videos take ~6 CPU-seconds, spread over a small thread pool.

Split rule (UCF-101's, scaled to the group count): UCF-101 has 25 groups per class and fold k
tests groups 7(k-1)+1 .. 7k (g01-g07, g08-g14, g15-g21); g22-g25 are always training data. Here
the test block is ``b = max(1, round(7 * groups / 25))`` groups and fold k tests groups
``(k-1)*b+1 .. k*b``; the remaining groups are always training data. Default 7 groups: b = 2,
fold 1 tests g01-g02, fold 2 g03-g04, fold 3 g05-g06, g07 is always train. Needs groups >= 3.
"""
from __future__ import annotations

import json
import math
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from ..errors import UserError
from ..fsutil import atomic_write_json, atomic_write_text, cache_dir
from .ucf101 import LIST_DIR, VIDEO_DIR
from .videoio import write_video

SYNTHETIC_VERSION = 1
MANIFEST = "sfv_synthetic.json"
BIT_RATE = 800_000      # about UCF-101's own rate at 320x240


# --------------------------------------------------------------------------- drawing helpers
# Coordinates: xs (1, 1, W), ys (1, H, 1), per-frame parameters (T, 1, 1); alphas (T, H, W) in [0, 1].

def _reflect(p, lo, hi):
    """Bounce ``p`` between lo and hi (triangle wave), so positions stay inside the frame."""
    span = max(hi - lo, 1e-3)
    q = np.mod(p - lo, 2 * span)
    return lo + span - np.abs(q - span)


def _edge(x):
    """Anti-aliased step, in place: 1 where x > 0.5, 0 where x < -0.5, linear between."""
    np.clip(x, -0.5, 0.5, out=x)
    x += 0.5
    return x


def _half_width(half, x):
    """In place: half - |x| (distance inside a band of half-width ``half``; x is a fresh array)."""
    np.abs(x, out=x)
    return np.subtract(half, x, out=x)


def _disk(xs, ys, cx, cy, r):
    d = np.add((xs - cx) ** 2, (ys - cy) ** 2)          # the only full-size array; the rest in place
    np.sqrt(d, out=d)
    return _edge(np.subtract(r, d, out=d))


def _box(xs, ys, cx, cy, hw, hh):
    return np.multiply(_edge(_half_width(hw, xs - cx)), _edge(_half_width(hh, ys - cy)))


def _bar(xs, ys, cx, cy, angle, half_len, half_thick):
    c, s = np.cos(angle), np.sin(angle)
    dx, dy = xs - cx, ys - cy
    along = _edge(_half_width(half_len, np.add(dx * c, dy * s)))
    across = _edge(_half_width(half_thick, np.subtract(dy * c, dx * s)))
    along *= across
    return along


def _random_sign(rng):
    """+1 or -1 with equal odds (the direction of a motion)."""
    return 1.0 if rng.random() < 0.5 else -1.0


# --------------------------------------------------------------------------- the classes' motions
# Each kind: f(rng, t, xs, ys, W, H, S, v) -> the object's alpha (T, H, W) float32; S scales sizes with
# the frame (1 at 240 rows), v is the class's speed factor.

def _bouncing_ball(rng, t, xs, ys, W, H, S, v):
    r = rng.uniform(12, 22) * S
    speed = rng.uniform(4, 7) * S * v
    ang = math.radians(rng.uniform(25, 65)) + (math.pi / 2) * rng.integers(4)   # diagonal
    x0, y0 = rng.uniform(r, W - r), rng.uniform(r, H - r)
    cx = _reflect(x0 + speed * math.cos(ang) * t, r, W - r)
    cy = _reflect(y0 + speed * math.sin(ang) * t, r, H - r)
    return _disk(xs, ys, cx, cy, r)


def _sliding_square(rng, t, xs, ys, W, H, S, v):
    h = rng.uniform(15, 28) * S
    vx = _random_sign(rng) * rng.uniform(3, 6) * S * v                             # horizontal
    x0, y0 = rng.uniform(h, W - h), rng.uniform(h, H - h)
    return _box(xs, ys, _reflect(x0 + vx * t, h, W - h), y0, h, h)


def _rotating_bar(rng, t, xs, ys, W, H, S, v):
    cx, cy = W / 2 + rng.uniform(-20, 20) * S, H / 2 + rng.uniform(-20, 20) * S
    omega = _random_sign(rng) * rng.uniform(0.06, 0.12) * v                       # rad / frame
    ang = rng.uniform(0, math.pi) + omega * t
    return _bar(xs, ys, cx, cy, ang, rng.uniform(60, 95) * S, rng.uniform(5, 9) * S)


def _pulsing_disk(rng, t, xs, ys, W, H, S, v):
    r0 = rng.uniform(25, 45) * S
    cx, cy = rng.uniform(r0 * 1.4, W - r0 * 1.4), rng.uniform(r0 * 1.4, H - r0 * 1.4)
    period = rng.uniform(12, 20) / v                                              # frames
    r = r0 * (1 + 0.35 * np.sin(2 * math.pi * t / period + rng.uniform(0, 2 * math.pi)))
    return _disk(xs, ys, np.full_like(t, cx), cy, r)      # cx per frame: the distance array is (T, H, W)


def _drifting_texture(rng, t, xs, ys, W, H, S, v):
    period = rng.uniform(20, 40) * S
    ang = math.radians(rng.uniform(30, 60)) + (math.pi / 2) * rng.integers(4)     # diagonal grating
    speed = rng.uniform(1.5, 3.0) * S * v                                         # px / frame
    k = 2 * math.pi / period
    a = k * math.cos(ang) * xs - k * speed * t + rng.uniform(0, 2 * math.pi)      # (T, 1, W)
    b = k * math.sin(ang) * ys                                                    # (1, H, 1)
    wave = np.multiply(np.sin(a), np.cos(b))                                      # sin(a + b), separably
    wave += np.multiply(np.cos(a), np.sin(b))
    wave *= 0.4
    wave += 0.4
    return wave


def _orbiting_dot(rng, t, xs, ys, W, H, S, v):
    R, r = rng.uniform(50, 85) * S, rng.uniform(10, 16) * S
    cx, cy = W / 2 + rng.uniform(-15, 15) * S, H / 2 + rng.uniform(-10, 10) * S
    ang = rng.uniform(0, 2 * math.pi) + _random_sign(rng) * rng.uniform(0.1, 0.2) * v * t
    return _disk(xs, ys, cx + R * np.cos(ang), cy + R * np.sin(ang), r)


def _falling_blocks(rng, t, xs, ys, W, H, S, v):
    layers = []
    for _ in range(3):
        h = rng.uniform(8, 14) * S
        x0, y0, vy = rng.uniform(h, W - h), rng.uniform(0, H), rng.uniform(3, 6) * S * v
        cy = np.mod(y0 + vy * t, H + 4 * h) - 2 * h                               # falls, wraps to the top
        layers.append(_box(xs, ys, x0, cy, h, h))
    return np.maximum(np.maximum(layers[0], layers[1]), layers[2])


def _expanding_ring(rng, t, xs, ys, W, H, S, v):
    cx, cy = W / 2 + rng.uniform(-30, 30) * S, H / 2 + rng.uniform(-20, 20) * S
    rmax = 0.45 * H
    radius = np.mod(rng.uniform(0, rmax) + rng.uniform(2, 4) * S * v * t, rmax)
    d = np.sqrt((xs - cx) ** 2 + (ys - cy) ** 2)
    return _edge(rng.uniform(3, 6) * S - np.abs(d - radius))


def _swinging_pendulum(rng, t, xs, ys, W, H, S, v):
    px, py = W / 2 + rng.uniform(-30, 30) * S, rng.uniform(5, 15) * S
    length = rng.uniform(0.55, 0.75) * H
    theta = rng.uniform(0.5, 0.9) * np.sin(2 * math.pi * v * t / rng.uniform(20, 30) + rng.uniform(0, 2 * math.pi))
    bx, by = px + length * np.sin(theta), py + length * np.cos(theta)
    rod = _bar(xs, ys, (px + bx) / 2, (py + by) / 2, math.pi / 2 - theta, length / 2, 2.0 * S)
    return np.maximum(rod, _disk(xs, ys, bx, by, rng.uniform(12, 18) * S))


def _zooming_checker(rng, t, xs, ys, W, H, S, v):
    c0 = rng.uniform(14, 24) * S
    cell = c0 * (1 + 0.5 * np.sin(2 * math.pi * v * t / rng.uniform(20, 30) + rng.uniform(0, 2 * math.pi)))
    cx, cy = W / 2, H / 2
    prod = np.sin(math.pi * (xs - cx) / cell) * np.sin(math.pi * (ys - cy) / cell)
    return 0.5 + 0.4 * np.tanh(4 * prod)


KINDS = [
    ("BouncingBall", _bouncing_ball),
    ("SlidingSquare", _sliding_square),
    ("RotatingBar", _rotating_bar),
    ("PulsingDisk", _pulsing_disk),
    ("DriftingTexture", _drifting_texture),
    ("OrbitingDot", _orbiting_dot),
    ("FallingBlocks", _falling_blocks),
    ("ExpandingRing", _expanding_ring),
    ("SwingingPendulum", _swinging_pendulum),
    ("ZoomingChecker", _zooming_checker),
]


def class_names(classes: int) -> list[str]:
    """Names in generation order (slot i -> KINDS[i % len(KINDS)], suffix 2, 3, ... on repeats)."""
    out = []
    for i in range(classes):
        name, rep = KINDS[i % len(KINDS)][0], i // len(KINDS)
        out.append(name if rep == 0 else f"{name}{rep + 1}")
    return out


def _background(rng, H, W) -> np.ndarray:
    """Static scene of one group: a two-colour linear gradient plus a few soft blobs, float32 (H, W, 3)."""
    ys = np.arange(H, dtype=np.float32)[:, None]
    xs = np.arange(W, dtype=np.float32)[None, :]
    c0, c1 = rng.uniform(10, 140, 3).astype(np.float32), rng.uniform(10, 140, 3).astype(np.float32)
    ang = rng.uniform(0, 2 * math.pi)
    g = xs * math.cos(ang) + ys * math.sin(ang)
    g = (g - g.min()) / max(float(g.max() - g.min()), 1e-6)
    bg = c0 + (c1 - c0) * g[..., None]
    for _ in range(3):
        bx, by, br = rng.uniform(0, W), rng.uniform(0, H), rng.uniform(0.1, 0.3) * min(H, W)
        blob = np.exp(-(xs - bx) ** 2 / (2 * br * br)) * np.exp(-(ys - by) ** 2 / (2 * br * br))   # separable
        bg += rng.uniform(-40, 40, 3).astype(np.float32) * blob[..., None]
    return np.clip(bg, 0, 255)


def render_video(seed: int, slot: int, group: int, clip: int, frames: int = 60,
                 width: int = 320, height: int = 240) -> np.ndarray:
    """Frames (T, H, W, 3) uint8 of class slot ``slot`` (0-based), group and clip (1-based)."""
    H, W = height, width
    bg = _background(np.random.default_rng([seed, slot, group]), H, W)
    rng = np.random.default_rng([seed, slot, group, clip])
    t = np.arange(frames, dtype=np.float32)[:, None, None]
    xs = np.arange(W, dtype=np.float32)[None, None, :]
    ys = np.arange(H, dtype=np.float32)[None, :, None]
    S = min(H, W) / 240.0
    speed = 1.0 + 0.5 * (slot // len(KINDS))
    alpha = KINDS[slot % len(KINDS)][1](rng, t, xs, ys, W, H, S, speed)
    alpha = np.broadcast_to(np.asarray(alpha, np.float32), (frames, H, W))
    colour = rng.uniform(0, 255, 3)
    if np.abs(colour - bg.mean((0, 1))).sum() < 150:          # keep the object visible
        colour = 255 - colour
    # frame = bg + alpha * (colour - bg), one colour plane at a time (contiguous, much faster than
    # broadcasting over a trailing axis of 3); +0.5 so that the truncating cast rounds (max 255.5 -> 255)
    diff, base = (colour - bg).astype(np.float32), bg + np.float32(0.5)
    out = np.empty((frames, H, W, 3), np.uint8)
    plane = np.empty((frames, H, W), np.float32)
    for c in range(3):
        np.multiply(alpha, diff[:, :, c], out=plane)
        np.add(plane, base[:, :, c], out=out[..., c], casting="unsafe")    # add and cast in one pass
    return out


# --------------------------------------------------------------------------- split lists

def render_clip(seed: int, *, slot: int, group: int, clip: int, num_frames: int, fps: int, width: int,
                height: int) -> np.ndarray:
    """A real clip straight from the generator, as the evaluation takes one from a dataset video:
    rendered at 320x240 and 25 fps, frames round(k * 25 / fps) from frame 0, stretched (bilinear,
    antialiased) to width x height. (The dataset's files are also mpeg4-encoded; this is not.)"""
    from .clips import clip_indices, frames_needed
    from .transforms import resize_frames

    video = render_video(seed, slot, group, clip, frames_needed(25.0, num_frames, fps))
    idx = clip_indices(len(video), 25.0, num_frames, fps)
    return np.asarray(resize_frames(video[idx], width, height))


def fold_test_groups(groups: int, fold: int) -> range:
    """Groups (1-based) in fold ``fold``'s test list: UCF-101's rule scaled to ``groups``."""
    b = max(1, round(7 * groups / 25))
    return range((fold - 1) * b + 1, fold * b + 1)


def _write_lists(list_dir: Path, names: list[str], groups: int, clips: int, first_clip: int = 1) -> None:
    index = {n: i + 1 for i, n in enumerate(sorted(names))}
    atomic_write_text(list_dir / "classInd.txt", "".join(f"{i} {n}\r\n" for n, i in index.items()))
    for fold in (1, 2, 3):
        test = set(fold_test_groups(groups, fold))
        train_lines, test_lines = [], []
        for n in sorted(names):
            for g in range(1, groups + 1):
                for c in range(first_clip, first_clip + clips):
                    rel = f"{n}/v_{n}_g{g:02d}_c{c:02d}.avi"
                    (test_lines.append(f"{rel}\r\n") if g in test else train_lines.append(f"{rel} {index[n]}\r\n"))
        atomic_write_text(list_dir / f"trainlist0{fold}.txt", "".join(train_lines))
        atomic_write_text(list_dir / f"testlist0{fold}.txt", "".join(test_lines))


# --------------------------------------------------------------------------- the dataset

def make_synthetic(root, *, seed: int = 0, classes: int = 5, groups: int = 7, clips: int = 2,
                   frames: int = 60, width: int = 320, height: int = 240, fps: int = 25, first_clip: int = 1,
                   test_fold: int | None = None) -> Path:
    """Write the synthetic dataset under ``root`` and return ``root``.

    ``first_clip`` > 1 numbers the clips from there (c06..c10 for 6 and 5 clips): other clips of the same
    classes and groups, i.e. a validation set beside a dataset made with the default (1).
    ``test_fold``: write only that fold's test videos (every list file is written; the other videos
    come with a later call without it). `sfv-bench run` on the test split needs no more, and the
    default run's cold start so skips rendering 70% of the mini world's dataset.

    Idempotent: when ``root/sfv_synthetic.json`` records the same parameters and a finished run
    (or, with ``test_fold``, that fold's test videos), returns at once. An unfinished run with the
    same parameters goes on from the videos already written (writes are atomic). Refuses
    (UserError) a folder made with other parameters, or one holding a UCF-101/ or ucfTrainTestlist/
    that this function did not write.
    """
    root = Path(root).expanduser()
    if root.exists() and not root.is_dir():
        raise UserError(f"{root} is a file: pass a folder for the synthetic dataset")
    if test_fold not in (None, 1, 2, 3):
        raise UserError(f"test_fold is 1, 2 or 3 (got {test_fold})")
    if classes < 1 or groups < 3 or clips < 1 or frames < 1 or width < 16 or height < 16 or fps < 1:
        raise UserError(f"make-synthetic needs classes >= 1, groups >= 3 (three folds), clips >= 1, frames >= 1 "
                        f"and a frame of at least 16x16 (got classes={classes}, groups={groups}, clips={clips}, "
                        f"frames={frames}, {width}x{height})")
    params = dict(version=SYNTHETIC_VERSION, seed=int(seed), classes=int(classes), groups=int(groups),
                  clips=int(clips), frames=int(frames), width=int(width), height=int(height), fps=int(fps),
                  codec="mpeg4", bit_rate=BIT_RATE, **({"first_clip": int(first_clip)} if first_clip != 1 else {}))
    manifest = root / MANIFEST
    earlier = _earlier_manifest(root, params)
    folds = earlier.get("test_folds_written", [])
    if earlier.get("complete") or (test_fold is not None and test_fold in folds):
        return root
    names = class_names(classes)
    atomic_write_json(manifest, dict(params=params, complete=False, test_folds_written=folds))
    _render_missing(root, names, range(1, groups + 1) if test_fold is None else fold_test_groups(groups, test_fold),
                    range(first_clip, first_clip + clips), params)
    _write_lists(root / LIST_DIR, names, groups, clips, first_clip)
    if test_fold is not None:
        atomic_write_json(manifest, dict(params=params, complete=False, test_folds_written=sorted({*folds, test_fold})))
    else:
        atomic_write_json(manifest, dict(params=params, complete=True, videos=classes * groups * clips,
                                         classes=sorted(names)))
    return root


def _earlier_manifest(root: Path, params: dict) -> dict:
    """What an earlier call with these ``params`` recorded in ``root`` ({} when none); a UserError when
    ``root`` holds a dataset made with other parameters, or one this function did not write."""
    manifest = root / MANIFEST
    if manifest.is_file():
        earlier = json.loads(manifest.read_text())
        if earlier.get("params") != params:
            raise UserError(f"{root} already holds a synthetic dataset made with other parameters "
                            f"({earlier.get('params')}); choose another folder or delete it")
        return earlier
    if (root / VIDEO_DIR).exists() or (root / LIST_DIR).exists():
        raise UserError(f"{root} already has {VIDEO_DIR}/ or {LIST_DIR}/ that make-synthetic did not write; "
                        "choose an empty folder")
    return {}


def _render_missing(root: Path, names: list, groups, clips, params: dict) -> None:
    """Render and write every video of ``names`` x ``groups`` x ``clips`` not written yet (atomic writes: a
    killed call leaves whole videos only)."""
    def path(name, g, c):
        return root / VIDEO_DIR / name / f"v_{name}_g{g:02d}_c{c:02d}.avi"

    jobs = [(slot, name, g, c) for slot, name in enumerate(names) for g in groups for c in clips
            if not path(name, g, c).is_file()]

    def render_and_write(job):
        slot, name, g, c = job
        video = render_video(params["seed"], slot, g, c, params["frames"], params["width"], params["height"])
        write_video(path(name, g, c), video, params["fps"], bit_rate=BIT_RATE)

    # numpy and the encoder release the GIL on their big loops: threads give a real speed-up.
    with ThreadPoolExecutor(max_workers=max(1, min(4, os.cpu_count() or 1))) as pool:
        list(pool.map(render_and_write, jobs))


def default_dataset_root(**params) -> Path:
    """Where a synthetic world's dataset lives in the cache (made once): ``synthetic-s0`` for the
    default parameters (the tiny world), ``synthetic-<seed>-<classes>x<groups>x<clips>-<frames>f`` else."""
    if not params or params == {"seed": 0}:
        return cache_dir("datasets") / "synthetic-s0"
    p = {"seed": 0, "classes": 5, "groups": 7, "clips": 2, "frames": 60, **params}
    return cache_dir("datasets") / (f"synthetic-s{p['seed']}-{p['classes']}x{p['groups']}x{p['clips']}-"
                                    f"{p['frames']}f")
