"""The FVD evaluator `sfv-train` hands its loop (``sfv_train.evaluation``): the suite's own FVD, with
the suite's interval, of the generator on a small fixed evaluation set.

Evaluation set: the benchmark's protocol of the training stack's world (``--stack mini``: 32x32
generation and scoring; ``tiny``: 64x64 generation scored at 320x240; any other stack: UCF-101's
1024x576 scored at 320x240; 14 frames at 7 fps), with N = ``--fvd-videos`` videos of the training
dataset's test split (fold ``--fold``; or ``--fvd-split train`` of a held-out ``--fvd-data`` set, as the
mini world's distillations do) balanced over classes: the first N of what `sfv-bench run`
selects, each generated from the same seed, the real statistics in the same cache entry. So the
number at a step is what `sfv-bench run -n N` reports for that step's EMA weights, up to float
rounding (tiny stack, N = 4: 149.75 here, 149.67 from `sfv-bench run` on the export); at the last
step, for the export (``--export-weights ema``).

Cost: made once per run (main process): the conditioning images stay in memory; the real
statistics go through the suite's one statistics cache (``bench.fvd.features.cached_stats``: a
later run with the same videos, protocol and detector decodes no real clip). Per evaluation: N
videos sampled in batches of the world's generation batch, resized to the scoring size, detector
features, the FVD and its grouped-jackknife 95% interval (``bench.fvd.stats.fvd_interval``).
"""
from __future__ import annotations

import time

import numpy as np

from methods.base import NonFiniteOutput
from sfv_core.data.transforms import resize_frames
from sfv_core.data.ucf101 import UCF101, DataRecord, iter_samples, load_condition, select_videos
from sfv_core.errors import UserError
from sfv_core.protocol import WORLDS, Protocol
from sfv_core.seeds import sample_seed

from .fvd.detectors import load_detector
from .fvd.features import cached_stats, compute_stats
from .fvd.stats import fvd_from_stats, fvd_interval

DETECTOR_BATCH = 8


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
    """``TrainFVD(cfg, device, log)(sample_fn, step) -> {fvd, lo, hi, n, seconds, detector, ...}``."""

    def __init__(self, cfg, device="cpu", log=print):
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
        self.detector = load_detector(cfg.fvd_detector, device=str(device))

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
        log(f"FVD while training: {self.n} {p.split} videos of {data} ({p.metric_name}, {world.name} protocol"
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
