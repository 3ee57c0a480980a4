"""`sfv-bench run`: regenerate Table 1 (generate, score FVD with its interval, time the UNet, write the tables).

Layout of a run folder::

    run.json                         run-level settings (a later call with others is refused)
    samples/<spec>/method.json       what made the samples (options, weight sha256)
    samples/<spec>/<Class>/<name>.npz  one generated video (uint8, lossless, atomic) + .json sidecar
    samples/<spec>/latency.json      the timing pass (batch 1, its threads, machine, load)
    results.jsonl                    one record per method, accumulated over calls
    table.csv, table.md              Table 1 form, paper rows side by side
    fvd_vs_latency.png, previews/    plot (with the intervals) and labelled previews

A rerun skips every finished (and intact) sample and ends with the same FVDs. Reference rows:
``static`` (the condition repeated) is a method; ``real`` is made here from held-out real clips.
"""
from __future__ import annotations

import json
import logging
import os
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from methods.base import NonFiniteOutput
from methods.models.stacks import quiet_hf_logging
from methods.models.timing import cuda_device
from methods.registry import get_method
from sfv_core.data.synthetic import default_dataset_root, make_synthetic
from sfv_core.data.ucf101 import (UCF101, DataRecord, DataWarning, iter_samples, load_condition, raise_if_too_many_failures,
                                  select_videos)
from sfv_core.env import device_name, git_commit, keep_freed_memory, usable_cores, versions
from sfv_core.fsutil import atomic_write_json
from sfv_core.seeds import sample_seed
from sfv_fvd.detectors import load_detector
from sfv_fvd.features import cached_stats, compute_stats
from sfv_fvd.stats import FeatureStats, fvd_from_stats, fvd_interval, interval_text

from . import report, results
from .dist import Dist, timeout, torchrun
from .generate import (PassTimes, cut_batches, generate_method, missing, prepare_dir, read_samples,
                       spec_dirname, time_method)
from .settings import Settings, check_run_json

log = logging.getLogger(__name__)


def _dataset_root(settings, dist, full: bool = False) -> Path:
    """The dataset folder; a synthetic one is made on first use: only the scored fold's test videos for
    the test split (unless ``full``: the ``real`` row may need training videos too)."""
    if settings.data:
        return Path(settings.data)
    root = default_dataset_root(**settings.world.dataset)
    p = settings.protocol
    if dist.main:
        make_synthetic(root, **settings.world.dataset, test_fold=p.fold if p.split == "test" and not full else None)
    dist.barrier()
    return root


def _clip_stats(refs, p, detector, dist, batch, label, keep=False):
    """Features of the real clips of ``refs`` (sharded), summed over processes; skip records gathered."""
    record = DataRecord(selected=len(refs))
    mine, used = dist.shard(refs), []

    def clips():
        for sample in iter_samples(mine, p, record, what="clip", check_fail_share=False):
            used.append(sample.ref.sample_id)
            yield sample.real_clip

    part = compute_stats(detector, clips(), batch, label, total=len(mine), keep=keep)
    total = FeatureStats.from_tensor(dist.all_reduce_sum(part.to_tensor()), detector.feature_dim)
    parts = dist.gather_objects({"used": used, "corrupt": record.corrupt, "too_short": record.too_short,
                                 "features": part.features})
    meta = {k: sorted(x for q in parts for x in q[k]) for k in ("used", "corrupt", "too_short")}
    feats = [f for q in parts for f in (q["features"] or [])]
    return total, meta, (np.concatenate(feats) if feats else None)


def _real_stats(settings, refs, detector, dist, progress):
    """Real feature statistics through the one cache (no video decoded on a hit)."""
    p = settings.protocol

    def compute():
        total, meta, _ = _clip_stats(refs, p, detector, dist, settings.fvd_batch_size,
                                     "real clips" if progress else None)
        meta["selected"] = len(refs)
        raise_if_too_many_failures(DataRecord(selected=len(refs), used=len(meta["used"]), corrupt=meta["corrupt"],
                                              too_short=meta["too_short"]), p)
        return total, meta

    stats, hit, path = cached_stats([r.path for r in refs], p.to_dict(), detector, compute, label=p.metric_name,
                                    dist=dist)
    if hit and progress:
        log.info(f"real statistics: cache hit {path} (N={stats.n}); no real video decoded")
    return stats, stats.metadata, hit


def held_out_refs(dataset, p, scored) -> tuple[list, str]:
    """N real videos for the ``real`` row: the split's videos not scored, then the training list's."""
    def every(**kw):                  # the whole list, shuffled: "fewer than asked" is expected here
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DataWarning)
            return select_videos(dataset, p.replace(num_videos=10 ** 9, seed=p.seed + 1, **kw))

    taken = {r.rel for r in scored}
    pool = [r for r in every() if r.rel not in taken]
    where = f"{p.split} videos not scored"
    if len(pool) < p.num_videos and p.split == "test":
        pool += [r for r in every(split="train") if r.rel not in taken]
        where += " + train videos"
    return pool[:p.num_videos], where


def _fake_stats(settings, refs, detector, sdir: Path, dist):
    part = compute_stats(detector, read_samples(dist.shard(refs), sdir, settings.protocol), settings.fvd_batch_size,
                         keep=True)
    total = FeatureStats.from_tensor(dist.all_reduce_sum(part.to_tensor()), detector.feature_dim)
    feats = [f for q in dist.gather_objects(part.features) for f in q]
    return total, np.concatenate(feats)


def cli_run(args) -> int:
    settings = Settings(args)
    if not settings.device.startswith("cuda"):
        keep_freed_memory()                              # no page-fault churn on every activation
    if settings.procs > 1 and settings.argv and "WORLD_SIZE" not in os.environ:
        timeout()                                        # a bad SFV_DIST_TIMEOUT_S is said here, once
        return torchrun(settings.procs, [sys.executable, "-m", "bench", *settings.argv],
                        threads=max(1, usable_cores() // settings.procs))
    dist = Dist(settings.device)
    settings.device = dist.device
    progress = dist.main and not os.environ.get("TQDM_DISABLE")
    try:
        with cuda_device(settings.device):      # cuda:N: every CUDA call of the run goes to GPU N
            return _run(settings, dist, progress)
    finally:
        settings.release()
        dist.close()


@dataclass(frozen=True, kw_only=True)
class RunContext:
    """What every row of one run shares: the scored videos, how they are conditioned and seeded, the real
    statistics they are scored against."""
    settings: Settings
    dist: Dist
    progress: bool                  # progress bars (main process, TQDM_DISABLE unset)
    out: Path                       # the run folder
    refs: list                      # the scored videos (those whose real clip could be read)
    seeds: dict                     # sample_id -> the video's seed
    condition: Callable             # ref -> conditioning image (each read once)
    sample_shape: tuple             # (T, H, W, 3) of a stored sample
    real: FeatureStats              # real feature statistics
    real_meta: dict                 # what reading the real clips found: selected, used, corrupt, too_short, cache_hit
    detector: Any
    passes: PassTimes               # the run's one time per UNet pass


def _run(settings, dist, progress) -> int:
    quiet_hf_logging()  # diffusers' and transformers' inner bars and notices stay quiet
    t_start = time.time()
    dataset, refs, out, methods, detector = _check_inputs(settings, dist)
    ctx = _score_real(settings, dist, progress, refs, out, detector)
    common = _common_fields(ctx)
    old = results.read_results(out, allow_empty=True) if (out / "results.jsonl").is_file() else []
    records = []
    for spec, method in methods:
        rec = _real_row(ctx, dataset) if method is None else _method_row(ctx, spec, method)
        records.append(results.stamp({**rec, **common}))
        if dist.main:  # results so far, so an interrupted run still leaves readable records
            results.write_results(out, results.merge(old, records))
    _write_outputs(ctx, results.merge(old, records), records[dist.rank::dist.world], t_start)
    return 1 if any(r["status"] != "ok" for r in records) else 0


def _title(settings) -> str:
    return settings.world.label if settings.world.toy else f"UCF-101 at {settings.data}"


def _check_inputs(settings, dist):
    """Everything a run needs, checked before any generation (stacks, weights, dataset, detector, the run
    folder's earlier settings): (dataset, the selected videos, the locked run folder, [(spec, method or None
    for the ``real`` row)], detector)."""
    p = settings.protocol
    dataset = UCF101(_dataset_root(settings, dist))
    refs = select_videos(dataset, p)
    out = settings.out_dir(refs, lock=dist.main)        # held to the end: one run at a time writes into --out
    log.info(f"sfv-bench run: {_title(settings)}\n  out: {out}\n  methods: {', '.join(s.key for s in settings.specs)}\n"
             f"  protocol: {p.metric_name}, split {p.split} fold {p.fold}, seed {p.seed}, "
             f"device {settings.device} {settings.dtype}, {dist.world} process(es)")
    methods = {}
    for spec in settings.specs:
        method = None
        if spec.name != "real":
            method = get_method(spec, **settings.options.get(spec.name, {}))
            method.check(stack=settings.stack_for(spec), variant=settings.variant)  # resolves files, loads nothing
        methods[spec.key] = (spec, method)
    detector = load_detector(settings.detector, device=settings.device, trust=settings.trust_detector)
    check_run_json(out, settings.shared_settings(refs), dist)
    return dataset, refs, out, list(methods.values()), detector


def _score_real(settings, dist, progress, refs, out, detector) -> RunContext:
    """The real statistics of the selected videos; the videos whose clip could not be read are dropped
    (said once)."""
    p = settings.protocol
    real, meta, hit = _real_stats(settings, refs, detector, dist, progress)
    if dist.main:
        for path in meta["corrupt"]:
            warnings.warn(f"skipped undecodable video: {path}", stacklevel=2)
        if meta["too_short"]:
            warnings.warn(f"skipped {len(meta['too_short'])} videos shorter than the clip: {meta['too_short'][:5]}",
                          stacklevel=2)
    used = set(meta["used"])
    refs = [r for r in refs if r.sample_id in used]
    conditions: dict = {}

    def condition(ref):
        if ref.sample_id not in conditions:
            conditions[ref.sample_id] = load_condition(ref, p)
        return conditions[ref.sample_id]

    shape = ((p.num_frames, p.score_height, p.score_width, 3) if settings.save_size == "score"
             else (p.num_frames, p.gen_height, p.gen_width, 3))
    ctx = RunContext(settings=settings, dist=dist, progress=progress, out=out, refs=refs,
                     seeds={r.sample_id: sample_seed(p.seed, r.seed_name) for r in refs}, condition=condition,
                     sample_shape=shape, real=real, real_meta={**meta, "cache_hit": hit}, detector=detector,
                     passes=PassTimes(out, redo=settings.redo_latency))
    return ctx


def _common_fields(ctx: RunContext) -> dict:
    """The fields every record of the run shares (protocol, detector, device, versions, data)."""
    settings, dist, detector, p = ctx.settings, ctx.dist, ctx.detector, ctx.settings.protocol
    meta = ctx.real_meta
    return {"metric": p.metric_name, "covariance": p.covariance, "n_real": ctx.real.n,
            "detector": {"name": detector.name, "kind": detector.kind, "sha256": detector.sha256,
                         "label": detector.label, "toy": detector.is_toy},
            "device": settings.device, "device_name": device_name(settings.device), "dtype": settings.dtype,
            "processes": dist.world, "versions": versions(), "git_commit": git_commit(),
            "protocol": p.to_dict(), "world": settings.world.name, "world_label": settings.world.label,
            "toy": settings.world.toy,
            "data": {"root": settings.data or f"synthetic {settings.world.dataset} (sfv-bench make-synthetic)",
                     "selected": meta["selected"], "used": len(ctx.refs),
                     "corrupt": meta["corrupt"], "too_short": meta["too_short"],
                     "real_stats_cache_hit": meta["cache_hit"]}}


def _write_outputs(ctx: RunContext, merged: list, my_records: list, t_start: float) -> None:
    """Previews (each process its share of the methods), tables, plot, and the table on the console."""
    settings, dist, out = ctx.settings, ctx.dist, ctx.out
    if settings.previews:
        report.write_previews(out, my_records, ctx.refs[:4], ctx.condition, settings.protocol, _title(settings))
    if dist.main:
        paths = report.write_tables(out, merged)
        report.write_plot(out, merged)
    dist.barrier()
    if dist.main:
        sys.stdout.write("\n" + paths["md"].read_text() + "\n")     # the command's result, at any log level
        log.info(f"wrote {out}/results.jsonl, table.csv, table.md, fvd_vs_latency.png"
                 f"{', previews/' if settings.previews else ''} in {time.time() - t_start:.1f} s")


def _row_stack(settings, spec, method, desc: dict) -> str:
    """The stack a row ran on: the run's SVD stack, or the pipeline a method brings itself (i2v)."""
    return settings.stack_for(spec) if method.info.default_stack != "none" else desc.get("stack", "none")


def _method_row(ctx: RunContext, spec, method) -> dict:
    """Generate what is missing of one method's samples, time it, score it."""
    settings, dist = ctx.settings, ctx.dist
    sdir = ctx.out / "samples" / spec_dirname(spec.key)
    calls = method.unet_calls_per_video()
    desc = method.describe()
    identity = {"spec": spec.key, "options": desc["options"],
                **{k: desc.get(k) for k in ("stack", "unet", "stack_sha256", "unet_sha256")}}
    if dist.main:
        prepare_dir(sdir, identity, spec in settings.force, ctx.refs)
    dist.barrier()
    rec = {"method": spec.name, "spec": spec.key, "label": spec.name, "steps": spec.steps,
           "unet_calls": calls["calls"], "unet_batch": calls["batch"], "cfg": bool(method.cfg),
           "stack": _row_stack(settings, spec, method, desc), "adapter": desc, "samples": str(sdir)}
    timing = sdir / "latency.json"
    need_timing = dist.main and (settings.redo_latency or spec in settings.force or not timing.is_file())
    try:
        error = _generate(ctx, spec, method, sdir, load=need_timing)
        dist.barrier()            # every process has finished its (equal) share: the timing pass runs alone
        error = _time(ctx, method, timing, need_timing and error is None) or error
    finally:
        method.unload()
    errors = [e for e in dist.gather_objects(error) if e]
    if errors:
        log.warning(f"  {spec.key}: FAILED: {errors[0]}")
        return {**rec, "status": "failed", "error": errors[0], "fvd": None, "n_fake": 0, "latency": None}
    dist.barrier()
    fake, feats = _fake_stats(settings, ctx.refs, ctx.detector, sdir, dist)
    return _score(ctx, rec, fake, feats, timing)


def _generate(ctx: RunContext, spec, method, sdir: Path, load: bool) -> str | None:
    """This process's share of the missing samples (the method loaded when there is one, or when ``load``:
    the timing pass needs it); the error of a non-finite output (it fails this method only), else None."""
    settings, dist = ctx.settings, ctx.dist
    todo, batches = _left_to_make(ctx.refs, sdir, ctx.sample_shape, settings.batch_size, dist)
    if not (todo or load):
        return None
    try:
        method.load(stack=settings.stack_for(spec), device=settings.device, dtype=settings.torch_dtype,
                    variant=settings.variant)
        generate_method(method, todo, ctx.seeds, sdir, settings.protocol, ctx.condition,
                        batch_size=settings.batch_size, save_size=settings.save_size, progress=ctx.progress,
                        batches=batches, process=(dist.rank, dist.world),
                        label=spec.key + (f" (process 1 of {dist.world}: its share)" if dist.world > 1 else ""))
    except NonFiniteOutput as e:
        return f"{type(e).__name__}: {e}"
    return None


def _time(ctx: RunContext, method, timing: Path, needed: bool) -> str | None:
    """The timing pass into ``timing`` (latency.json) when ``needed``: rank 0's work while the others wait
    piece by piece, so every process calls this; the error of a non-finite output, else None."""
    settings, dist, p = ctx.settings, ctx.dist, ctx.settings.protocol

    def timing_pass(tick):
        videos = ctx.refs[:settings.timing_videos]
        times = time_method(method, [ctx.condition(r) for r in videos],
                            seeds=[ctx.seeds[r.sample_id] for r in videos],
                            conditions=p.conditions(), device=settings.device, threads=settings.threads,
                            passes=ctx.passes, tick=tick)
        atomic_write_json(timing, {**times, "processes": dist.world})
    try:
        dist.main_alone(timing_pass if needed else lambda tick: None)
    except NonFiniteOutput as e:
        return f"{type(e).__name__}: {e}"
    return None


def _left_to_make(refs, sdir, shape, batch_size, dist) -> tuple[list, list]:
    """(samples this process makes, the batches it computes). The batches are cut from the whole list of
    samples (in selection order), so a video's batch, and with it its bits, does not depend on the number of
    processes; each process checks its block of the finished samples (a damaged one is removed), then the
    batches holding the rest are dealt round robin, so a resumed run with another number of processes keeps
    every process busy (and none waits for another's whole share)."""
    mine = missing(dist.shard(refs), sdir, shape)
    left = {sid for part in dist.gather_objects([r.sample_id for r in mine]) for sid in part}
    batches = dist.deal([b for b in cut_batches(list(refs), batch_size) if any(r.sample_id in left for r in b)])
    return [r for b in batches for r in b if r.sample_id in left], batches


def _score(ctx: RunContext, rec: dict, fake: FeatureStats, feats, timing: Path | None = None) -> dict:
    """``rec`` with its FVD and interval (``fake``: the generated videos' statistics, ``feats``: their
    features) and its latency (``timing``: the method's latency.json; None: no UNet)."""
    covariance, detector = ctx.settings.protocol.covariance, ctx.detector
    res = fvd_from_stats(ctx.real, fake, covariance=covariance)
    lo, hi = fvd_interval(ctx.real, feats, covariance)
    interval = [lo, hi] if np.isfinite([lo, hi]).all() else None     # None: too few videos (not NaN in JSON)
    latency = json.loads(timing.read_text()) if timing and timing.is_file() else None
    unet_pass = ctx.passes.lookup(latency.get("pass_key")) if latency else None
    if unet_pass:       # the headline: UNet calls x the run's one time of that pass (see bench.generate)
        latency.update(pass_s=unet_pass["median_s"], calls_x_pass_s=rec["unet_calls"] * unet_pass["median_s"],
                       pass_timed_in=unet_pass.get("timed_in"))
    rec.update(status="ok", fvd=res["fvd"], fvd_interval=interval, n_fake=fake.n, latency=latency)
    unet = f"UNet {report.latency_s(rec):.4f} s/video ({rec['unet_calls']} x batch " \
           f"{rec['unet_batch']}; measured {latency['median_s']:.4f}; {latency['threads']} thread(s))" \
        if latency else "no UNet"
    log.info(f"  {rec['spec']}: FVD{f' ({detector.kind} detector)' if detector.is_toy else ''} = {res['fvd']:.2f} "
             f"{interval_text(interval, fake.n)}{f' (N={fake.n})' if interval else ''}, {unet}")
    return rec


def _real_row(ctx: RunContext, dataset) -> dict:
    """The ``real`` reference row: held-out real clips scored as if generated."""
    settings, dist, p = ctx.settings, ctx.dist, ctx.settings.protocol
    held, where = held_out_refs(dataset, p, ctx.refs)
    if not settings.data and not all(r.path.is_file() for r in held):   # a synthetic test-only dataset
        _dataset_root(settings, dist, full=True)                           # gets the rest first
    rec = {"method": "real", "spec": "real", "label": "real (held-out clips)", "steps": 0, "unet_calls": 0,
           "unet_batch": 0, "cfg": False, "stack": "none", "adapter": {"held_out": where, "videos": len(held)}}
    fake, _, feats = _clip_stats(held, p, ctx.detector, dist, settings.fvd_batch_size,
                                 "held-out real" if ctx.progress else None, keep=True)
    if fake.n < 2:
        return {**rec, "status": "failed", "error": f"only {fake.n} held-out real videos", "fvd": None,
                "n_fake": fake.n, "latency": None}
    return _score(ctx, rec, fake, feats)
