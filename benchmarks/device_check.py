"""The one-shot GPU check: environment, paper-shape latency (eager and compiled), the full-size training step
and the latency regression gate, each guarded and time-boxed, results in 8 files under OUT.

    python3 benchmarks/device_check.py OUT [--device auto|cuda|cpu] [--quick] [--budget-s N] [--box-scale F]
                                           [--hang-box S] [--steps env,latency,train,gate,compile] [--work DIR]

On a GPU machine where the repository is not pip-installed (torch, transformers, accelerate, huggingface_hub,
safetensors, tabulate, tqdm, matplotlib, tensorboard installed; diffusers and pytorch_optimizer not), with the
two wheels in ``.whl/`` carried beside the working tree::

    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
        .whl/*.whl && export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 && python3 benchmarks/device_check.py $OUT

(``bash benchmarks/device_check.sh $OUT`` is the same line; give the command 590 s.) The wheels, made once
on a machine with pip access, in the repository root (``/.whl/`` git-ignored; versions = this project's)::

    echo /.whl/ >> .git/info/exclude
    P="--no-deps --only-binary=:all: --python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64
       --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl"
    python3 -m pip download $P diffusers==0.42.1          # 6.4 MB (its other needs are installed there)
    python3 -m pip download $P pytorch_optimizer==4.1.0   # 0.4 MB (SM3 of the training step)

The payload -- the working tree the machine receives plus the wheels -- must stay within 40 MiB:
``python3 benchmarks/devcheck_payload.py`` prints it (and exits 1 when over). PyAV (35.8 MB) is not carried:
no default step reads or writes a video container (``sfv_core.data.videoio`` imports it only then; the
training step's data are ``.npz`` arrays).

How it runs: this process imports no torch. Each step runs in a child process
(``device_check.py --worker STEP``; killed with its process group at its time box), which calls the
commands in process exactly as ``python3 -m bench ...`` / ``sfv-train`` would (``bench.cli.main``,
``bench.cli.train_main``) and writes its record after every sub-run, so a hang, an OOM or a crash costs
one step, never the summary. Steps and their time boxes on a GPU (``devcheck_util.BOXES``; the default
steps sum to 525 s, the budget; every step keeps its whole box because each later step's box is reserved):

1. ``env`` (25 s) -- GPU name, driver, memory, torch / CUDA / cuDNN / triton and package versions, free
   memory, a measured 8192^3 bf16 matmul rate and the chip's dense bf16 peak from its datasheet.
2. ``latency`` (120 s) -- ``sfv-bench latency --shape paper`` (full-size random weights, latent
   14x4x72x128) in bf16 and fp16, methods ``svd:25,sfv:1``, eager with channels_last and CUDA graphs
   searched under the precision check (against fp32 eager): median batch-1 / batch-2 UNet pass (and the
   plain eager one from the search), achieved TFLOP/s and the fraction of the dense peak, VAE decode of 14
   frames, one-step end to end, peak memory, beside the targets (one H200, bf16: batch-1 pass <= 80 ms,
   FLOP floor 57 ms; one-step video <= 250 ms).
3. ``train`` (90 s) -- one sfv-train G+D step at 768x448, 14 frames, batch 1, bf16 autocast, gradient
   checkpointing (``benchmarks/bench_train.py``'s Trainer on random full-size weights): exact R1 and the
   lazy off-step (lazy R1 amortised = (exact + 15 x off-step) / 16), 1 warm-up + 2 timed steps, peak
   allocated / reserved memory, whether batch 1 fits an 80 GB H100; after an OOM it tries R1 approx. Then
   ``sfv-train --stack tiny --max-steps 1`` on the device on a few ``.npz`` clips (the command line's own
   path: accelerate, bf16 auto, checkpoint, export).
4. ``gate`` (90 s) -- three ``sfv-bench latency`` runs at fixed options (bf16 eager, ``--methods sfv:1``):
   base, again, and again with the UNet deliberately slowed (every ``UNetRunner`` call runs the UNet
   twice); ``sfv-bench regress`` must pass base->again, fail base->slowed, and refuse the unlike bf16/fp16
   pair of step 2.
5. ``compile`` (200 s, its own box; may time out without failing the check) -- the same latency run with
   ``torch.compile`` in bf16, then fp16 (``--methods sfv:1``): the UNet is compiled once per input shape
   (batch 1 and 2; the precision check's runner is the one timed), so the compiled batch-1 / batch-2
   passes and the one-step end to end sit beside the eager ones. A dtype whose compile does not finish in
   the box is recorded as such; rerun alone with ``--steps compile --budget-s 500``.

``run`` (asked for by name, 120 s): ``sfv-bench run --world mini|tiny --device cuda -n 16`` at float32 and
float16, plus one CPU row, comparing FVDs: it writes and reads the synthetic dataset's AVI files, so it needs
PyAV, which the default payload leaves behind (its sub-runs are skipped, with that reason, without it). It
is also the only step that uses the mini world's weights (methods/models/mini/, part of the working tree).

``--quick`` (implied by ``--device cpu``): the same steps and code at the tiny shapes (``--shape tiny``,
tiny training step, n=4, fewer repeats), fp16 rows replaced by bf16 (run) / fp32 (latency) on a CPU,
where fp16 kernels are about 10x slower. ``--hang-box S`` (the test suite's dry run, on a loaded machine):
every required step's time box is S seconds, so only a hang is cut; compile keeps its box. Every summary
carries the plan of the full GPU run (boxes of the default steps, their sum against the 600 s it must fit).

Outputs (8 files at most, what such a machine sends back): ``summary.json`` (every step's status, reason
and key figures, the plan), ``summary.md``, ``run.json``, ``latency-bf16.json`` and ``latency-fp16.json``
(whole ``latency.json`` results of the faster passing run of each dtype, eager or compiled; ``sfv-bench
regress`` reads them; ``latency.md`` is ``bench.latency.report.render_markdown(json)``), ``train.json``,
``gate.json``, ``log.txt``. Exit 0 when every required step is ok, 1 otherwise, 2 on bad arguments. The
summary is printed last.

Code: this file is the entry point and the orchestrator (``main``, ``run_step``); ``devcheck_util.py``
holds the constants (steps, boxes) and small helpers, ``devcheck_worker.py`` (``WorkerBase``) and
``devcheck_steps.py`` (``Worker``, ``worker_main``) the worker process and its steps, ``devcheck_report.py``
the summary and the files under OUT, ``devcheck_payload.py`` the payload size.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# devcheck_util (imported first by every devcheck_* module) puts the repository root and benchmarks/ on
# sys.path. Names this file does not use are re-exported for tests/e2e/test_device_check.py (SCHEMA, STEPS,
# OUT_FILES, Worker, peak_for, build_summary, ...).
from devcheck_util import (BOXES, CONTEXT_BYTES, DEFAULT_STEPS, DENSE_BF16_PEAK_TFLOPS,  # noqa: F401
                           DEVICE_SECONDS, FLOOR_NOTE, H100_80GB_BYTES, HERE, LOG_LIMIT, OPTIONAL, OUT_FILES,
                           PEAK_SOURCE, ROOT, SCHEMA, STEPS, Tee, call_cli, cli_reason, exc_line, gib, ms, one_line,
                           peak_for, plan, read_json, write_json)
from devcheck_worker import WorkerBase, _cache_flops, _label  # noqa: F401
from devcheck_steps import Worker, worker_main  # noqa: F401
from devcheck_report import _clean_log, build_summary, summary_lines, summary_md, write_outputs  # noqa: F401

MIN_START = {"full": 20, "quick": 5}


def step_box(step: str, mode: str, args) -> float:
    """A step's time box: its ``BOXES`` entry x --box-scale, or --hang-box for a required step."""
    if args.hang_box and step not in OPTIONAL:
        return args.hang_box
    return BOXES[mode][step] * args.box_scale



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


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("out", nargs="?", help="output folder (at most 8 files are written)")
    p.add_argument("--device", default="auto", choices=("auto", "cuda", "cpu"),
                   help="auto: cuda when nvidia-smi lists a GPU; cpu implies --quick")
    p.add_argument("--quick", action="store_true", help="tiny shapes everywhere (a smoke run; the CPU dry run)")
    p.add_argument("--budget-s", type=float, default=None,
                   help="total time box (default: the sum of the chosen steps' boxes, 525 s for the default steps)")
    p.add_argument("--box-scale", type=float, default=1.0,
                   help="every step's time box and the default budget x this (a CPU dry run beside other work)")
    p.add_argument("--hang-box", type=float, default=0.0, metavar="S",
                   help="every required step's time box is S s: only a hang is cut (a test's dry run)")
    p.add_argument("--steps", default=",".join(DEFAULT_STEPS),
                   help=f"comma list of {', '.join(STEPS)} (default {','.join(DEFAULT_STEPS)})")
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
    if not args.box_scale > 0 or args.hang_box < 0:
        p.error(f"--box-scale must be > 0 and --hang-box >= 0 (got {args.box_scale}, {args.hang_box})")
    if args.budget_s is None:
        args.budget_s = float(sum(step_box(s, mode, args) for s in args.steps))
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
            later = sum(step_box(s, mode, args) for s in args.steps[i + 1:])
            timeout = min(step_box(step, mode, args), left - later)
            if timeout < (MIN_START[mode] if step not in OPTIONAL or mode == "full" else 1):
                recs[step] = {"step": step, "status": "skipped", "subruns": {}, "reason":
                              f"budget exhausted: {max(left, 0):.0f} s left, {later:.0f} s kept for later steps"}
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
                       "wall_s": round(time.time() - t_start, 1), "plan": plan(),
                       "latency": {"latency_bf16_json_from": "latency", "latency_fp16_json_from": "latency"},
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
