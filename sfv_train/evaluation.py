"""FVD while training: every ``fvd_every`` steps, the suite's own FVD (``sfv_fvd``), with its interval, of the
generator on a small fixed evaluation set.

Evaluation set (``TrainFVD``): the benchmark's protocol of the training stack's world (``--stack mini``: 32x32
generation and scoring; ``tiny``: 64x64 generation scored at 320x240; any other stack: UCF-101's 1024x576
scored at 320x240; 14 frames at 7 fps), with N = ``--fvd-videos`` videos of the training dataset's test
split (fold ``--fold``; or ``--fvd-split train`` of a held-out ``--fvd-data`` set, as the mini world's
distillations do) balanced over classes: the first N of what `sfv-bench run` selects, each generated from the
same seed, the real statistics in the same cache entry. So the number at a step is what `sfv-bench run -n N`
reports for that step's EMA weights, up to float rounding; at the last step, for the export
(``--export-weights ema``).

Cost: made once per run on the main process, after the models are built: the conditioning images stay in
memory; the real statistics go through the suite's one statistics cache (``sfv_fvd.features.cached_stats``:
a later run with the same videos, protocol and detector decodes no real clip). Per evaluation: N videos
sampled in batches of the world's generation batch, resized to the scoring size, detector features, the FVD
and its grouped-jackknife 95% interval (``sfv_fvd.stats.fvd_interval``). ``TrainFVD(cfg,
device)(sample_fn, step)`` returns ``{"fvd", "lo", "hi", "n", "seconds", "detector", "detector_sha256",
"metric"}`` (points of another detector file are not mixed into fvd_best.json); ``sample_fn(images, seeds,
conditions) -> uint8 (B, T, H, W, 3)`` is the trainer's ``sample_videos`` (``Trainer``: the generator its
export holds, the EMA by default, sampled as `sfv-bench run` samples the export).

Every ``fvd_every`` steps and at the last step (after that step's checkpoint), on the main process
only (the others wait for it), one evaluation writes

* the console: ``step N: FVD 123.4 [110.2, 136.7] (N=32, <detector>, 3.1 s); best ...``;
* logs/metrics.jsonl: its own line ``{"step", "fvd", "fvd_lo", "fvd_hi", "fvd_n", "fvd_detector",
  "fvd_seconds"}`` (a resume drops the lines past its step, as it does every line: no point twice);
* TensorBoard: ``eval/fvd``, ``eval/fvd_lo``, ``eval/fvd_hi``, ``time/fvd_s``;
* OUT/fvd_vs_step.png: every point of metrics.jsonl with its 95% interval, the best one marked;
* OUT/fvd_best.json: the best step, its FVD and interval, the checkpoint folder holding that step
  (None when no checkpoint was written there or it was rotated away), and every point.

Only points made with the current detector and N are compared (both are run options a resume may
change). Exactness: the evaluation runs under ``torch.no_grad`` with the python, numpy, torch and
CUDA random states saved and restored around it (the samplers draw from their own seeded
generators), and it changes no module's mode or weights, so a run trains bit for bit as it would
without it, and a resume as an uninterrupted run.
"""
from __future__ import annotations

import contextlib
import json
import logging
import math
import random
import time
from pathlib import Path

import numpy as np
import torch

from methods.base import NonFiniteOutput
from sfv_core.data.transforms import resize_frames
from sfv_core.data.ucf101 import UCF101, DataRecord, iter_samples, load_condition, select_videos
from sfv_core.errors import UserError
from sfv_core.fsutil import atomic_path, atomic_write_json
from sfv_core.protocol import WORLDS, Protocol
from sfv_core.seeds import sample_seed
from sfv_fvd.detectors import load_detector
from sfv_fvd.features import cached_stats, compute_stats
from sfv_fvd.stats import fvd_from_stats, fvd_interval

from .checkpoint import CKPT_PREFIX

log = logging.getLogger(__name__)
DETECTOR_BATCH = 8


def fvd_due(cfg, step: int) -> bool:
    every = int(getattr(cfg, "fvd_every", 0) or 0)
    return every > 0 and (step % every == 0 or step == cfg.max_steps)


@contextlib.contextmanager
def rng_preserved():
    """Every global random state (python, numpy, torch CPU and CUDA) as it was before the block."""
    py, npy = random.getstate(), np.random.get_state()
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    try:
        with torch.random.fork_rng(devices=devices):
            yield
    finally:
        random.setstate(py)
        np.random.set_state(npy)


def _finite(x) -> float | None:
    return float(x) if x is not None and math.isfinite(float(x)) else None


def read_points(metrics: Path) -> list[dict]:
    """The FVD lines of a metrics.jsonl, one per step (the last one wins), by step."""
    points: dict[int, dict] = {}
    if metrics.is_file():
        for line in metrics.read_text().splitlines():
            with contextlib.suppress(ValueError, KeyError, TypeError):
                rec = json.loads(line)
                if "fvd" in rec:
                    points[int(rec["step"])] = rec
    return [points[s] for s in sorted(points)]


def best_point(points: list[dict]) -> dict | None:
    ok = [p for p in points if _finite(p.get("fvd")) is not None]
    return min(ok, key=lambda p: (p["fvd"], p["step"])) if ok else None


def write_plot(path: Path, points: list[dict], best: dict | None, ylabel: str, title: str = "") -> None:
    """FVD vs step with the 95% intervals as error bars, the best point starred (Agg, no pyplot state)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    pts = [p for p in points if _finite(p.get("fvd")) is not None]
    x = np.array([p["step"] for p in pts], float)
    y = np.array([p["fvd"] for p in pts], float)
    lo = np.array([_finite(p.get("fvd_lo")) or v for p, v in zip(pts, y)], float)
    hi = np.array([_finite(p.get("fvd_hi")) or v for p, v in zip(pts, y)], float)
    fig = Figure(figsize=(6.4, 4.0), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    if len(pts):
        ax.errorbar(x, y, yerr=[np.maximum(y - lo, 0), np.maximum(hi - y, 0)], fmt="o-", ms=3, lw=1,
                    capsize=2, label="FVD (95% interval)")
    if best is not None:
        ax.plot([best["step"]], [best["fvd"]], "*", ms=14, color="C3",
                label=f"best: step {best['step']}, FVD {best['fvd']:.4g}")
    ax.set_xlabel("training step")
    ax.set_ylabel(ylabel)
    ax.xaxis.get_major_locator().set_params(integer=True)
    if title:
        ax.set_title(title, fontsize=8, wrap=True)
    ax.grid(alpha=0.3)
    if len(pts):
        ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png")


class FVDMonitor:
    """The loop's evaluations (see the module doc); made by ``start`` on the main process only."""

    def __init__(self, loop, evaluate):
        self.loop, self.evaluate = loop, evaluate

    @classmethod
    def start(cls, loop) -> "FVDMonitor":
        """Make the evaluator (``TrainFVD``: the evaluation set, the real statistics) without touching any random
        state; after a resume, redraw fvd_best.json and the plot from the points metrics.jsonl kept."""
        with rng_preserved():
            monitor = cls(loop, TrainFVD(loop.cfg, loop.device))
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
            old = json.loads((loop.out / "fvd_best.json").read_text())
            if old["last_step"] > loop.step:
                monitor.publish(old)
        return monitor

    def __call__(self, step: int) -> dict:
        loop = self.loop
        with rng_preserved(), torch.no_grad():
            r = self.evaluate(loop.sample_videos, step)
        fvd, lo, hi = _finite(r.get("fvd")), _finite(r.get("lo")), _finite(r.get("hi"))
        loop.append_metrics({"fvd": fvd, "fvd_lo": lo, "fvd_hi": hi, "fvd_n": int(r["n"]),
                             "fvd_detector": r.get("detector", ""),
                             "fvd_detector_sha256": r.get("detector_sha256", ""),
                             "fvd_seconds": round(float(r["seconds"]), 3)})
        loop.acc.log({k: v for k, v in (("eval/fvd", fvd), ("eval/fvd_lo", lo), ("eval/fvd_hi", hi),
                                        ("time/fvd_s", float(r["seconds"]))) if v is not None}, step=step)
        best = self.publish(r)
        shown = "failed" if fvd is None else f"{fvd:.4g}" + (f" [{lo:.4g}, {hi:.4g}]" if lo is not None else "")
        log.log(logging.WARNING if fvd is None else logging.INFO,
                f"step {step}: FVD {shown} (N={int(r['n'])}, {r.get('detector', '?')} detector, "
                f"{float(r['seconds']):.1f} s)" + (f"; {r['error']}" if r.get("error") else "")
                + (f"; best {best['fvd']:.4g} at step {best['step']}" if best else ""))
        return r

    def publish(self, r: dict) -> dict | None:
        """fvd_best.json and fvd_vs_step.png from the points of metrics.jsonl made with r's detector and N."""
        loop = self.loop
        n = int(r["n"])
        points = [p for p in read_points(loop.out / "logs" / "metrics.jsonl")
                  if p.get("fvd_detector", "") == (r.get("detector") or "") and p.get("fvd_n") == n
                  and p.get("fvd_detector_sha256", "") == (r.get("detector_sha256") or "")]
        best = best_point(points)
        ckpt = None
        if best is not None:
            folder = loop.ckpt_root / f"{CKPT_PREFIX}{best['step']:06d}"
            ckpt = str(folder.relative_to(loop.out)) if (folder / "state.json").is_file() else None
        b = best or {}
        atomic_write_json(loop.out / "fvd_best.json", {
            "step": b.get("step"), "fvd": b.get("fvd"),
            "fvd_interval": [b.get("fvd_lo"), b.get("fvd_hi")] if b else None, "n": n,
            "checkpoint": ckpt, "detector": r.get("detector"), "detector_label": r.get("detector_label"),
            "detector_sha256": r.get("detector_sha256"),
            "metric": r.get("metric"), "evaluated_steps": len(points), "last_step": loop.step,
            "points": [{k: p.get(k) for k in ("step", "fvd", "fvd_lo", "fvd_hi")} for p in points]})
        write_plot(loop.out / "fvd_vs_step.png", points, best, f"FVD ({r.get('detector')} detector, N={n})",
                   f"{getattr(loop, 'name', '')} {r.get('metric') or ''}: {r.get('detector_label') or ''}")
        return best


def world_of(stack: str):
    """The world whose protocol scores a training stack: mini, tiny, else UCF-101's."""
    return WORLDS.get(str(stack)) if str(stack) in ("mini", "tiny") else WORLDS["ucf101"]


def eval_protocol(cfg) -> Protocol:
    """The benchmark's protocol of ``cfg.stack``'s world with N = ``cfg.fvd_videos``, the ``--fvd-split`` (test
    by default; train of a held-out ``--fvd-data`` set for validation) of ``cfg.fold``, balanced over classes."""
    world = world_of(cfg.stack)
    return Protocol(**{**world.protocol, "split": getattr(cfg, "fvd_split", "test"), "fold": cfg.fold,
                       "num_videos": cfg.fvd_videos, "balanced": True})


class TrainFVD:
    """``TrainFVD(cfg, device)(sample_fn, step) -> {fvd, lo, hi, n, seconds, detector, ...}``: the evaluation set
    and its real statistics, made once; each call scores ``sample_fn``'s videos (see the module doc)."""

    def __init__(self, cfg, device="cpu"):
        start = time.perf_counter()
        self.protocol = p = eval_protocol(cfg)
        world = world_of(cfg.stack)
        self.batch = max(1, world.batch_size)
        where = f"FVD while training (--fvd-every {cfg.fvd_every})"
        try:
            data = getattr(cfg, "fvd_data", "") or cfg.data
            refs = select_videos(UCF101(data), p)
        except UserError as e:
            raise UserError(f"{where} needs --data (or --fvd-data) in UCF-101's layout, with a {p.split} split: {e} "
                            f"(or --fvd-every 0)") \
                from None
        self.detector = load_detector(cfg.fvd_detector, device=str(device), mini_world=cfg.mini_world)

        def compute():                      # the same statistics and metadata as `sfv-bench run` writes
            rec, used = DataRecord(selected=len(refs)), []

            def clips():
                for s in iter_samples(refs, p, rec, what="clip", check_fail_share=False):
                    used.append(s.ref.sample_id)
                    yield s.real_clip

            stats = compute_stats(self.detector, clips(), DETECTOR_BATCH)
            return stats, {"used": sorted(used), "corrupt": sorted(rec.corrupt), "too_short": sorted(rec.too_short),
                           "selected": len(refs)}

        self.real, hit, path = cached_stats([r.path for r in refs], p.to_dict(), self.detector, compute,
                                            label=p.metric_name)
        used = self.real.metadata.get("used")
        if used is None and self.real.n == len(refs):      # an entry that lists no videos: all of them were
            used = [r.sample_id for r in refs]
        self.refs = [r for r in refs if r.sample_id in set(used or ())]
        if len(self.refs) != self.real.n:
            raise UserError(f"{path}: real statistics of {self.real.n} videos that name {len(self.refs)} of the "
                            f"evaluation set; delete the file (it is recomputed)")
        skipped = len(refs) - len(self.refs)
        if len(self.refs) < 2:
            raise UserError(f"{where}: only {len(self.refs)} of {len(refs)} {p.split} videos of {data} are usable "
                            f"(the others too short or undecodable for {p.num_frames} frames at {p.fps} fps)")
        self.images = [load_condition(r, p, check_length=False) for r in self.refs]
        self.seeds = [sample_seed(p.seed, r.seed_name) for r in self.refs]
        self.n = len(self.refs)
        log.info(f"FVD while training: {self.n} {p.split} videos of {data} ({p.metric_name}, {world.name} protocol"
            f"{f', {skipped} skipped' if skipped else ''}), every {cfg.fvd_every} steps and at the "
            f"end; {self.detector.label}; real statistics {'from the cache' if hit else 'computed'} ({path.name}) "
            f"in {time.perf_counter() - start:.1f} s")

    def __call__(self, sample_fn, step: int) -> dict:
        start = time.perf_counter()
        p = self.protocol
        out = {"n": self.n, "detector": self.detector.spec, "detector_label": self.detector.label,
               "detector_sha256": self.detector.sha256, "metric": p.metric_name, "step": step}

        def videos():
            for i in range(0, self.n, self.batch):
                for v in sample_fn(self.images[i:i + self.batch], self.seeds[i:i + self.batch], p.conditions()):
                    yield resize_frames(v, p.score_width, p.score_height)

        try:
            fake = compute_stats(self.detector, videos(), DETECTOR_BATCH, keep=True)
        except NonFiniteOutput as e:        # a diverged generator: a failed point, training goes on
            return {**out, "fvd": float("nan"), "lo": float("nan"), "hi": float("nan"), "error": str(e),
                    "seconds": time.perf_counter() - start}
        res = fvd_from_stats(self.real, fake, covariance=p.covariance)
        lo, hi = fvd_interval(self.real, np.concatenate(fake.features), p.covariance)
        return {**out, "fvd": res["fvd"], "lo": lo, "hi": hi, "seconds": time.perf_counter() - start}
