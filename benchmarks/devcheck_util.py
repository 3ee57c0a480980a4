"""Shared pieces of the device check (benchmarks/device_check.py): the sys.path setup, the constants (schema,
steps, output files, datasheet peaks, memory limits), the small torch-free helpers (one-line reasons, JSON
files, formatting) and the in-process call of the ``sfv-bench`` / ``sfv-train`` commands (``Tee``,
``call_cli``, ``cli_reason``)."""
from __future__ import annotations

import contextlib
import io
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HERE = Path(__file__).resolve().parent
for _p in (str(ROOT), str(HERE)):
    if _p not in sys.path:
        sys.path.insert(0, _p)

from gpu_latency import H200_BF16_TFLOPS  # noqa: E402 (torch-free)

SCHEMA = "sfv-bench-device-check/1"
STEPS = ("env", "run", "latency", "train", "gate", "compile")
DEFAULT_STEPS = ("env", "latency", "train", "gate", "compile")   # run: only asked for (it needs PyAV, not carried)
OPTIONAL = {"compile"}            # may time out without failing the check
# Time boxes (s) of the full GPU run: the default steps sum to 525 s, inside 10 of the 15 device minutes with
# the wheel install and the start-up; compile has its own box (bf16 first, then fp16). quick = tiny shapes.
BOXES = {"full": {"env": 25, "run": 120, "latency": 120, "train": 90, "gate": 90, "compile": 200},
         "quick": {"env": 25, "run": 60, "latency": 45, "train": 40, "gate": 50, "compile": 6}}
DEVICE_SECONDS = 600              # the 10 device minutes the default plan must fit
# Dense (no 2:4 sparsity) bf16 tensor-core peaks in TFLOP/s. NVIDIA's datasheets print the sparse figure
# ("with sparsity"): H100 SXM5 1,979 -> 989.4 dense; H200 (SXM; the same GH100 chip class) 1,979 -> 989.4;
# H100 NVL / H200 NVL 1,671 -> 835.5; H100 PCIe 1,513 -> 756.5 (NVIDIA H100 / H200 Tensor Core GPU
# datasheets, 2023-2024); A100 312 dense (A100 datasheet). First match of the lower-cased name wins.
DENSE_BF16_PEAK_TFLOPS = (("nvl", 835.5), ("h100 pcie", 756.5), ("h200", 989.4), ("h100", 989.4),
                          ("a100", 312.0))
PEAK_SOURCE = "NVIDIA H100/H200 Tensor Core GPU datasheets: dense = half the 'with sparsity' bf16 figure"
H100_80GB_BYTES = 81559 * 2**20   # nvidia-smi's total memory of an H100 80GB HBM3
CONTEXT_BYTES = 2**30             # CUDA context + allocator slack kept free when judging "fits"
FLOOR_NOTE = (f"H200 floor = UNet batch-1 FLOPs / {H200_BF16_TFLOPS:.0f} TFLOP/s (an 8192^3 bf16 matmul measured on "
              f"an H200); this chip's floor = the same FLOPs / its own measured 8192^3 bf16 matmul rate")

OUT_FILES = ("summary.json", "summary.md", "run.json", "latency-bf16.json", "latency-fp16.json", "train.json",
             "gate.json", "log.txt")
LOG_LIMIT = 12 * 2**20


# ----------------------------------------------------------------------------------------------- shared

def plan(steps=DEFAULT_STEPS) -> dict:
    """The full GPU run's plan: each step's box and their sum against the device seconds it must fit."""
    boxes = {s: BOXES["full"][s] for s in STEPS if s in steps}
    return {"steps": list(boxes), "boxes_s": boxes, "total_s": sum(boxes.values()), "must_fit_s": DEVICE_SECONDS,
            "fits": sum(boxes.values()) <= DEVICE_SECONDS, "compile_own_box_s": boxes.get("compile")}


def have_pyav() -> bool:
    """Whether PyAV imports: writing and reading video containers (the synthetic dataset's AVIs) needs it."""
    try:
        import av  # noqa: F401
    except ImportError:
        return False
    return True


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


# ------------------------------------------------------------------------------------ commands in process

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
