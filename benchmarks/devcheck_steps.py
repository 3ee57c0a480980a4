"""The six steps of the device check (env, run, latency, train, gate, compile), each run by
``device_check.py --worker STEP`` in its own process: ``Worker`` (the steps on ``WorkerBase``) and
``worker_main``, the worker process's entry."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from devcheck_util import (CONTEXT_BYTES, H100_80GB_BYTES, PEAK_SOURCE, ROOT, call_cli, cli_reason, exc_line,
                           have_pyav, one_line, peak_for, read_json, write_json)

NO_PYAV = ("needs PyAV (the synthetic dataset's AVI files are written and read), which the payload does not "
           "carry (benchmarks/devcheck_payload.py)")
from devcheck_worker import WorkerBase, _cache_flops


class Worker(WorkerBase):
    """The steps: ``step_<name>`` runs step <name>, one guarded ``sub`` per sub-run."""

    def step_env(self):
        def host():
            info = {"python": sys.version.split()[0], "platform": sys.platform, "cpus": os.cpu_count()}
            if shutil.which("nvidia-smi"):
                q = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total,memory.used,"
                                    "clocks.max.sm,power.limit", "--format=csv,noheader"],
                                   capture_output=True, text=True, timeout=20)
                info["nvidia_smi"] = q.stdout.strip() or one_line(q.stderr)
            from importlib import metadata
            vers = {}
            for pkg in ("torch", "triton", "diffusers", "transformers", "accelerate", "huggingface_hub",
                        "safetensors", "av", "decord", "pytorch_optimizer", "tensorboard", "tabulate", "tqdm",
                        "numpy", "matplotlib", "scipy"):
                try:
                    vers[pkg] = metadata.version(pkg)
                except metadata.PackageNotFoundError:
                    vers[pkg] = None
            info["versions"] = vers
            missing = []
            for mod in ("diffusers", "transformers", "accelerate", "pytorch_optimizer", "tabulate", "tqdm"):
                try:
                    __import__(mod)
                except Exception as e:  # noqa: BLE001
                    missing.append(f"{mod} ({exc_line(e)})")
            info["import_failures"] = missing
            if missing:
                raise RuntimeError("cannot import " + ", ".join(missing) + " (install .whl/*.whl, see the docstring)")
            return info

        def device():
            import torch
            info = {"torch": torch.__version__, "cuda": torch.version.cuda,
                    "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None}
            if not self.cuda:
                from sfv_core.env import cpu_name
                info.update(gpu_name=None, cpu=cpu_name(), threads=torch.get_num_threads())
                return info
            if not torch.cuda.is_available():
                raise RuntimeError("torch.cuda.is_available() is False (no GPU or a CPU build of torch)")
            p = torch.cuda.get_device_properties(0)
            free, total = torch.cuda.mem_get_info(0)
            from sfv_core.env import gpu_driver
            info.update(gpu_name=p.name, capability=f"{p.major}.{p.minor}", sms=p.multi_processor_count,
                        total_bytes=total, free_bytes=free, driver=gpu_driver(),
                        l2_bytes=getattr(p, "L2_cache_size", None),
                        dense_bf16_peak_tflops=peak_for(p.name), peak_source=PEAK_SOURCE)
            return info

        def matmul():
            import torch
            n, reps = (8192, 10) if self.cuda and not self.quick else (1024, 3)
            dev = "cuda" if self.cuda else "cpu"
            dt = torch.bfloat16
            a = torch.randn(n, n, device=dev, dtype=dt)
            b = torch.randn(n, n, device=dev, dtype=dt)
            from methods.models.timing import time_ms
            t = time_ms(lambda: a @ b, dev, 3, reps)
            t.sort()
            tfl = 2 * n**3 / (t[len(t) // 2] / 1e3) / 1e12
            return {"matmul_n": n, "matmul_ms_median": t[len(t) // 2], "matmul_bf16_tflops": tfl,
                    "note": "random data, median of %d after 3 warm-ups" % reps
                    + ("" if self.cuda else "; a CPU figure, not a GPU one")}

        self.sub("host", 1, host)
        self.sub("device", 1, device)
        self.sub("matmul", 3, matmul)
        flat = {}
        for v in self.rec["subruns"].values():
            flat.update({k: x for k, x in v.items() if k not in ("status", "reason", "seconds")})
        self.rec["env"] = flat
        write_json(self.work / "env.json", flat)

    def step_run(self):
        if not have_pyav():
            self.rec["subruns"]["all"] = {"status": "skipped", "reason": NO_PYAV}
            return
        from methods.models.mini import mini_dir
        world = "mini" if (mini_dir() / "manifest.json").is_file() else "tiny"
        n = 4 if self.quick else 16
        extra = ["--methods", "onestep:1", "--timing-videos", "1"] if self.quick else []
        self.rec.update(world=world, n=n, note=None if world == "mini" else
                        "methods/models/mini/manifest.json absent: the tiny world (random-init models, toy detector)")
        rows = {"fp32": "float32", "fp16": "float16" if self.cuda else "bfloat16"}
        if not self.cuda:
            self.rec["substituted"] = "fp16 row runs --dtype bfloat16 on a CPU (fp16 CPU kernels: 271 s vs 27 s)"
        threads = ["--threads", str(self.args.threads or 1)] if not self.cuda else []

        def one(label, dtype, device, argv_extra):
            out = self.work / f"run-{label}"
            argv = ["run", "--world", world, "--device", device, "--dtype", dtype, "-n", n, "--out", out,
                    "--no-previews", *(["--procs", "1"] if device == "cpu" else []), *argv_extra]   # one process
            rc, tail = self.sfv_bench(argv)
            recs = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines() if x.strip()] \
                if (out / "results.jsonl").is_file() else []
            methods = [{k: r.get(k) for k in ("spec", "status", "fvd", "fvd_interval", "n_fake", "n_real",
                                              "unet_calls", "unet_batch", "device_name", "dtype", "metric")}
                       | {"latency": r.get("latency")} for r in recs]
            res = {"argv": [str(a) for a in argv], "rc": rc, "methods": methods}
            if rc != 0:
                res.update(status="failed", reason=cli_reason(rc, tail))
            return res

        for label, dtype in rows.items():
            self.sub(label, 15 if self.quick else 40,
                     lambda label=label, dtype=dtype: one(label, dtype, self.args.device, [*extra, *threads]))
        if self.cuda:
            self.sub("cpu-fp32", 15 if self.quick else 45,
                     lambda: one("cpu-fp32", "float32", "cpu", ["--methods", "onestep:1", "--timing-videos", "1"]))
        else:
            self.rec["subruns"]["cpu-fp32"] = {"status": "ok", "note": "device is cpu: the fp32 row is the CPU run"}
        self.rec["compare"] = self._compare_runs()

    def _compare_runs(self) -> dict:
        subs = self.rec["subruns"]

        def by_spec(name):
            return {m["spec"]: m for m in subs.get(name, {}).get("methods", []) if m.get("fvd") is not None}

        a, b, c = by_spec("fp32"), by_spec("fp16"), by_spec("cpu-fp32")
        out = {"fp32_vs_fp16": [], "cuda_vs_cpu_fp32": []}
        for spec in [s for s in a if s in b]:
            x, y = a[spec], b[spec]
            lo = max(x["fvd_interval"][0], y["fvd_interval"][0]) if x["fvd_interval"] and y["fvd_interval"] else None
            hi = min(x["fvd_interval"][1], y["fvd_interval"][1]) if x["fvd_interval"] and y["fvd_interval"] else None
            out["fp32_vs_fp16"].append({"spec": spec, "fvd_fp32": x["fvd"], "fvd_fp16": y["fvd"],
                                        "diff": y["fvd"] - x["fvd"],
                                        "intervals_overlap": None if lo is None else bool(lo <= hi)})
        for spec in [s for s in c if s in a]:
            out["cuda_vs_cpu_fp32"].append({"spec": spec, "fvd_cuda": a[spec]["fvd"], "fvd_cpu": c[spec]["fvd"],
                                            "rel_diff": abs(a[spec]["fvd"] - c[spec]["fvd"]) / abs(c[spec]["fvd"])})
        return out

    def step_latency(self):
        dtypes = {"bf16": "bf16", "fp16": "fp16" if self.cuda else "fp32"}
        if not self.cuda:
            self.rec["substituted"] = "the fp16 file holds an fp32 run on a CPU (fp16 CPU kernels are ~10x slower)"
        methods = "svd:2,sfv:1" if self.quick else "svd:25,sfv:1"
        _cache_flops()
        for label, dtype in dtypes.items():
            def one(label=label, dtype=dtype):
                out = self.work / f"lat-{label}"
                rc, tail = self.sfv_bench(self.latency_argv(dtype, out, search=True, methods=methods))
                js = out / "latency.json"
                if not js.is_file():
                    return {"status": "failed", "reason": cli_reason(rc, tail), "rc": rc}
                shutil.copyfile(js, self.work / f"latency-{label}.json")
                res = {"rc": rc, **self.figures(json.loads(js.read_text()))}
                if rc != 0:  # 1: the chosen options failed the precision check
                    res.update(status="failed", reason=cli_reason(rc, tail))
                return res
            self.sub(label, 10 if self.quick else 45, one)
            self._free()

    def step_compile(self):
        """bf16, then fp16 (fp32 on a CPU), with torch.compile: each dtype's UNet compiled once per shape."""
        methods = "sfv:1"
        _cache_flops()
        dtypes = {"bf16": "bf16", "fp16": "fp16" if self.cuda else "fp32"}

        def one(label, dtype):
            out = self.work / f"lat-{label}-compile"
            rc, tail = self.sfv_bench(self.latency_argv(dtype, out, search=False, methods=methods, compile_="on"))
            js = out / "latency.json"
            if not js.is_file():
                return {"status": "failed", "reason": cli_reason(rc, tail), "rc": rc}
            shutil.copyfile(js, self.work / f"latency-{label}-compile.json")
            res = {"rc": rc, **self.figures(json.loads(js.read_text()))}
            if rc != 0:
                res.update(status="failed", reason=cli_reason(rc, tail))
            return res
        for label, dtype in dtypes.items():   # a time box too short shows as a timeout
            self.sub(f"{label}-compile", 1, lambda label=label, dtype=dtype: one(label, dtype))
            self._free()

    def step_train(self):
        import torch

        import bench_train
        size = "tiny" if self.quick else "full"
        dev = "cuda" if self.cuda else "cpu"
        warmup, repeat = 1, (1 if self.quick else 2)
        if not self.cuda:
            torch.set_num_threads(self.args.threads or 1)
        from sfv_train.config import TrainConfig
        k = TrainConfig.r1_every
        total = torch.cuda.get_device_properties(0).total_memory if self.cuda else None
        self.rec.update(size=size, shape="768x448x14, batch 1, bf16 autocast, checkpointing on" if size == "full"
                        else "64x64x14, batch 1, fp32, checkpointing on", r1_every=k, device_total_bytes=total)

        def variant(r1):
            with tempfile.TemporaryDirectory(dir=self.work) as tmp:
                t = None
                try:
                    t = bench_train.make_trainer(size, dev, r1, Path(tmp))
                    times, m = bench_train.time_steps(t, warmup, repeat)
                    times.sort()
                    res = {"r1": r1, "bf16": t.bf16, "step_s_median": times[len(times) // 2], "step_s_all": times,
                           "finite": all(v == v for v in m.values())}
                    if self.cuda:
                        alloc, reserved = torch.cuda.max_memory_allocated(), torch.cuda.max_memory_reserved()
                        res.update(peak_allocated_bytes=alloc, peak_reserved_bytes=reserved,
                                   fits_80gb=reserved + CONTEXT_BYTES <= H100_80GB_BYTES)
                    else:
                        from methods.models.timing import peak_rss_bytes
                        res.update(peak_rss_bytes=peak_rss_bytes(), fits_80gb=None)
                    return res
                except torch.cuda.OutOfMemoryError as e:
                    peak = torch.cuda.max_memory_allocated() if self.cuda else None
                    return {"r1": r1, "status": "failed", "oom": True, "peak_allocated_bytes": peak,
                            "fits_80gb": False, "reason": "OOM: " + exc_line(e)}
                finally:
                    t = None
                    self._free()

        def estimated():
            """sfv_train.memory's estimate of these steps (fake tensors on the CPU; make_trainer keeps no VAE)."""
            from sfv_train.memory import estimate
            e = estimate(TrainConfig(stack="svd" if size == "full" else "tiny", width=768 if size == "full" else 64,
                                     height=448 if size == "full" else 64, num_frames=14, grad_accum=1, batch_size=1,
                                     mixed_precision="bf16" if size == "full" and self.cuda else "no",
                                     gradient_checkpointing=True, fvd_every=0, device=dev))
            vae = e.resident.get("VAE and CLIP image encoder", 0)
            return {**{f"peak_bytes_{v}": e.peak(v) - vae for v in e.d_peaks},
                    "compare_with": "peak_allocated_bytes of each r1-* subrun"}

        need = 5 if self.quick else 25
        self.sub("memory-estimate", need, estimated)
        exact = self.sub("r1-exact", need, lambda: variant("exact"))
        self.sub("r1-lazy-off", need, lambda: variant("none"))
        tried = ["exact", "none"]
        if exact and exact.get("oom"):
            self.sub("r1-approx", need, lambda: variant("approx"))
            tried.insert(1, "approx")
        subs = self.rec["subruns"]
        ex, off = subs.get("r1-exact", {}), subs.get("r1-lazy-off", {})
        if ex.get("status") == "ok" and off.get("status") == "ok":
            self.rec["lazy_r1_amortised_s"] = (ex["step_s_median"] + (k - 1) * off["step_s_median"]) / k
        fits = [n for n in ("r1-exact", "r1-approx", "r1-lazy-off") if subs.get(n, {}).get("fits_80gb")]
        self.rec["tried"] = tried
        self.rec["fits_80gb"] = None if not self.cuda else {
            "exact_r1": subs.get("r1-exact", {}).get("fits_80gb"),
            "what_fits": fits, "rule": f"peak reserved + {CONTEXT_BYTES // 2**30} GiB <= {H100_80GB_BYTES // 2**20} MiB "
                                       f"(an H100 80GB); lazy R1 still takes an exact step every {k}"}

        def cli():
            import numpy as np

            from bench.cli import train_main
            from sfv_core.data.videoio import save_array
            data = self.work / "train-data"             # a few .npz clips: no video container, no PyAV
            g = np.random.default_rng(0)
            for i in range(3):
                save_array(data / f"clip{i}.npz", g.integers(0, 256, (8, 64, 64, 3), dtype=np.uint8))
            out = self.work / "train-cli"
            argv = ["--stack", "tiny", "--data", data, "--out", out, "--device", dev, "--width", 64, "--height", 64,
                    "--num-frames", 6, "--grad-accum", 1, "--max-steps", 1, "--no-progress", "--report-to", "none",
                    "--preview-every", 0, "--latent-cache", self.work / "train-latents"]
            rc, tail = call_cli(train_main, argv)
            res = {"rc": rc, "argv": [str(a) for a in argv],
                   "exported": (out / "export" / "unet").is_dir(), "config": read_json(out / "config.json") and "ok"}
            if rc != 0 or not res["exported"]:
                res.update(status="failed", reason=cli_reason(rc, tail))
            return res
        self.sub("sfv-train-cli", 5 if self.quick else 20, cli)

    def step_gate(self):
        _cache_flops()
        from bench.latency.options import UNetRunner
        dtype = "bf16"
        tol = "10" if self.cuda else "25"
        kw = dict(search=False, methods="sfv:1", repeats=10 if self.cuda else 5, warmup=3 if self.cuda else 1,
                  loop_repeats=3)
        self.rec.update(tolerance_pct=float(tol), slow_factor=2,
                        how_slowed="UNetRunner.__call__ runs the UNet twice (monkeypatched in this process): same "
                                   "GPU, torch, options, shape and models, so regress compares the runs")

        def lat(name, slow=False):
            out = self.work / f"gate-{name}"
            orig = UNetRunner.__call__
            if slow:
                def slowed(self_, *a, **k):
                    orig(self_, *a, **k)
                    return orig(self_, *a, **k)
                UNetRunner.__call__ = slowed
            try:
                rc, tail = self.sfv_bench(self.latency_argv(dtype, out, **kw))
            finally:
                UNetRunner.__call__ = orig
            js = out / "latency.json"
            if not js.is_file():
                return {"status": "failed", "reason": cli_reason(rc, tail), "rc": rc}
            r = json.loads(js.read_text())
            return {"rc": rc, "unet_b1": r["unet_pass"]["batch1"], "unet_b2": r["unet_pass"]["batch2"],
                    "options": r["options"]}

        need = 5 if self.quick else 25
        for name, slow in (("base", False), ("again", False), ("slowed", True)):
            self.sub(name, need, lambda name=name, slow=slow: lat(name, slow))
            self._free()

        def regress(a: Path, b: Path, expect: int, what: str):
            env = {**os.environ, "PYTHONPATH": os.pathsep.join(x for x in (str(ROOT), os.environ.get("PYTHONPATH")) if x)}
            cmd = [sys.executable, "-m", "bench", "regress", str(a), str(b), "--tolerance", tol]
            print("$ python3 -m bench " + " ".join(cmd[3:]), flush=True)
            p = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
            print(p.stdout + p.stderr, flush=True)
            lines = [ln for ln in (p.stdout + p.stderr).splitlines() if ln.strip()]
            res = {"rc": p.returncode, "expected_rc": expect, "what": what, "output": (p.stdout + p.stderr)[-4000:]}
            if p.returncode != expect:
                res.update(status="failed", reason=one_line(f"{what}: exit {p.returncode}, expected {expect}: "
                                                            f"{lines[-1] if lines else 'no output'}"))
            return res

        subs = self.rec["subruns"]
        if all(subs.get(n, {}).get("status") == "ok" for n in ("base", "again", "slowed")):
            b = subs["base"]["unet_b1"]["median_ms"]
            self.rec["b1_ratio"] = {"again/base": subs["again"]["unet_b1"]["median_ms"] / b,
                                    "slowed/base": subs["slowed"]["unet_b1"]["median_ms"] / b}
        g = self.work
        ok = lambda n: self.rec["subruns"].get(n, {}).get("status") == "ok"  # noqa: E731
        if ok("base") and ok("again"):
            same = self.sub("regress-same", 1, lambda: regress(g / "gate-base", g / "gate-again", 0,
                                                               "back-to-back runs (a false alarm if it fails)"))
            if same and same["status"] != "ok" and not self.cuda:
                # A shared CPU slows whole measurements at random (regress's doc: rerun before trusting a
                # failure): one more run on a CPU only; on a GPU a false alarm is what this step looks for.
                self.sub("again-retry", need, lambda: lat("again-retry"))
                if ok("again-retry"):
                    retry = regress(g / "gate-base", g / "gate-again-retry", 0, "back-to-back runs, CPU retry")
                    self.rec["subruns"]["regress-same"] = {"status": "ok", **retry, "first_try": same,
                                                           "note": "CPU: the first comparison failed, one rerun"}
                    self.save()
        if ok("base") and ok("slowed"):
            self.sub("regress-slowed", 1, lambda: regress(g / "gate-base", g / "gate-slowed", 1,
                                                          "UNet slowed x2 (must be caught)"))
        a, b = g / "latency-bf16.json", g / "latency-fp16.json"
        if a.is_file() and b.is_file():
            self.sub("regress-unlike", 1, lambda: regress(a, b, 2, "bf16 vs fp16 runs (must be refused)"))
        else:
            self.rec["subruns"]["regress-unlike"] = {"status": "skipped", "reason": "step latency wrote no bf16/fp16 pair"}


def worker_main(args) -> int:
    if args.device == "cpu" or args.threads:
        import torch
        torch.set_num_threads(args.threads or 1)
    w = Worker(args)
    try:
        getattr(w, f"step_{args.worker}")()
    except Exception as e:  # noqa: BLE001 - the step's own setup failed
        import traceback
        traceback.print_exc()
        w.rec["subruns"].setdefault("setup", {"status": "failed", "reason": exc_line(e)})
    w.finish()
    return 0
