"""Full-size generation smoke on a CPU: every method of Table 1 generates one video from the full-size SVD
architectures (random weights) at a small latent, in float32 and in bfloat16, through `sfv-bench run`'s own
code path: the registry's adapters (``methods.registry.get_method``) and ``bench.generate.generate_method``,
which writes the sample exactly as a run does. Prints wall time, UNet time and peak RSS per method.

    nice -n 10 python benchmarks/full_size_smoke_generate.py [--methods svd:2,...] [--dtypes float32,bfloat16]
        [--size 64] [--threads 1] [--write results/full_size_smoke/generate.md]

The stack: ``FULL_CONFIGS`` (stabilityai/stable-video-diffusion-img2vid: 1.525 B UNet, 97.7 M temporal VAE,
CLIP ViT-H/14) built once with seeded random weights; ``animatelcm`` runs on the -xt configuration
(``FULL_XT_CONFIGS``: a 25-frame UNet config over the same tensors) and generates its 25 frames. bfloat16
rows use the float32 weights converted in place (the same random model). To stay under ~8 GB on a shared
machine, the image encoder's 32 transformer layers share one layer's random weights (full-size compute,
1/32 of its 2.5 GB); the UNet and the VAE are untied. ``--size tiny`` runs the same code on the tiny
configs (the test suite's check of this script).

Peak RSS per method: the process's high-water mark, reset before each method (/proc/self/clear_refs), so it
includes the resident stack. Exit 0 when every method made a finite, non-constant video, else 1.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from peak_rss import peak_rss_bytes, reset_peak_rss  # noqa: E402 - a sibling script module

METHODS = "svd:2,animatelcm:2,onestep:1,sfv:1,ufogen:1,ladd:1,lcm:2"
XT_METHODS = {"animatelcm"}          # AnimateLCM-SVD-xt: the 25-frame SVD-xt UNet configuration


def release_freed_memory() -> None:
    """Give the heap's freed pages back to the OS (glibc ``malloc_trim``), so a later peak RSS does not count the
    float32 weights the in-place bfloat16 conversion freed (``keep_freed_memory`` keeps up to 1 GiB otherwise)."""
    import ctypes
    import ctypes.util
    import gc

    gc.collect()
    try:
        ctypes.CDLL(ctypes.util.find_library("c")).malloc_trim(0)
    except (OSError, AttributeError, TypeError):   # no glibc
        pass


def build_stack(size: str, seed: int = 0, device="cpu"):
    """The img2vid pipeline with seeded random weights (float32) on ``device``, CLIP layers tied at full size."""
    import torch
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    from methods.models.configs import FULL_CONFIGS, TINY_CONFIGS
    from methods.models.stacks import build_pipeline

    configs = FULL_CONFIGS if size == "full" else TINY_CONFIGS
    image_encoder = None
    if size == "full":
        one = {**configs["image_encoder"], "num_hidden_layers": 1}
        torch.manual_seed(seed + 2)
        with torch.device(device):
            image_encoder = CLIPVisionModelWithProjection(CLIPVisionConfig(**one))
        layer = image_encoder.vision_model.encoder.layers[0]
        n = configs["image_encoder"]["num_hidden_layers"]
        image_encoder.vision_model.encoder.layers = torch.nn.ModuleList([layer] * n)
        image_encoder.config.num_hidden_layers = n
    pipe = build_pipeline(configs, seed, image_encoder=image_encoder, device=device)
    pipe.set_progress_bar_config(disable=True)
    for m in (pipe.unet, pipe.vae, pipe.image_encoder):
        m.eval().requires_grad_(False)
    return pipe


def xt_view(pipe, size: str):
    """The same weights under the -xt UNet configuration (num_frames 25): no tensor is copied."""
    import torch
    from diffusers import StableVideoDiffusionPipeline, UNetSpatioTemporalConditionModel

    from methods.models.configs import FULL_XT_CONFIGS, TINY_CONFIGS

    cfg = FULL_XT_CONFIGS["unet"] if size == "full" else {**TINY_CONFIGS["unet"], "num_frames": 25}
    with torch.device("meta"):
        unet = UNetSpatioTemporalConditionModel.from_config(cfg)
    unet.load_state_dict(pipe.unet.state_dict(), assign=True, strict=True)
    unet.eval().requires_grad_(False)
    xt = StableVideoDiffusionPipeline(vae=pipe.vae, image_encoder=pipe.image_encoder, unet=unet,
                                      scheduler=pipe.scheduler, feature_extractor=pipe.feature_extractor)
    xt.set_progress_bar_config(disable=True)
    return xt


def condition_image(size: int):
    import numpy as np

    y, x = np.mgrid[0:size, 0:size]
    return np.stack([x * 255 // size, y * 255 // size, (x + y) * 127 // size], -1).astype(np.uint8)


def run_one(spec: str, pipe, dtype, protocol, image, out: Path) -> dict:
    """One video through the run's adapter and ``generate_method``; its figures and checks."""
    import numpy as np

    from bench.generate import generate_method
    from methods.registry import get_method
    from sfv_core.data.videoio import read_video

    method = get_method(spec)
    reset_peak_rss()
    t0 = time.perf_counter()
    method.load(stack="full-size random", device="cpu", dtype=dtype, pipe=pipe)
    ref = SimpleNamespace(sample_id=f"smoke-{spec.replace(':', '-')}")
    sdir = out / ref.sample_id
    sdir.mkdir(parents=True, exist_ok=True)
    error, frames_in = None, []
    hook = pipe.unet.register_forward_pre_hook(           # the frames the UNet sees (animatelcm: 25)
        lambda mod, args, kwargs: frames_in.append((args[0] if args else kwargs["sample"]).shape[1]), with_kwargs=True)
    try:
        generate_method(method, [ref], {ref.sample_id: 1234}, sdir, protocol, lambda r: image, save_size="gen")
    except Exception as e:  # noqa: BLE001 - one method's failure is reported, the others run
        error = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
    finally:
        hook.remove()
    wall = time.perf_counter() - t0
    rec = {"spec": spec, "dtype": str(dtype).replace("torch.", ""), "wall_s": wall, "peak_rss_bytes": peak_rss_bytes(),
           "unet_s": (method.last_unet_times() or [None])[0], "unet_calls": len(method.unet_call_log),
           "unet_batches": sorted(set(method.unet_call_log)), "frames": None,
           "frames_generated": sorted(set(frames_in)),
           "weights_dtype": str(pipe.unet.dtype).replace("torch.", ""), "ok": False, "error": error}
    method.unload()
    if error is None:
        video = read_video(sdir / f"{ref.sample_id}.npz")
        rec["frames"] = list(video.shape)
        want = (protocol.num_frames, protocol.gen_height, protocol.gen_width, 3)
        rec["ok"] = tuple(video.shape) == want and float(np.asarray(video, np.float32).std()) > 0
        if not rec["ok"]:
            rec["error"] = f"video {video.shape} (want {want}) or constant"
    return rec


def markdown(recs: list, args, env: dict) -> str:
    what = ("full-size SVD img2vid configs, seeded random weights (animatelcm: the -xt UNet config over the same "
            "tensors); CLIP's 32 layers share one layer's weights (memory)" if args.stack == "full" else
            "the tiny configs (a check of this script, not the smoke)")
    lines = ["# Full-size generation smoke (`benchmarks/full_size_smoke_generate.py`)", "",
             f"- Machine: {env['cpu']}, {env['threads']} torch thread(s), load average {env['load']}; "
             f"torch {env['torch']}, diffusers {env['diffusers']}; {env['when']}, commit {env['commit']}.",
             f"- Stack: {what}.",
             f"- One video per method: {args.size}x{args.size} pixels = {args.size // 8}x{args.size // 8} latent, "
             f"14 frames (animatelcm generates 25, keeps 14), seed 1234, through the registry's adapter and "
             f"`bench.generate.generate_method`.",
             f"- Stack built in {env['build_s']:.1f} s, peak RSS {env['build_rss'] / 2**30:.2f} GiB while building.",
             "- wall = load + CLIP + VAE encode + UNet loop + VAE decode + write; peak RSS reset before each "
             "method (the resident stack included; bfloat16 rows after the freed float32 heap went back to the OS).",
             "- A smoke on a shared machine (load average above), not a benchmark: compare rows of one run only.", "",
             "| method | dtype | UNet calls x batch | frames made | UNet s | wall s | peak RSS GiB | video | status |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in recs:
        calls = f"{r['unet_calls']} x {','.join(map(str, r['unet_batches']))}" if r["unet_calls"] else "—"
        unet = f"{r['unet_s']:.1f}" if r["unet_s"] is not None else "—"
        made = ",".join(map(str, r["frames_generated"])) or "—"
        lines.append(f"| {r['spec']} | {r['weights_dtype']} | {calls} | {made} | {unet} | "
                     f"{r['wall_s']:.1f} | "
                     f"{r['peak_rss_bytes'] / 2**30:.2f} | {'x'.join(map(str, r['frames'] or [])) or '—'} | "
                     f"{'ok' if r['ok'] else 'FAILED: ' + (r['error'] or '')} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    from sfv_core.logs import setup_console

    setup_console()                                 # the library's messages on the console, as sfv-bench shows them
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--methods", default=METHODS, help=f"comma list of method specs (default {METHODS})")
    p.add_argument("--dtypes", default="float32,bfloat16", help="comma list of float32, bfloat16")
    p.add_argument("--size", type=int, default=64, help="frame size in pixels, a multiple of 8 (latent = size/8)")
    p.add_argument("--stack", choices=("full", "tiny"), default="full", help="full: FULL_CONFIGS; tiny: a check")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--write", default=None, help="also write the table (markdown) to this file")
    args = p.parse_args(argv)
    specs = [s.strip() for s in args.methods.split(",") if s.strip()]
    dtypes = [d.strip() for d in args.dtypes.split(",") if d.strip()]
    if args.size % 8 or args.size < 16 or not specs or not set(dtypes) <= {"float32", "bfloat16"} or not dtypes:
        p.error("--size: a multiple of 8 (>= 16); --methods: at least one spec; --dtypes: float32 and/or bfloat16")
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    import diffusers
    import torch

    from methods.registry import parse_spec
    from sfv_core.env import cpu_name, git_commit, keep_freed_memory
    from sfv_core.protocol import Protocol

    for s in specs:
        parse_spec(s)                                   # a bad spec fails before the build
    torch.set_num_threads(args.threads)
    keep_freed_memory()                                 # what `sfv-bench run` does on a CPU
    protocol = Protocol(num_videos=1, gen_width=args.size, gen_height=args.size)
    image = condition_image(args.size)
    t0 = time.perf_counter()
    reset_peak_rss()
    pipe = build_stack(args.stack)
    env = {"cpu": cpu_name(), "threads": torch.get_num_threads(), "torch": torch.__version__,
           "diffusers": diffusers.__version__, "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
           "commit": git_commit(), "build_s": time.perf_counter() - t0, "build_rss": peak_rss_bytes(),
           "load": " ".join(f"{x:.1f}" for x in os.getloadavg())}
    print(f"stack built in {env['build_s']:.1f} s (peak RSS {env['build_rss'] / 2**30:.2f} GiB)", flush=True)
    recs = []
    with tempfile.TemporaryDirectory(prefix="sfv-smoke-") as tmp:
        for name in dtypes:
            dtype = getattr(torch, name)
            pipe.to(dtype=dtype)                        # in place, parameter by parameter
            release_freed_memory()
            xt = xt_view(pipe, args.stack) if any(parse_spec(s).name in XT_METHODS for s in specs) else None
            for spec in specs:
                use = xt if parse_spec(spec).name in XT_METHODS else pipe
                rec = run_one(spec, use, dtype, protocol, image, Path(tmp) / name)
                recs.append(rec)
                print(f"{spec:14s} {rec['dtype']:8s} UNet {rec['unet_calls']} call(s) "
                      f"{(rec['unet_s'] or 0):7.1f} s  wall {rec['wall_s']:7.1f} s  peak RSS "
                      f"{rec['peak_rss_bytes'] / 2**30:5.2f} GiB  {'ok' if rec['ok'] else rec['error']}", flush=True)
            xt = None
    env["load"] = env["load"] + " at start, " + " ".join(f"{x:.1f}" for x in os.getloadavg()) + " at end"
    text = markdown(recs, args, env)
    print("\n" + text)
    if args.write:
        from sfv_core.fsutil import atomic_write_bytes
        Path(args.write).parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(args.write, text.encode())
    return 0 if all(r["ok"] for r in recs) else 1


if __name__ == "__main__":
    sys.exit(main())
