"""The worker process's base class of the device check: the step record (saved after every guarded sub-run),
its time box, the ``sfv-bench latency`` command line and the key figures of a ``latency.json`` (against
the datasheet peak, the FLOP floors and the targets); plus the FLOP-count cache the latency steps share.
The steps themselves are in devcheck_steps.py."""
from __future__ import annotations

import contextlib
import gc
import json
import time
from pathlib import Path

from devcheck_util import (FLOOR_NOTE, call_cli, exc_line, one_line, peak_for, read_json,
                           write_json)
from gpu_latency import H200_BF16_TFLOPS, TARGET_ONESTEP_E2E_MS, TARGET_UNET_MS  # torch-free


class WorkerBase:
    """One step's worker: ``sub`` runs a guarded sub-run, ``finish`` sets the step's status and reason."""

    def __init__(self, args):
        self.args, self.work = args, Path(args.work)
        self.cuda = args.device == "cuda"
        self.quick = args.quick
        self.path = self.work / f"{args.worker}.json"
        self.rec = {"step": args.worker, "device": args.device, "quick": self.quick, "subruns": {}, "current": None}
        self.env = read_json(self.work / "env.json") or {}
        self.save()

    def save(self):
        write_json(self.path, self.rec)

    def left(self) -> float:
        return self.args.deadline - time.time()

    def sub(self, name: str, need_s: float, fn):
        """Run one guarded sub-run: a failure is its one-line reason, the record is saved after it."""
        if self.left() < need_s:
            self.rec["subruns"][name] = {"status": "skipped", "reason": f"{max(self.left(), 0):.0f} s left of the "
                                         f"step's time box, about {need_s:.0f} s needed"}
            self.save()
            return None
        self.rec["current"] = name
        self.save()
        t0 = time.time()
        print(f"\n=== {self.args.worker}/{name}", flush=True)
        try:
            val = fn() or {}
            entry = {"status": "ok", **val}
        except Exception as e:  # noqa: BLE001 - recorded, the step goes on
            import traceback
            traceback.print_exc()
            entry = {"status": "failed", "reason": exc_line(e)}
            self._free()
        entry["seconds"] = round(time.time() - t0, 1)
        self.rec["subruns"][name] = entry
        self.rec["current"] = None
        self.save()
        return entry

    def _free(self):
        gc.collect()
        if self.cuda:
            import torch
            with contextlib.suppress(Exception):
                torch.cuda.empty_cache()

    def finish(self):
        subs = self.rec["subruns"]
        bad = {k: v for k, v in subs.items() if v.get("status") != "ok"}
        if not subs:
            self.rec.update(status="failed", reason="nothing ran")
        elif not bad:
            self.rec.update(status="ok", reason=None)
        else:
            st = "failed" if any(v["status"] == "failed" for v in bad.values()) else "partial"
            self.rec.update(status=st, reason=one_line("; ".join(f"{k}: {v.get('reason')}" for k, v in bad.items())))
        self.save()

    # ------------------------------------------------------------------------------------ helpers

    def sfv_bench(self, argv):
        from bench.cli import main
        return call_cli(main, argv)

    def gpu_name(self):
        return self.env.get("gpu_name")

    def latency_argv(self, dtype: str, out: Path, *, search: bool, methods: str, compile_: str = "off",
                     repeats=None, warmup=None, loop_repeats=None) -> list:
        full = not self.quick
        graphs = "off,on" if (search and self.cuda) else "off"
        cl = "off,on" if (search and self.cuda and full) else "off"
        argv = ["latency", "--shape", "tiny" if self.quick else "paper", "--device", self.args.device,
                "--dtype", dtype, "--attention", "default", "--channels-last", cl, "--compile", compile_,
                "--cuda-graphs", graphs, "--methods", methods, "--no-method-check",
                "--repeats", repeats or (10 if full else 3), "--warmup", warmup if warmup is not None else (3 if full else 1),
                "--loop-repeats", loop_repeats or (2 if full else 1), "--out", out]
        if not self.cuda:
            argv += ["--threads", self.args.threads or 1]
        return argv

    def figures(self, r: dict) -> dict:
        """Key figures of a latency.json (CUDA: against the peak, the floors and the targets)."""
        b1, b2 = r["unet_pass"]["batch1"], r["unet_pass"]["batch2"]
        name = r["env"].get("gpu_name")
        peak = peak_for(name)
        pc = r["precision_check"]
        eager = [c for c in pc["candidates"] if c.get("median_ms") and not any(
            c["options"][k] for k in ("compile", "cuda_graphs", "channels_last"))]
        onestep = next((m for m in r["methods"] if m["calls"] == 1 and m["frames"] == r["shape"]["num_frames"]), None)
        svd = next((m for m in r["methods"] if m["name"] == "svd"), None)
        tf1 = r["tflops_achieved"]["unet_batch1"]
        f1 = r["flops"]["unet_batch1"]
        measured = self.env.get("matmul_bf16_tflops") if self.cuda else None
        out = {
            "gpu_name": name, "options": r["options"],
            "label": _label(r["options"]), "precision_passed": pc["passed"], "precision_rel_l2": pc["chosen_rel_l2"],
            "candidates": [{"label": c["label"], "median_ms": c.get("median_ms"), "rel_l2": c.get("rel_l2"),
                            "passed": c.get("passed"), **({"error": c["error"]} if c.get("error") else {})}
                           for c in pc["candidates"]],
            "unet_b1_ms": b1["median_ms"], "unet_b1_p10_ms": b1["p10_ms"], "unet_b1_p90_ms": b1["p90_ms"],
            "unet_b2_ms": b2["median_ms"], "eager_b1_ms": min(c["median_ms"] for c in eager) if eager else None,
            "vae_decode_ms": (r["components"].get(f"vae_decode_{r['shape']['num_frames']}f") or {}).get("median_ms"),
            "flops_unet_b1": f1, "tflops_b1": tf1, "tflops_b2": r["tflops_achieved"]["unet_batch2"],
            "dense_bf16_peak_tflops": peak, "fraction_of_peak_b1": tf1 / peak if peak else None,
            "peak_mem_bytes": r.get("peak_mem_bytes"),
            "peak_mem_max_bytes": max([v for v in (r.get("peak_mem") or {}).values() if v] or [0]) or None,
            "onestep_spec": onestep and onestep["spec"], "onestep_e2e_ms": onestep and onestep["e2e"]["total_ms"],
            "onestep_e2e": onestep and onestep["e2e"],
            "svd_spec": svd and svd["spec"], "svd_unet_loop_ms": svd and svd["unet_loop_ms"],
            "shape": r["shape"]["name"],
        }
        if self.cuda and r["shape"]["name"] == "paper":
            h200 = "h200" in (name or "").lower()
            out["targets"] = {
                "stated_for": "one H200, bf16", "unet_b1_target_ms": TARGET_UNET_MS,
                "unet_b1_floor_h200_ms": f1 / (H200_BF16_TFLOPS * 1e12) * 1e3,
                "unet_b1_floor_this_chip_ms": f1 / (measured * 1e12) * 1e3 if measured else None,
                "unet_b1_floor_datasheet_ms": f1 / (peak * 1e12) * 1e3 if peak else None,
                "onestep_e2e_target_ms": TARGET_ONESTEP_E2E_MS, "floor_note": FLOOR_NOTE,
                "applies": h200 and r["options"]["dtype"] == "bf16",
                "unet_b1_met": (b1["median_ms"] <= TARGET_UNET_MS and pc["passed"]) if h200 else None,
                "onestep_e2e_met": (onestep is not None and onestep["e2e"]["total_ms"] <= TARGET_ONESTEP_E2E_MS)
                if h200 else None,
            }
        return out


def _label(o: dict) -> str:
    from bench.latency.options import Options
    return Options(**o).label()


def _cache_flops():
    """FLOP counting (meta device, seconds) is deterministic: count once per shape in this process."""
    import bench.latency.benchmark as b
    if getattr(b.count_all_flops, "_devcheck", False):
        return
    orig, memo = b.count_all_flops, {}

    def cached(configs, shape, frame_counts, chunk):
        key = (json.dumps(configs, sort_keys=True, default=str), shape, tuple(sorted(frame_counts)), chunk)
        if key not in memo:
            memo[key] = orig(configs, shape, frame_counts, chunk)
        return dict(memo[key])
    cached._devcheck = True
    b.count_all_flops = cached
