"""`sfv-bench run`: regenerate Table 1 (generate, score FVD, time the UNet, write the tables).

Layout of a run folder::

    run.json                      settings of the run (a rerun with other settings is refused)
    samples/<spec>/<sample_id>.npz  one generated video (uint8, lossless, atomic) + its UNet time
    results.jsonl                 one record per method
    table.csv, table.md           Table 1 form, paper rows side by side
    fvd_vs_latency.png            plot
    previews/<spec>.gif           first videos of each method, side by side

A rerun of an interrupted run skips every finished sample and ends with the same table
(FVD, steps, calls and N are identical; latency medians are re-measured only for the samples
that were generated in that process run, the stored per-sample times of the others are reused).
"""
from __future__ import annotations

import json
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from methods.base import NonFiniteOutput
from methods.models.stacks import quiet_hf_logging
from methods.models.timing import clock_name, summarize
from methods.registry import get_method, parse_method_options, parse_specs
from sfv_core.data.synthetic import default_dataset_root, make_synthetic
from sfv_core.data.ucf101 import UCF101, DataRecord, iter_samples, raise_if_too_many_failures, select_videos
from sfv_core.data.videoio import read_video
from sfv_core.env import device_name, git_commit, resolve_device, versions
from sfv_core.errors import UserError
from sfv_core.fsutil import atomic_write_json, atomic_write_text, sha256_json
from sfv_core.paper import DEFAULT_SPECS
from sfv_core.protocol import WORLDS, Protocol
from sfv_core.seeds import sample_seed

from . import report
from .dist import Dist
from .fvd.detectors import load_detector
from .fvd.features import cached_stats, compute_stats
from .fvd.stats import FeatureStats, fvd_from_stats
from .generate import generate_method, missing, read_samples, spec_dirname


class Settings:
    """Everything that changes a run's numbers, resolved from the command line."""

    def __init__(self, args):
        self.tiny = args.data is None
        world = self.world = WORLDS["tiny" if self.tiny else "ucf101"]
        self.device = resolve_device(args.device)
        self.dtype = args.dtype or ("float16" if self.device.startswith("cuda") else "float32")
        self.torch_dtype = getattr(torch, self.dtype)
        proto_kw = {k: v for k, v in dict(split=args.split, fold=args.fold, num_videos=args.num_videos,
                                          balanced=args.balanced, seed=args.seed).items() if v is not None}
        try:
            self.protocol = Protocol(**{**world.protocol, **proto_kw})
        except ValueError as e:
            raise UserError(str(e)) from None
        self.method_text = args.methods or world.methods or DEFAULT_SPECS
        self.stack = args.stack or world.stack
        self.xt_stack = args.xt_stack or world.xt_stack
        self.options = parse_method_options(args.method_option)
        for fam in ("animatelcm", "sfv", "ufogen", "ladd", "onestep"):
            if getattr(args, f"{fam}_unet"):
                self.options.setdefault(fam, {})["unet"] = getattr(args, f"{fam}_unet")
        frames = args.animatelcm_frames or world.animatelcm_frames or self.protocol.num_frames
        self.options.setdefault("animatelcm", {}).setdefault("gen_frames", frames)
        self.detector = args.detector or world.detector
        self.batch_size = args.batch_size
        self.fvd_batch_size = args.fvd_batch_size
        self.save_size = args.save_size
        self.previews = not args.no_previews
        self.data = args.data
        self.out_arg = args.out

    def key(self) -> dict:
        """The settings a resumed run must share with the run it resumes."""
        return {"protocol": self.protocol.to_dict(), "data": str(self.data) if self.data else "synthetic",
                "stack": self.stack, "xt_stack": self.xt_stack, "method_options": self.options,
                "detector": self.detector,
                "device_type": self.device.split(":")[0], "dtype": self.dtype, "save_size": self.save_size}

    def out_dir(self) -> Path:
        if self.out_arg:
            return Path(self.out_arg)
        return Path("runs") / f"{'tiny' if self.tiny else 'ucf101'}-{sha256_json(self.key())[:10]}"

    def stack_for(self, spec) -> str:
        return self.xt_stack if spec.name == "animatelcm" else self.stack


def _check_run_json(out: Path, key: dict, dist) -> None:
    path = out / "run.json"
    if path.exists():
        old = json.loads(path.read_text()).get("settings", {})
        diff = sorted(k for k in set(old) | set(key) if old.get(k) != key.get(k))
        if diff:
            raise UserError(f"{out} holds a run with other settings ({', '.join(diff)}); "
                            f"pass another --out or delete the folder")
    dist.barrier()
    if dist.main:
        atomic_write_json(path, {"settings": key, "argv": sys.argv[1:]})


def _dataset_root(settings, dist) -> Path:
    if settings.data:
        return Path(settings.data)
    root = default_dataset_root()
    if dist.main:
        make_synthetic(root, seed=0)
    dist.barrier()
    return root


def _real_stats(settings, refs, detector, dist, progress):
    """Real feature statistics through the one cache (no video decoded on a hit); each process
    extracts its shard, the sums are all-reduced and the skip records gathered."""
    p = settings.protocol

    def compute():
        record = DataRecord(selected=len(refs))
        mine = dist.shard(refs)
        used = []

        def clips():
            # the fail-share check must see the whole selection, so each process checks only its part here
            for sample in iter_samples(mine, p, record, what="clip", check_fail_share=False):
                used.append(sample.ref.sample_id)
                yield sample.real_clip

        part = compute_stats(detector, clips(), settings.fvd_batch_size, "real clips" if progress else None,
                             total=len(mine))
        total = FeatureStats.from_tensor(dist.all_reduce_sum(part.to_tensor()), detector.feature_dim)
        parts = dist.gather_objects({"used": used, "corrupt": record.corrupt, "too_short": record.too_short})
        meta = {k: sorted(x for q in parts for x in q[k]) for k in ("used", "corrupt", "too_short")}
        meta["selected"] = len(refs)
        raise_if_too_many_failures(DataRecord(selected=len(refs), used=len(meta["used"]), corrupt=meta["corrupt"],
                                              too_short=meta["too_short"]), p)
        return total, meta

    stats, hit, path = cached_stats([r.path for r in refs], p.to_dict(), detector, compute, label=p.metric_name,
                                    dist=dist)
    if hit and progress:
        print(f"real statistics: cache hit {path} (N={stats.n}); no real video decoded", flush=True)
    return stats, stats.metadata, hit


def _warn_bad(meta) -> None:
    for p in meta["corrupt"]:
        warnings.warn(f"skipped undecodable video: {p}", stacklevel=2)
    if meta["too_short"]:
        warnings.warn(f"skipped {len(meta['too_short'])} videos shorter than the clip: {meta['too_short'][:5]}",
                      stacklevel=2)


def _fake_stats(settings, refs, detector, out: Path, dist):
    times = []

    def videos():
        for v, seconds in read_samples(dist.shard(refs), out, settings.protocol):
            times.append(seconds)
            yield v

    part = compute_stats(detector, videos(), settings.fvd_batch_size)
    total = FeatureStats.from_tensor(dist.all_reduce_sum(part.to_tensor()), detector.feature_dim)
    return total, [t for q in dist.gather_objects(times) for t in q]


def _latency(times: list, device: str) -> dict:
    return {**summarize(times, "s"), "clock": clock_name(device)}


def cli_run(args) -> int:
    settings = Settings(args)
    dist = Dist(settings.device)
    settings.device = dist.device
    progress = dist.main and not os.environ.get("TQDM_DISABLE")
    try:
        return _run(settings, dist, progress)
    finally:
        dist.close()


def _run(settings, dist, progress) -> int:
    quiet_hf_logging()  # diffusers' and transformers' inner bars and notices stay quiet
    t_start = time.time()
    specs = parse_specs(settings.method_text)
    out = settings.out_dir()
    p = settings.protocol
    if dist.main:
        world = "TINY WORLD (synthetic data, random-init tiny stack, toy detector): every FVD here is a toy number" \
            if settings.tiny else f"UCF-101 at {settings.data}"
        print(f"sfv-bench run: {world}\n  out: {out}\n  methods: {', '.join(s.key for s in specs)}\n"
              f"  protocol: {p.metric_name}, split {p.split} fold {p.fold}, seed {p.seed}, "
              f"device {settings.device} {settings.dtype}, {dist.world} process(es)", flush=True)
    # fail early on anything missing (stacks, weights, dataset, detector) before any generation
    dataset = UCF101(_dataset_root(settings, dist))
    refs = select_videos(dataset, p)
    methods = {}
    for spec in specs:
        m = get_method(spec, **settings.options.get(spec.name, {}))
        m.check(stack=settings.stack_for(spec))  # resolves stack and UNet files, loads nothing
        methods[spec.key] = (spec, m)
    detector = load_detector(settings.detector, device=settings.device)
    _check_run_json(out, settings.key(), dist)

    real, meta, hit = _real_stats(settings, refs, detector, dist, progress)
    if dist.main:
        _warn_bad(meta)
    used = set(meta["used"])
    refs = [r for r in refs if r.sample_id in used]
    seeds = {r.sample_id: sample_seed(p.seed, r.sample_id) for r in refs}
    common = {"metric": p.metric_name, "covariance": p.covariance, "n_real": real.n,
              "detector": {"name": detector.name, "kind": detector.kind, "sha256": detector.sha256,
                           "label": detector.label, "toy": detector.is_toy},
              "device": settings.device, "device_name": device_name(settings.device), "dtype": settings.dtype,
              "processes": dist.world, "versions": versions(), "git_commit": git_commit(),
              "protocol": p.to_dict(), "world": "tiny" if settings.tiny else "ucf101",
              "data": {"root": str(settings.data) if settings.data else "synthetic-s0 (sfv-bench make-synthetic, seed 0)",
                       "selected": meta["selected"], "used": len(refs),
                       "corrupt": meta["corrupt"], "too_short": meta["too_short"], "real_stats_cache_hit": hit}}

    records = []
    for key, (spec, method) in methods.items():
        sdir = out / "samples" / spec_dirname(key)
        calls = method.unet_calls_per_video()
        rec = {"method": spec.name, "spec": key, "label": getattr(method, "label", spec.name), "steps": spec.steps,
               "unet_calls": calls["calls"], "unet_batch": calls["batch"], "cfg": bool(getattr(method, "cfg", False)),
               "stack": settings.stack_for(spec), "adapter": method.describe(),
               **common}
        error = None
        try:
            if missing(dist.shard(refs), sdir):
                method.load(stack=settings.stack_for(spec), device=settings.device, dtype=settings.torch_dtype)
                generate_method(method, dist.shard(refs), seeds, sdir, p, batch_size=settings.batch_size,
                                save_size=settings.save_size, label=spec.key, progress=progress)
        except NonFiniteOutput as e:  # fails this method only; the others go on
            error = f"{type(e).__name__}: {e}"
        finally:
            method.unload()
        errors = [e for e in dist.gather_objects(error) if e]
        if errors:
            rec.update(status="failed", error=errors[0], fvd=None, n_fake=0, latency=None)
            if dist.main:
                print(f"  {key}: FAILED: {errors[0]}", file=sys.stderr, flush=True)
        else:
            dist.barrier()
            fake, times = _fake_stats(settings, refs, detector, sdir, dist)
            res = fvd_from_stats(real, fake, covariance=p.covariance)
            rec.update(status="ok", fvd=res["fvd"], n_fake=fake.n, latency=_latency(times, settings.device))
            if dist.main:
                print(f"  {key}: FVD{' (toy)' if detector.is_toy else ''} = {res['fvd']:.2f} "
                      f"(N={fake.n}), UNet {rec['latency']['median_s']:.4f} s/video "
                      f"({calls['calls']} x batch {calls['batch']})", flush=True)
        records.append(rec)
        if dist.main:  # results so far, so an interrupted run still leaves readable records
            atomic_write_text(out / "results.jsonl", "".join(json.dumps(r, sort_keys=True) + "\n" for r in records))

    if dist.main:
        paths = report.write_tables(out, records)
        report.write_plot(out, records)
        if settings.previews:
            for rec in records:
                if rec["status"] == "ok":
                    sdir = out / "samples" / spec_dirname(rec["spec"])
                    vids = [read_video(sdir / f"{r.sample_id}.npz") for r in refs[:4]]
                    report.write_preview(out / "previews" / f"{spec_dirname(rec['spec'])}.gif", vids, fps=p.fps)
        print()
        print(paths["md"].read_text())
        print(f"wrote {out}/results.jsonl, table.csv, table.md, fvd_vs_latency.png"
              f"{', previews/' if settings.previews else ''} in {time.time() - t_start:.1f} s", flush=True)
    failed = [r for r in records if r["status"] != "ok"]
    return 1 if failed else 0
