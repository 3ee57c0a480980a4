"""`sfv-bench latency`: write latency.json + latency.md (what is timed: the package doc)."""
from __future__ import annotations

from pathlib import Path

import torch

from methods.models.variants import parse_variant
from sfv_core.env import resolve_device
from sfv_core.errors import UserError

from .benchmark import Settings, run_benchmark
from .models import make_shape
from .options import OPTION_ORDER
from .report import default_out_dir, write_results


def cli_latency(args) -> int:
    """`sfv-bench latency`: write latency.json + latency.md (see the package doc for what is timed).

    JSON: schema, created, git_commit, env {device, gpu_name, driver, torch, cuda, cudnn, diffusers,
    transformers, python, cpu, threads, load_average, tf32, clock}, options {dtype, attention, channels_last,
    compile, cuda_graphs}, shape {name, num_frames, height, width, latent}, models {source,
    *_params}, timing, unet_pass {batch1, batch2[, batch1_25f, batch2_25f]: {median_ms, p10_ms,
    p90_ms, min_ms, mean_ms, n, frames, batch}}, components {image_encoder, vae_encode, vae_decode_<T>f},
    flops {unet_batch1, ..., vae_decode_<T>f, vae_encode, image_encoder}, tflops_achieved,
    peak_mem_bytes (batch-1 pass), peak_mem {per measurement}, peak_rss_bytes, decode_chunk_size,
    methods [{spec, name, steps, cfg, calls, batch, frames, unet_ms_median, unet_loop_ms,
    unet_loop, loop_vs_estimate, unet_flops, e2e_flops, e2e {image_encoder_ms, vae_encode_ms,
    unet_loop_ms, vae_decode_ms, decode_chunk_size, frames_decoded, total_ms}, paper, method_run}],
    precision_check {reference, metric, tolerance, search, candidates, chosen, chosen_rel_l2, passed}.
    """
    device = resolve_device(getattr(args, "device", None))
    threads = getattr(args, "threads", None)
    if threads is None and device == "cpu":
        threads = 1                     # several threads on a shared small machine give wild numbers
    if threads:
        torch.set_num_threads(int(threads))
    cuda = device.startswith("cuda")
    shape = make_shape(args.shape or ("paper" if cuda else "tiny"), args.num_frames, args.height, args.width)
    for name in ("repeats", "warmup", "loop_repeats"):
        v = getattr(args, name, None)
        if v is not None and v < (1 if name != "warmup" else 0):
            raise UserError(f"--{name.replace('_', '-')} must be >= {1 if name != 'warmup' else 0} (got {v})")
    if args.tolerance is not None and not args.tolerance > 0:
        raise UserError(f"--tolerance must be > 0 (got {args.tolerance})")
    s = Settings(
        shape=shape, device=device, stack=args.stack, variant=parse_variant(getattr(args, "variant", None)),
        methods=args.methods,
        option_values={k: getattr(args, k, "auto") for k in OPTION_ORDER},
        tolerance=args.tolerance, warmup=args.warmup if args.warmup is not None else (3 if cuda else 1),
        repeats=args.repeats or (20 if cuda else 5), loop_repeats=args.loop_repeats or 3,
        decode_chunk_size=args.decode_chunk_size, method_check=not args.no_method_check, seed=args.seed)
    if s.decode_chunk_size is not None and s.decode_chunk_size < 1:
        raise UserError(f"--decode-chunk-size must be >= 1 (got {s.decode_chunk_size})")
    out = Path(args.out) if args.out else default_out_dir(shape, device)
    taken = next((p for p in (out, *out.parents) if p.exists() and not p.is_dir()), None)
    if taken is not None:
        raise UserError(f"--out {out}: {taken} is a file, not a folder; pass a folder (it gets latency.json "
                        f"and latency.md)")
    result = run_benchmark(s)
    js, md = write_results(result, out)
    print(f"wrote {js} and {md}")
    return 0 if result["precision_check"]["passed"] else 1
