"""The one-shot GPU check: environment, the default run, paper-shape latency, the full-size training step
and the latency regression gate, each guarded and time-boxed, results in a few files under OUT.

    python3 benchmarks/device_check.py OUT [--device auto|cuda|cpu] [--quick] [--budget-s N]
                                           [--steps env,run,latency,train,gate,compile] [--work DIR]

On a lent GPU machine (the repository is not pip-installed there; torch, transformers, accelerate,
huggingface_hub, safetensors, tabulate, tqdm, matplotlib, tensorboard are in its image) -- one `run` of
the device tool with ``carry: [".whl"]`` and ``timeout_s: 540``::

    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
        .whl/*.whl && export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 && python3 benchmarks/device_check.py $OUT

(``bash benchmarks/device_check.sh $OUT`` is the same line.) The wheels, prepared once on a machine with
pip access, in the repository root (``/.whl/`` is git-ignored; versions = this project's .venv; each
wheel's ``Requires-Dist`` checked against KINDS.md's package list: diffusers needs importlib_metadata only
on Python < 3.8, huggingface-hub >= 1.32 (image: 1.33), safetensors >= 0.8 (image: 0.8.0); decord is
optional (PyAV is the fallback reader), so it stays behind: 13.6 MB)::

    echo /.whl/ >> .git/info/exclude
    P="--no-deps --only-binary=:all: --python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64
       --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64
       --platform manylinux1_x86_64 -d .whl"
    python3 -m pip download $P diffusers==0.42.1          # 6.4 MB
    python3 -m pip download $P av==18.1.0                 # 35.8 MB (FFmpeg bundled; sfv_core.data.videoio)
    python3 -m pip download $P pytorch_optimizer==4.1.0   # 0.4 MB (SM3 of sfv-train)

About 42.5 MB together; the repository adds about 1.3 MB (64 MiB travel limit).

How it runs: this process imports no torch. Each step runs in a child process
(``device_check.py --worker STEP``; killed with its process group at its time box), which calls the
commands in process exactly as ``python3 -m bench ...`` / ``sfv-train`` would (``bench.cli.main``,
``bench.cli.train_main``) and writes its record after every sub-run, so a hang, an OOM or a crash costs
one step, never the summary. Steps (time boxes for the full GPU run, default budget 400 s; every later
step keeps a reserve, so an overrunning step is cut, not the rest):

1. ``env`` -- GPU name, driver, memory, torch / CUDA / cuDNN / triton and package versions, free memory,
   a measured 8192^3 bf16 matmul rate and the chip's dense bf16 peak from its datasheet (table below).
2. ``run`` -- ``sfv-bench run --world mini|tiny --device cuda -n 16`` at ``--dtype float32`` and
   ``float16`` (mini when ``methods/models/mini/manifest.json`` exists, else tiny): FVD with its
   interval, UNet calls per video and the per-video UNet latency (CUDA events) per method and dtype;
   plus ``--device cpu --dtype float32 --methods onestep:1`` on the same videos (16 CPU cores there,
   about 30 s) to compare the fp32 FVD of CUDA and CPU.
3. ``latency`` -- ``sfv-bench latency --shape paper --device cuda`` in bf16 and fp16, methods
   ``svd:25,sfv:1``, searching channels_last and eager CUDA graphs (off,on; precision-checked against
   fp32 eager), 10 repeats: median batch-1/2 UNet pass (and the eager one from the search), achieved
   TFLOP/s and the fraction of the dense peak, the FLOP floors, peak memory, one-step end to end,
   against the targets (one H200, bf16: batch-1 pass <= 80 ms, floor 57 ms; one-step video <= 250 ms).
4. ``train`` -- one sfv-train G+D step at 768x448, 14 frames, batch 1, bf16 autocast, gradient
   checkpointing (``benchmarks/bench_train.py``'s Trainer on random full-size weights): R1 exact and the
   lazy off-step (lazy R1 amortised = (exact + 15 x off-step) / 16), 1 warm-up + 2 timed steps, peak
   allocated / reserved memory, whether batch 1 fits an 80 GB H100; after an OOM it tries R1 approx,
   then none, and records every try. Then ``sfv-train --stack tiny --max-steps 1`` on the device
   (the command line's own path: accelerate, bf16 auto, checkpoint, export).
5. ``gate`` -- three ``sfv-bench latency`` runs at fixed options (bf16 eager, ``--methods sfv:1``):
   base, again, and again with the UNet deliberately slowed (every ``UNetRunner`` call runs the UNet
   twice: the runs stay comparable -- same GPU, torch, options, shape -- which a forced other dtype
   would not, ``regress`` refuses those); ``sfv-bench regress`` must pass base->again (no false alarm),
   fail base->slowed, and refuse the unlike bf16/fp16 pair of step 3.
6. ``compile`` -- with whatever budget is left: bf16 with ``torch.compile`` (inductor compiles the
   1.5 B-parameter UNet per input shape: minutes); kept as the bf16 result when faster and passing.
   Rerun alone with ``--steps compile --budget-s 400`` when it ran out of time.

``--quick`` (implied by ``--device cpu``): the same steps and code at the tiny shapes (``--shape tiny``,
tiny training step, n=4, fewer repeats), fp16 rows replaced by bf16 (run) / fp32 (latency) on a CPU,
where fp16 kernels are about 10x slower; a CPU dry run takes about 90 s on 2 cores.

Outputs (8 files at most, the device tool's limit): ``summary.json`` (every step's status, reason and
key figures), ``summary.md``, ``run.json``, ``latency-bf16.json`` and ``latency-fp16.json`` (whole
``latency.json`` results, ``sfv-bench regress`` reads them; ``latency.md`` is
``bench.latency.report.render_markdown(json)``), ``train.json``, ``gate.json``, ``log.txt``. Exit 0 when
every step is ok (compile may time out), 1 otherwise, 2 on bad arguments. The summary is printed last.
"""
from __future__ import annotations

import argparse
import contextlib
import gc
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HERE = Path(__file__).resolve().parent
for _p in (str(ROOT), str(HERE)):
    if _p not in sys.path:
        sys.path.insert(0, _p)

from gpu_latency import H200_BF16_TFLOPS, TARGET_ONESTEP_E2E_MS, TARGET_UNET_MS  # noqa: E402 (torch-free)

SCHEMA = "sfv-bench-device-check/1"
STEPS = ("env", "run", "latency", "train", "gate", "compile")
OPTIONAL = {"compile"}            # may time out without failing the check
# Dense (no 2:4 sparsity) bf16 tensor-core peaks in TFLOP/s. NVIDIA's datasheets print the sparse figure
# ("with sparsity"): H100 SXM5 1,979 -> 989.4 dense; H200 (SXM; the same GH100 chip class) 1,979 -> 989.4;
# H100 NVL / H200 NVL 1,671 -> 835.5; H100 PCIe 1,513 -> 756.5 (NVIDIA H100 / H200 Tensor Core GPU
# datasheets, 2023-2024); A100 312 dense (A100 datasheet). First match of the lower-cased name wins.
DENSE_BF16_PEAK_TFLOPS = (("nvl", 835.5), ("h100 pcie", 756.5), ("h200", 989.4), ("h100", 989.4),
                          ("a100", 312.0))
PEAK_SOURCE = "NVIDIA H100/H200 Tensor Core GPU datasheets: dense = half the 'with sparsity' bf16 figure"
H100_80GB_BYTES = 81559 * 2**20   # nvidia-smi's total on the lent H100 80GB HBM3 (KINDS.md)
CONTEXT_BYTES = 2**30             # CUDA context + allocator slack kept free when judging "fits"
FLOOR_NOTE = (f"H200 floor = UNet batch-1 FLOPs / {H200_BF16_TFLOPS:.0f} TFLOP/s (bf16 matmul measured on the "
              f"lent H200); this chip's floor = the same FLOPs / its own measured 8192^3 bf16 matmul rate")

# time boxes (s): cap per step, reserve kept for each later step; quick = tiny shapes
CAPS = {"full": {"env": 45, "run": 120, "latency": 150, "train": 150, "gate": 120, "compile": 10**6},
        "quick": {"env": 25, "run": 60, "latency": 45, "train": 40, "gate": 50, "compile": 6}}
RESERVE = {"full": {"env": 10, "run": 30, "latency": 60, "train": 45, "gate": 45, "compile": 0},
           "quick": {"env": 5, "run": 15, "latency": 10, "train": 10, "gate": 10, "compile": 0}}
MIN_START = {"full": 20, "quick": 5}
OUT_FILES = ("summary.json", "summary.md", "run.json", "latency-bf16.json", "latency-fp16.json", "train.json",
             "gate.json", "log.txt")
LOG_LIMIT = 12 * 2**20


# ----------------------------------------------------------------------------------------------- shared

def one_line(text, limit: int = 300) -> str:
    s = " ".join(str(text).split())
    return s if len(s) <= limit else s[:limit - 3] + "..."


def exc_line(e: BaseException) -> str:
    msg = str(e).strip().splitlines()
    return one_line(f"{type(e).__name__}: {msg[0] if msg else ''}".rstrip(": "))


def write_json(path: Path, data) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1, default=str) + "\n")
    os.replace(tmp, path)


def read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def peak_for(name: str | None):
    low = (name or "").lower()
    return next((v for k, v in DENSE_BF16_PEAK_TFLOPS if k in low), None)


def gib(b) -> str:
    return "—" if b is None else f"{b / 2**30:.1f} GiB"


def ms(v) -> str:
    return "—" if v is None else f"{v:.1f} ms" if v >= 10 else f"{v:.2f} ms"


# ----------------------------------------------------------------------------------------------- worker

class Tee(io.TextIOBase):
    """Writes through to ``stream`` and keeps the last lines (the reason of a failed command)."""

    def __init__(self, stream):
        self.stream, self.tail = stream, []

    def write(self, s):
        self.stream.write(s)
        for line in s.replace("\r", "\n").splitlines():
            if line.strip():
                self.tail = (self.tail + [line.strip()])[-40:]
        return len(s)

    def flush(self):
        self.stream.flush()


def call_cli(fn, argv: list) -> tuple[int, list]:
    """Run ``bench.cli.main`` / ``train_main`` in process (= ``python3 -m bench ...``): (rc, last lines)."""
    print(f"$ {'sfv-train' if fn.__name__ == 'train_main' else 'sfv-bench'} {' '.join(map(str, argv))}", flush=True)
    out, err = Tee(sys.stdout), Tee(sys.stderr)
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = fn([str(a) for a in argv])
        except SystemExit as e:
            rc = e.code if isinstance(e.code, int) else 2
    sys.stdout.flush()
    return int(rc or 0), err.tail or out.tail


def cli_reason(rc: int, tail: list) -> str:
    errs = [ln for ln in tail if "error" in ln.lower() or "Error" in ln]
    return one_line(f"exit {rc}: {(errs or tail or ['no output'])[-1]}")


class Worker:
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

    # ------------------------------------------------------------------------------------ steps

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
            for mod in ("diffusers", "transformers", "accelerate", "av", "pytorch_optimizer", "tabulate", "tqdm"):
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
                    "--no-previews", *argv_extra]
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
        methods = "sfv:1"
        _cache_flops()

        def one():
            out = self.work / "lat-bf16-compile"
            dtype = "bf16"
            rc, tail = self.sfv_bench(self.latency_argv(dtype, out, search=False, methods=methods, compile_="on"))
            js = out / "latency.json"
            if not js.is_file():
                return {"status": "failed", "reason": cli_reason(rc, tail), "rc": rc}
            shutil.copyfile(js, self.work / "latency-bf16-compile.json")
            res = {"rc": rc, **self.figures(json.loads(js.read_text()))}
            if rc != 0:
                res.update(status="failed", reason=cli_reason(rc, tail))
            return res
        self.sub("bf16-compile", 1, one)   # a time box too short shows as a timeout

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

        need = 5 if self.quick else 25
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
                                       f"(the lent H100 80GB); lazy R1 still takes an exact step every {k}"}

        def cli():
            from bench.cli import train_main
            from sfv_core.data.synthetic import make_synthetic
            data = make_synthetic(self.work / "train-data", seed=0, classes=2, groups=3, clips=1, frames=30)
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


# ----------------------------------------------------------------------------------------- orchestrator

def run_step(step: str, args, work: Path, timeout: float, logs: Path) -> dict:
    """One worker process with a time box; its record (partial on a timeout) plus status and reason."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", step, "--work", str(work),
           "--device", args.device, "--deadline", f"{time.time() + timeout - 3:.1f}"]
    if args.quick:
        cmd.append("--quick")
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p),
           "PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "HF_HUB_DISABLE_TELEMETRY": "1", "MPLBACKEND": "Agg", "TQDM_MININTERVAL": "5"}
    if args.device == "cpu":
        n = str(args.threads or 1)
        env.update(OMP_NUM_THREADS=n, MKL_NUM_THREADS=n)
    log = logs / f"{step}.log"
    t0 = time.time()
    with open(log, "w") as fh:
        p = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, cwd=ROOT, env=env, start_new_session=True)
        timed_out = False
        try:
            rc = p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            _kill_group(p)
            rc = p.returncode
    rec = read_json(work / f"{step}.json") or {"step": step, "subruns": {}}
    rec["seconds"], rec["timeout_s"], rec["worker_rc"] = round(time.time() - t0, 1), round(timeout), rc
    if timed_out:
        where = f" in {rec['current']}" if rec.get("current") else ""
        rec["status"] = "timeout"
        rec["reason"] = one_line(f"timed out after {timeout:.0f} s{where}; finished sub-runs are kept"
                                 + (f" ({rec['reason']})" if rec.get("reason") else ""))
    elif rc != 0 or "status" not in rec:
        rec["status"] = "failed"
        rec["reason"] = one_line(f"worker exit {rc}: {_last_line(log)}")
    return rec


def _kill_group(p: subprocess.Popen) -> None:
    for sig, wait in ((signal.SIGTERM, 5), (signal.SIGKILL, 5)):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(p.pid, sig)    # the group this worker leads (start_new_session): only what we started
        try:
            p.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def _last_line(path: Path) -> str:
    try:
        lines = [ln for ln in path.read_text(errors="replace").replace("\r", "\n").splitlines() if ln.strip()]
    except OSError:
        return "no log"
    return lines[-1] if lines else "no output"


def _clean_log(text: str) -> str:
    """Progress bars rewrite their line with '\\r': keep the last state of each line."""
    return "\n".join(ln.split("\r")[-1] for ln in text.split("\n"))


def build_summary(recs: dict, args, t_start: float, work: Path) -> dict:
    env = (recs.get("env") or {}).get("env") or read_json(work / "env.json") or {}
    steps = {}
    for s in STEPS:
        r = recs.get(s)
        if r is None:
            steps[s] = {"status": "skipped", "reason": "not selected (--steps)" if s not in args.steps
                        else "budget exhausted before this step"}
        else:
            steps[s] = {"status": r.get("status"), "reason": r.get("reason"), "seconds": r.get("seconds"),
                        "timeout_s": r.get("timeout_s")}
            if r.get("status") == "skipped":
                steps[s]["reason"] = r.get("reason")
    lat = recs.get("latency", {}).get("subruns", {})
    comp = recs.get("compile", {}).get("subruns", {}).get("bf16-compile", {})
    best_bf16 = "latency"
    if comp.get("status") == "ok" and comp.get("precision_passed") and lat.get("bf16", {}).get("unet_b1_ms") \
            and comp["unet_b1_ms"] < lat["bf16"]["unet_b1_ms"]:
        best_bf16 = "compile"
    run = recs.get("run", {})
    train = recs.get("train", {})
    gate = recs.get("gate", {})
    required_ok = all(steps[s]["status"] == "ok" for s in args.steps if s not in OPTIONAL)
    return {
        "schema": SCHEMA, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "argv": sys.argv[1:], "device": args.device, "mode": "quick (tiny shapes)" if args.quick else "full (paper shapes)",
        "budget_s": args.budget_s, "wall_s": round(time.time() - t_start, 1), "all_ok": required_ok,
        "gpu_measured": bool(env.get("gpu_name")) and not args.quick,
        "steps": steps,
        "env": {k: env.get(k) for k in ("gpu_name", "driver", "nvidia_smi", "capability", "sms", "total_bytes",
                                        "free_bytes", "torch", "cuda", "cudnn", "dense_bf16_peak_tflops", "peak_source",
                                        "matmul_bf16_tflops", "matmul_n", "cpu", "threads", "versions",
                                        "import_failures", "python")},
        "run": {"world": run.get("world"), "n": run.get("n"), "note": run.get("note"),
                "substituted": run.get("substituted"), "compare": run.get("compare"),
                "rows": {k: [{x: m.get(x) for x in ("spec", "fvd", "fvd_interval", "unet_calls", "unet_batch")}
                             | {"unet_s_per_video": (m.get("latency") or {}).get("median_s"),
                                "clock": (m.get("latency") or {}).get("clock")}
                             for m in v.get("methods", [])]
                         for k, v in run.get("subruns", {}).items() if v.get("methods")}},
        "latency": {k: {x: v.get(x) for x in ("status", "reason", "label", "precision_passed", "precision_rel_l2",
                                              "unet_b1_ms", "unet_b1_p10_ms", "unet_b1_p90_ms", "unet_b2_ms",
                                              "eager_b1_ms", "tflops_b1", "tflops_b2", "dense_bf16_peak_tflops",
                                              "fraction_of_peak_b1", "peak_mem_bytes", "peak_mem_max_bytes",
                                              "onestep_spec", "onestep_e2e_ms", "svd_spec", "svd_unet_loop_ms",
                                              "targets", "candidates", "shape")}
                    for k, v in {**lat, **({"bf16-compile": comp} if comp else {})}.items()}
        | {"substituted": recs.get("latency", {}).get("substituted"), "latency_bf16_json_from": best_bf16},
        "train": {k: train.get(k) for k in ("size", "shape", "tried", "fits_80gb", "lazy_r1_amortised_s", "r1_every")}
        | {"variants": {k: {x: v.get(x) for x in ("status", "reason", "step_s_median", "peak_allocated_bytes",
                                                   "peak_reserved_bytes", "peak_rss_bytes", "fits_80gb", "bf16")}
                        for k, v in train.get("subruns", {}).items()}},
        "gate": {k: {x: v.get(x) for x in ("status", "reason", "rc", "expected_rc", "what")}
                 for k, v in gate.get("subruns", {}).items()}
        | {"tolerance_pct": gate.get("tolerance_pct"), "how_slowed": gate.get("how_slowed"),
           "b1_ratio": gate.get("b1_ratio")},
    }


def summary_lines(s: dict) -> list[str]:
    env, steps = s["env"], s["steps"]
    dev = env.get("gpu_name") or (f"CPU {env.get('cpu')} ({env.get('threads')} thread(s))" if env.get("cpu") else
                                  f"{s['device']}: no device seen (env step {steps['env']['status']})")
    lines = [f"== device check summary: {dev}, {s['mode']}, {s['wall_s']:.0f} s of a {s['budget_s']:.0f} s budget; "
             f"{'all steps ok' if s['all_ok'] else 'NOT all ok'}"]

    def row(step, text):
        st = steps[step]
        why = "" if st["status"] == "ok" else f"  [{st['reason']}]"
        lines.append(f"{step:8s} {st['status']:8s} {text}{why}")

    peak = env.get("dense_bf16_peak_tflops")
    row("env", f"{dev}; driver {env.get('driver') or '—'}; torch {env.get('torch')}, CUDA {env.get('cuda') or '—'}; "
               f"free {gib(env.get('free_bytes'))}; dense bf16 peak {peak or '—'} TFLOP/s (datasheet); matmul "
               f"{(env.get('matmul_bf16_tflops') or 0):.3g} TFLOP/s measured ({env.get('matmul_n')}^3 bf16)")
    r = s["run"]
    parts = []
    for label, rows in r.get("rows", {}).items():
        one = next((m for m in rows if m["unet_calls"] == 1), rows[-1] if rows else None)
        if label == "fp16" and r.get("substituted"):
            label = "fp16(->bf16 on CPU)"
        if one:
            iv = one.get("fvd_interval") or [float("nan")] * 2
            parts.append(f"{label} {one['spec']} FVD {one['fvd']:.1f} [{iv[0]:.1f}, {iv[1]:.1f}], "
                         f"{one['unet_calls']}x b{one['unet_batch']}, UNet {1e3 * (one['unet_s_per_video'] or 0):.1f} ms/video")
    row("run", f"{r.get('world')} world n={r.get('n')}: " + ("; ".join(parts) or "no rows"))
    lat = s["latency"]
    parts = []
    for k in ("bf16", "fp16", "bf16-compile"):
        v = lat.get(k)
        if not v or v.get("unet_b1_ms") is None:
            continue
        frac = v.get("fraction_of_peak_b1")
        t = v.get("targets") or {}
        parts.append(f"{k}: {v['label']} UNet b1 {ms(v['unet_b1_ms'])} (eager {ms(v.get('eager_b1_ms'))}), b2 "
                     f"{ms(v['unet_b2_ms'])}, {v['tflops_b1']:.3g} TFLOP/s"
                     + (f" = {100 * frac:.0f}% of peak" if frac else "")
                     + (f", floor H200 {t['unet_b1_floor_h200_ms']:.0f} ms / this chip "
                        f"{ms(t.get('unet_b1_floor_this_chip_ms'))}" if t else "")
                     + f", one-step e2e {ms(v.get('onestep_e2e_ms'))}, peak {gib(v.get('peak_mem_max_bytes'))}"
                     + (f", precision {'pass' if v.get('precision_passed') else 'FAIL'}"))
    row("latency", " | ".join(parts) or "no result")
    if any((lat.get(k) or {}).get("targets") for k in ("bf16", "bf16-compile")):
        best = lat.get("bf16-compile") if lat.get("latency_bf16_json_from") == "compile" else lat.get("bf16")
        t = best["targets"]
        verdict = ("met" if t["unet_b1_met"] and t["onestep_e2e_met"] else "NOT met") if t["applies"] else \
            "not judged (stated for one H200)"
        lines.append(f"{'':17s} targets (one H200, bf16): UNet b1 <= {TARGET_UNET_MS:.0f} ms (floor "
                     f"{t['unet_b1_floor_h200_ms']:.0f} ms), one-step video <= {TARGET_ONESTEP_E2E_MS:.0f} ms: "
                     f"{verdict}; here {ms(best['unet_b1_ms'])} / {ms(best.get('onestep_e2e_ms'))}")
    tr = s["train"]
    parts = []
    for k, v in tr.get("variants", {}).items():
        if v.get("step_s_median") is not None:
            mem = v.get("peak_reserved_bytes") or v.get("peak_rss_bytes")
            parts.append(f"{k} {v['step_s_median']:.2f} s/step, peak {gib(mem)}")
        elif k.startswith("r1"):
            parts.append(f"{k} {v.get('status')}")
    if tr.get("lazy_r1_amortised_s"):
        parts.append(f"lazy R1 (1/{tr['r1_every']}) {tr['lazy_r1_amortised_s']:.2f} s/step")
    fits = tr.get("fits_80gb")
    if fits:
        parts.append(f"exact R1 fits 80 GB: {fits.get('exact_r1')}; fits: {', '.join(fits['what_fits']) or 'none tried'}")
    row("train", f"{tr.get('size')}: " + "; ".join(parts))
    g = s["gate"]
    parts = [f"{k} rc {v.get('rc')} (want {v.get('expected_rc')})" for k, v in g.items()
             if isinstance(v, dict) and k.startswith("regress") and v.get("rc") is not None]
    if g.get("b1_ratio"):
        parts.append("UNet b1 again/base {:.2f}, slowed/base {:.2f}".format(*g["b1_ratio"].values()))
    row("gate", f"tolerance {g.get('tolerance_pct')}%: " + ("; ".join(parts) or "no comparison"))
    c = lat.get("bf16-compile") or {}
    row("compile", f"{c.get('label')} UNet b1 {ms(c.get('unet_b1_ms'))}" if c.get("unet_b1_ms") else "no result")
    lines.append("No GPU figure in this summary: it ran on a CPU." if not env.get("gpu_name") else
                 ("Tiny shapes (--quick): a smoke run, not the paper's figures." if "quick" in s["mode"] else
                  "Commit: summary to results/gpu/, latency-<dtype>.json to results/latency/<gpu>-<dtype>/latency.json."))
    return lines


def summary_md(s: dict, lines: list[str]) -> str:
    md = ["# Device check", "", f"- Created {s['created']}, mode {s['mode']}, device {s['device']}, "
          f"{s['wall_s']:.0f} s of a {s['budget_s']:.0f} s budget", "",
          "| Step | Status | Seconds | Reason |", "|---|---|---:|---|"]
    for k, v in s["steps"].items():
        md.append(f"| {k} | {v['status']} | {v.get('seconds') or '—'} | {v.get('reason') or ''} |")
    md += ["", "```", *lines, "```", ""]
    lat = s["latency"]
    md += ["| Latency run | Options | UNet b1 | eager b1 | b2 | TFLOP/s b1 | % dense peak | one-step e2e | peak mem |"
           " precision |", "|---|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for k in ("bf16", "fp16", "bf16-compile"):
        v = lat.get(k)
        if v and v.get("unet_b1_ms") is not None:
            frac = v.get("fraction_of_peak_b1")
            md.append(f"| {k} | {v['label']} | {ms(v['unet_b1_ms'])} | {ms(v.get('eager_b1_ms'))} | "
                      f"{ms(v['unet_b2_ms'])} | {v['tflops_b1']:.3g} | {f'{100 * frac:.0f}%' if frac else '—'} | "
                      f"{ms(v.get('onestep_e2e_ms'))} | {gib(v.get('peak_mem_max_bytes'))} | "
                      f"{'pass' if v.get('precision_passed') else 'FAIL'} |")
    md += ["", f"Peak: {PEAK_SOURCE}. {FLOOR_NOTE}.", ""]
    return "\n".join(md)


def write_outputs(out: Path, recs: dict, summary: dict, work: Path, logs: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)

    def placeholder(step):
        st = summary["steps"].get(step, {})
        return {"missing": True, "status": st.get("status"), "reason": st.get("reason")}

    write_json(out / "run.json", recs.get("run") or placeholder("run"))
    write_json(out / "train.json", recs.get("train") or placeholder("train"))
    write_json(out / "gate.json", recs.get("gate") or placeholder("gate"))
    for label in ("bf16", "fp16"):
        src = work / ("latency-bf16-compile.json" if label == "bf16" and
                      summary["latency"]["latency_bf16_json_from"] == "compile" else f"latency-{label}.json")
        if src.is_file():
            shutil.copyfile(src, out / f"latency-{label}.json")
        else:
            sub = (recs.get("latency") or {}).get("subruns", {}).get(label)
            write_json(out / f"latency-{label}.json", {"missing": True, "reason": (sub or {}).get("reason")
                                                       or summary["steps"]["latency"].get("reason")})
    chunks = []
    for s in STEPS:
        p = logs / f"{s}.log"
        if p.is_file():
            text = _clean_log(p.read_text(errors="replace"))
            if len(text) > LOG_LIMIT // len(STEPS):
                text = "[... cut ...]\n" + text[-(LOG_LIMIT // len(STEPS)):]
            chunks.append(f"######## {s}\n{text}\n")
    (out / "log.txt").write_text("".join(chunks))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("out", nargs="?", help="output folder (at most 8 files are written)")
    p.add_argument("--device", default="auto", choices=("auto", "cuda", "cpu"),
                   help="auto: cuda when nvidia-smi lists a GPU; cpu implies --quick")
    p.add_argument("--quick", action="store_true", help="tiny shapes everywhere (a smoke run; the CPU dry run)")
    p.add_argument("--budget-s", type=float, default=None, help="total time box (default 400 full, 150 quick)")
    p.add_argument("--steps", default=",".join(STEPS), help="comma list of " + ", ".join(STEPS))
    p.add_argument("--work", default=None, help="scratch folder (default: a new temporary folder, removed)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: 1 with --device cpu)")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--deadline", type=float, default=0.0, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        return worker_main(args)
    if not args.out:
        p.error("OUT is required")
    if args.device == "auto":
        has_gpu = shutil.which("nvidia-smi") and subprocess.run(["nvidia-smi", "-L"], capture_output=True).returncode == 0
        args.device = "cuda" if has_gpu else "cpu"
    if args.device == "cpu" and not args.quick:
        print("device_check: --device cpu runs the tiny shapes (--quick): the paper shapes take hours on a CPU",
              flush=True)
        args.quick = True
    steps = [s.strip() for s in args.steps.split(",") if s.strip()]
    unknown = [s for s in steps if s not in STEPS]
    if unknown or not steps:
        p.error(f"--steps takes a comma list of {', '.join(STEPS)} (got {args.steps!r})")
    args.steps = [s for s in STEPS if s in steps]
    mode = "quick" if args.quick else "full"
    if args.budget_s is None:
        args.budget_s = 150.0 if args.quick else 400.0
    out = Path(args.out)
    extra = [f for f in (out.iterdir() if out.is_dir() else []) if f.name not in OUT_FILES]
    if extra:
        print(f"device_check: note: {out} holds other files ({', '.join(f.name for f in extra[:3])}); only 8 come "
              f"back from a device machine", flush=True)

    t_start = time.time()
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="devcheck-"))
    work.mkdir(parents=True, exist_ok=True)
    logs = work / "logs"
    logs.mkdir(exist_ok=True)
    recs: dict = {}
    try:
        for i, step in enumerate(args.steps):
            left = args.budget_s - (time.time() - t_start)
            later = sum(RESERVE[mode][s] for s in args.steps[i + 1:])
            timeout = min(CAPS[mode][step], left - later)
            if step in OPTIONAL:
                timeout = min(CAPS[mode][step], left)
            if timeout < (MIN_START[mode] if step not in OPTIONAL or mode == "full" else 1):
                recs[step] = {"step": step, "status": "skipped", "subruns": {},
                              "reason": f"budget exhausted: {max(left, 0):.0f} s left, {later} s kept for later steps"}
                print(f"[devcheck] {step}: skipped ({recs[step]['reason']})", flush=True)
                continue
            print(f"[devcheck] {step}: start (time box {timeout:.0f} s)", flush=True)
            recs[step] = run_step(step, args, work, timeout, logs)
            r = recs[step]
            print(f"[devcheck] {step}: {r['status']} in {r['seconds']:.0f} s"
                  + (f" -- {r['reason']}" if r.get("reason") else ""), flush=True)
        try:
            summary = build_summary(recs, args, t_start, work)
            lines = summary_lines(summary)
        except Exception as e:  # noqa: BLE001 - a summary bug must not lose the step records
            import traceback
            traceback.print_exc()
            summary = {"schema": SCHEMA, "all_ok": False, "summary_error": exc_line(e), "budget_s": args.budget_s,
                       "wall_s": round(time.time() - t_start, 1), "latency": {"latency_bf16_json_from": "latency"},
                       "steps": {s: {k: (recs.get(s) or {}).get(k) for k in ("status", "reason", "seconds")}
                                 for s in STEPS}}
            lines = ["== device check summary (the summary itself failed: " + exc_line(e) + ")"] + [
                f"{s:8s} {v['status']}  {v.get('reason') or ''}" for s, v in summary["steps"].items()]
        summary["summary_lines"] = lines
        write_outputs(out, recs, summary, work, logs)
        write_json(out / "summary.json", summary)
        (out / "summary.md").write_text(summary_md(summary, lines) if "env" in summary else "\n".join(lines) + "\n")
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)
    print("\n" + "\n".join(lines) + f"\nwrote {len(OUT_FILES)} files to {out}: {', '.join(OUT_FILES)}", flush=True)
    return 0 if summary["all_ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
