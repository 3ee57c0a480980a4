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

import hashlib
import json
import os
import platform
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np

from . import report
from .fsutil import UserError, atomic_write_json, atomic_write_text, cache_dir, sha256_json
from .protocol import Protocol, tiny_protocol

TINY_METHODS = "svd:8,svd:4,animatelcm:4,animatelcm:2,onestep:1"
REAL_METHODS = "svd:25,svd:16,svd:8,svd:4,animatelcm:8,animatelcm:4,animatelcm:2,ufogen:1,ladd:1,sfv:1"


def add_parser(sub) -> None:
    p = sub.add_parser("run", help="generate, score and time methods; write Table 1 (no arguments: the tiny toy world)",
                       description="With no arguments: the embedded tiny world (synthetic data, random-init tiny "
                                   "SVD stack, toy detector). Every number it prints is a toy number.")
    p.add_argument("--data", default=None, help="UCF-101 root (holding UCF-101/ and ucfTrainTestlist/); "
                                                 "default: the synthetic dataset (tiny world)")
    p.add_argument("--split", choices=("train", "test", "all"), default=None)
    p.add_argument("--fold", type=int, choices=(1, 2, 3), default=None)
    p.add_argument("-n", "--num-videos", type=int, default=None, help="N videos (tiny: 16, real: 2048)")
    p.add_argument("--balanced", action="store_true", default=None, help="round-robin over classes")
    p.add_argument("--methods", default=None, help=f"method specs (tiny default: {TINY_METHODS}; "
                                                    f"with --data: {REAL_METHODS})")
    p.add_argument("--stack", default=None, help="SVD stack for svd and one-step methods: tiny | svd | svd-xt | PATH")
    p.add_argument("--xt-stack", default=None, help="stack for animatelcm (default: svd-xt; tiny world: tiny)")
    p.add_argument("--animatelcm-unet", default=None, help="AnimateLCM-SVD-xt UNet folder or repo id "
                                                           "(default wangfuyun/AnimateLCM-SVD-xt from the HF cache)")
    for fam in ("sfv", "ufogen", "ladd"):
        p.add_argument(f"--{fam}-unet", default=None, help=f"UNet folder exported by `sfv-train --method {fam}`")
    p.add_argument("--onestep-unet", default=None, help="UNet folder for `onestep` (default: the stack's UNet)")
    p.add_argument("--animatelcm-frames", type=int, default=None,
                   help="frames AnimateLCM generates (25 = the released xt model, first 14 scored: AnimateLCM*; "
                        "tiny world default 14)")
    p.add_argument("--method-option", action="append", default=[], metavar="NAME.KEY=VALUE",
                   help="adapter option, repeatable (e.g. svd.max_guidance=2.5); `sfv-bench ls` lists them")
    p.add_argument("--detector", default=None, help="toy | stylegan-v | tats | PATH (default: toy in the tiny "
                                                     "world, stylegan-v with --data)")
    p.add_argument("--device", default=None, help="cpu | cuda (default: cuda if available)")
    p.add_argument("--dtype", choices=("float32", "float16", "bfloat16"), default=None,
                   help="model dtype (default: float16 on cuda, float32 on cpu)")
    p.add_argument("--out", default=None, help="run folder (default: runs/<world>-<hash of settings>)")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=1, help="videos per generate call (latency is per video)")
    p.add_argument("--fvd-batch-size", type=int, default=8)
    p.add_argument("--save-size", choices=("score", "gen"), default="score",
                   help="store samples at the scoring size (default; FVD needs nothing more) or generation size")
    p.add_argument("--no-previews", action="store_true")
    p.set_defaults(func="bench.run:cli_run")


# ----------------------------------------------------------------------------------------------
def _device(arg):
    import torch
    if arg:
        if arg.startswith("cuda") and not torch.cuda.is_available():
            raise UserError("--device cuda asked but torch sees no CUDA device (use --device cpu)")
        return arg
    return "cuda" if torch.cuda.is_available() else "cpu"


def _git_commit() -> str | None:
    root = Path(__file__).resolve().parent.parent
    try:
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
        if out.returncode != 0:
            return None
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return out.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def _versions() -> dict:
    import diffusers
    import torch
    import transformers
    from importlib.metadata import version
    return {"python": platform.python_version(), "torch": torch.__version__, "diffusers": diffusers.__version__,
            "transformers": transformers.__version__, "sfv_bench": version("sfv-bench"),
            "cuda": torch.version.cuda}


def _device_name(device: str) -> str:
    import torch
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    return f"CPU ({platform.machine()}, {torch.get_num_threads()} threads)"


def sample_seed(base_seed: int, sample_id: str) -> int:
    """Per-sample seed: the same for every method (common random numbers), independent of sharding."""
    return int(hashlib.sha256(f"{base_seed}:{sample_id}".encode()).hexdigest()[:8], 16)


def spec_dirname(spec: str) -> str:
    return spec.replace(":", "_").replace("/", "_")


class Settings:
    """Everything that changes a run's numbers, resolved from the command line."""

    def __init__(self, args):
        import torch
        self.tiny = args.data is None
        self.device = _device(args.device)
        self.dtype = args.dtype or ("float16" if self.device.startswith("cuda") else "float32")
        self.torch_dtype = getattr(torch, self.dtype)
        proto_kw = {k: v for k, v in dict(split=args.split, fold=args.fold, num_videos=args.num_videos,
                                          balanced=args.balanced, seed=args.seed).items() if v is not None}
        try:
            self.protocol = tiny_protocol(**proto_kw) if self.tiny else Protocol(**proto_kw)
        except ValueError as e:
            raise UserError(str(e)) from None
        self.method_text = args.methods or (TINY_METHODS if self.tiny else REAL_METHODS)
        self.stack = args.stack or ("tiny" if self.tiny else "svd")
        self.xt_stack = args.xt_stack or ("tiny" if self.tiny else "svd-xt")
        from methods.registry import parse_method_options
        self.options = parse_method_options(args.method_option)
        for fam in ("animatelcm", "sfv", "ufogen", "ladd", "onestep"):
            if getattr(args, f"{fam}_unet"):
                self.options.setdefault(fam, {})["unet"] = getattr(args, f"{fam}_unet")
        frames = args.animatelcm_frames or (self.protocol.num_frames if self.tiny else 25)
        self.options.setdefault("animatelcm", {}).setdefault("gen_frames", frames)
        self.detector = args.detector or ("toy" if self.tiny else "stylegan-v")
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


# ----------------------------------------------------------------------------------------------
def default_dataset_root() -> Path:
    """Where the tiny world's synthetic dataset lives (made once, seed 0)."""
    return cache_dir("datasets") / "synthetic-s0"


def _dataset_root(settings, dist) -> Path:
    if settings.data:
        return Path(settings.data)
    from .synthetic import make_synthetic
    root = default_dataset_root()
    if dist.main:
        make_synthetic(root, seed=0)
    dist.barrier()
    return root


def _real_stats(settings, refs, detector, dist, progress):
    """Real feature statistics, from the cache when every input matches (no video decoded then)."""
    from .data import DataRecord, iter_samples, raise_if_too_many_failures
    from .fvd import FeatureStats, stats_cache_key

    key = stats_cache_key([r.path for r in refs], settings.protocol.to_dict(), detector.sha256)
    path = cache_dir("stats") / f"{settings.protocol.metric_name}-{key[:24]}.npz"
    if path.exists():
        stats = FeatureStats.load(path)
        if stats.metadata.get("key") == key:
            if progress:
                print(f"real statistics: cache hit {path} (N={stats.n}); no real video decoded", flush=True)
            return stats, stats.metadata, True
    record = DataRecord(selected=len(refs), used=0, corrupt=[], too_short=[])
    mine = dist.shard(refs)
    stats = FeatureStats(detector.feature_dim)
    used = []
    batch = []
    from tqdm.auto import tqdm
    bar = tqdm(total=len(mine), desc="real clips", disable=not progress, unit="clip")

    def flush():
        if batch:
            stats.append(detector.features(np.stack(batch)))
            batch.clear()
    # the fail-share check must see the whole selection, so each process checks only its part here
    for sample in iter_samples(mine, settings.protocol, record, what="clip", check_fail_share=False):
        batch.append(sample.real_clip)
        used.append(sample.ref.sample_id)
        if len(batch) == settings.fvd_batch_size:
            flush()
        bar.update(1)
    flush()
    bar.close()
    total = FeatureStats.from_tensor(dist.all_reduce_sum(stats.to_tensor()), detector.feature_dim)
    parts = dist.gather_objects({"used": used, "corrupt": record.corrupt, "too_short": record.too_short})
    meta = {"used": sorted(u for p in parts for u in p["used"]),
            "corrupt": sorted(c for p in parts for c in p["corrupt"]),
            "too_short": sorted(c for p in parts for c in p["too_short"]),
            "selected": len(refs), "key": key, "detector_sha256": detector.sha256, "detector": detector.label,
            "protocol": settings.protocol.to_dict(), "n": total.n}
    raise_if_too_many_failures(DataRecord(selected=len(refs), used=len(meta["used"]), corrupt=meta["corrupt"],
                                          too_short=meta["too_short"]), settings.protocol)
    if dist.main:
        total.save(path, meta)
    total.metadata = meta
    dist.barrier()
    return total, meta, False


def _warn_bad(meta) -> None:
    for p in meta["corrupt"]:
        warnings.warn(f"skipped undecodable video: {p}", stacklevel=2)
    if meta["too_short"]:
        warnings.warn(f"skipped {len(meta['too_short'])} videos shorter than the clip: {meta['too_short'][:5]}",
                      stacklevel=2)


def _stack_for(settings, spec):
    return settings.xt_stack if spec.name == "animatelcm" else settings.stack


def _generate_method(settings, spec, method, refs, seeds, out: Path, dist, progress) -> None:
    """Generate every missing sample of this process's shard; each sample is written atomically."""
    from .data import load_condition
    from .transforms import resize_frames
    from .videoio import save_array
    from tqdm.auto import tqdm

    p = settings.protocol
    todo = [r for r in dist.shard(refs) if not (out / f"{r.sample_id}.npz").exists()]
    if not todo:
        return
    kw = dict(num_frames=p.num_frames, fps=p.fps, motion_bucket_id=p.motion_bucket_id,
              noise_aug_strength=p.noise_aug_strength, decode_chunk_size=p.decode_chunk_size)
    conds = {}

    def cond(ref):
        if ref.sample_id not in conds:
            conds[ref.sample_id] = load_condition(ref, p)
        return conds[ref.sample_id]

    # warm-up (not timed, not saved): lazy init, allocator and kernel selection are excluded
    method.warmup(p.gen_height, p.gen_width, **kw)
    bar = tqdm(total=len(todo), desc=f"{spec.key:>14}", disable=not progress, unit="video")
    for i in range(0, len(todo), settings.batch_size):
        chunk = todo[i:i + settings.batch_size]
        images = np.stack([cond(r) for r in chunk])
        videos = method.generate(images, [seeds[r.sample_id] for r in chunk], **kw)
        times = method.last_unet_times()
        calls = method.unet_calls_per_video()
        for j, ref in enumerate(chunk):
            v = videos[j]  # AnimateLCM*: the adapter returns the first 14 of its 25 frames
            if settings.save_size == "score":
                v = resize_frames(v, p.score_width, p.score_height)
            # the .json sidecar first: the .npz is the completion marker that a rerun looks for
            atomic_write_json(out / f"{ref.sample_id}.json", {
                "unet_seconds": times[j], "unet_calls": calls["calls"], "unet_batch": calls["batch"],
                "seed": seeds[ref.sample_id], "frames_generated": int(videos.shape[1])})
            save_array(out / f"{ref.sample_id}.npz", v)
            conds.pop(ref.sample_id, None)
        bar.update(len(chunk))
    bar.close()


def _fake_stats(settings, refs, detector, out: Path, dist):
    from .fvd import FeatureStats
    from .transforms import resize_frames
    from .videoio import read_video

    p = settings.protocol
    stats = FeatureStats(detector.feature_dim)
    times, batch = [], []
    for ref in dist.shard(refs):
        v = read_video(out / f"{ref.sample_id}.npz")
        batch.append(resize_frames(v, p.score_width, p.score_height))
        times.append(json.loads((out / f"{ref.sample_id}.json").read_text())["unet_seconds"])
        if len(batch) == settings.fvd_batch_size:
            stats.append(detector.features(np.stack(batch)))
            batch.clear()
    if batch:
        stats.append(detector.features(np.stack(batch)))
    total = FeatureStats.from_tensor(dist.all_reduce_sum(stats.to_tensor()), detector.feature_dim)
    all_times = [t for part in dist.gather_objects(times) for t in part]
    return total, all_times


def _latency(times: list, device: str) -> dict:
    t = np.asarray(times, dtype=np.float64)
    return {"unet_s_median": float(np.median(t)), "unet_s_p10": float(np.percentile(t, 10)),
            "unet_s_p90": float(np.percentile(t, 90)), "unet_s_mean": float(t.mean()), "n": int(t.size),
            "clock": "cuda-events" if device.startswith("cuda") else "time.perf_counter"}


def cli_run(args) -> int:
    from .dist import Dist

    settings = Settings(args)
    dist = Dist(settings.device)
    settings.device = dist.device
    progress = dist.main and not os.environ.get("TQDM_DISABLE")
    try:
        return _run(settings, dist, progress)
    finally:
        dist.close()


def _run(settings, dist, progress) -> int:
    from methods.base import NonFiniteOutput
    from methods.registry import get_method, parse_specs
    from methods.stacks import quiet_hf_logging
    from .data import UCF101, select_videos
    from .detectors import load_detector
    from .fvd import fvd_from_stats

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
        m.check(stack=_stack_for(settings, spec))  # resolves stack and UNet files, loads nothing
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
              "device": settings.device, "device_name": _device_name(settings.device), "dtype": settings.dtype,
              "processes": dist.world, "versions": _versions(), "git_commit": _git_commit(),
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
               "stack": _stack_for(settings, spec), "adapter": method.describe(),
               **common}
        error = None
        try:
            if any(not (sdir / f"{r.sample_id}.npz").exists() for r in dist.shard(refs)):
                method.load(stack=_stack_for(settings, spec), device=settings.device, dtype=settings.torch_dtype)
                _generate_method(settings, spec, method, refs, seeds, sdir, dist, progress)
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
                      f"(N={fake.n}), UNet {rec['latency']['unet_s_median']:.4f} s/video "
                      f"({calls['calls']} x batch {calls['batch']})", flush=True)
        records.append(rec)
        if dist.main:  # results so far, so an interrupted run still leaves readable records
            atomic_write_text(out / "results.jsonl", "".join(json.dumps(r, sort_keys=True) + "\n" for r in records))

    if dist.main:
        paths = report.write_tables(out, records)
        report.write_plot(out, records)
        if settings.previews:
            from .videoio import read_video
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
