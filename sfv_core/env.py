"""Where and with what a number was produced: device and dtype choice, versions, git commit, machine.

torch is imported inside the functions, so importing this module stays cheap.
"""
from __future__ import annotations

import contextlib
import os
import platform
import subprocess
from pathlib import Path

from .errors import UserError

PROCESS_GROUP_TIMEOUT_S = 1800   # how long a process waits for the others in one collective (run and sfv-train)

_DTYPES = {"fp32": "float32", "float32": "float32", "float": "float32",
           "fp16": "float16", "float16": "float16", "half": "float16",
           "bf16": "bfloat16", "bfloat16": "bfloat16"}


def resolve_device(arg: str | None = None, what: str = "--device") -> str:
    """'cpu' | 'cuda[:N]' checked against this machine; None/'auto': cuda when available, else cpu."""
    import torch

    if arg in (None, "", "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    arg = str(arg)
    if not (arg == "cpu" or arg == "cuda" or (arg.startswith("cuda:") and arg[5:].isdigit())):
        raise UserError(f"{what} takes cpu, cuda or cuda:N (got {arg!r})")
    if arg.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"{what} {arg}: torch sees no CUDA device on this machine (use {what} cpu)")
    return arg


def dtype_name(dtype) -> str:
    """Canonical name ('float32', 'float16', 'bfloat16') of a dtype or an alias ('fp16', 'bf16', ...)."""
    if dtype is None:
        return "float32"
    key = str(dtype).lower().replace("torch.", "")
    if key not in _DTYPES:
        raise UserError(f"unknown dtype {dtype!r}; valid: float32 (fp32), float16 (fp16), bfloat16 (bf16)")
    return _DTYPES[key]


def resolve_dtype(dtype):
    """torch dtype of a dtype or a name ('fp32'/'float32', 'fp16'/'float16'/'half', 'bf16'/'bfloat16')."""
    import torch

    if isinstance(dtype, torch.dtype):
        return dtype
    return getattr(torch, dtype_name(dtype))


def git_commit(root: Path | None = None) -> str | None:
    """HEAD of the checkout holding this package, with '-dirty' when tracked files changed; None outside git."""
    root = Path(root) if root else Path(__file__).resolve().parent.parent
    try:
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=10)
        if out.returncode != 0:
            return None
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return out.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def versions() -> dict:
    import diffusers
    import torch
    import transformers
    from importlib.metadata import PackageNotFoundError, version

    try:
        own = version("sfv-bench")
    except PackageNotFoundError:
        own = None
    return {"python": platform.python_version(), "torch": torch.__version__, "diffusers": diffusers.__version__,
            "transformers": transformers.__version__, "sfv_bench": own, "cuda": torch.version.cuda}


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (OSError, AttributeError):
        return None


def gpu_driver() -> str | None:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=10)
        return out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else None
    except (OSError, subprocess.SubprocessError):
        return None


def device_name(device: str) -> str:
    """'NVIDIA H100 ...' for a CUDA device; 'CPU (<model>, N threads)' otherwise."""
    import torch

    if str(device).startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    return f"CPU ({cpu_name()}, {torch.get_num_threads()} threads)"


def environment(device) -> dict:
    """The machine record written with every latency: device, driver, versions, CPU, threads, load, flags."""
    import torch

    cuda = str(device).startswith("cuda")
    v = versions()
    return {
        "device": str(device),
        "gpu_name": torch.cuda.get_device_name(torch.device(device)) if cuda else None,
        "driver": gpu_driver() if cuda else None,
        "torch": v["torch"], "cuda": v["cuda"], "cudnn": torch.backends.cudnn.version() if cuda else None,
        "diffusers": v["diffusers"], "transformers": v["transformers"], "python": v["python"],
        "cpu": cpu_name(), "threads": torch.get_num_threads(), "load_average": load_average(),
        "tf32": {"matmul": torch.backends.cuda.matmul.allow_tf32, "cudnn": torch.backends.cudnn.allow_tf32},
        "cudnn_benchmark": torch.backends.cudnn.benchmark,
        "clock": "cuda-events" if cuda else "torch.utils.benchmark.Timer.timeit",
    }


@contextlib.contextmanager
def tf32_disabled():
    """Full-precision float32 matmuls/convolutions on CUDA inside the block; previous flags restored."""
    import torch

    old = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


def keep_freed_memory(mmap_mb: int = 256, trim_mb: int = 1024) -> bool:
    """glibc: serve blocks up to ``mmap_mb`` from the heap and return freed heap to the OS only past
    ``trim_mb`` (mallopt M_MMAP_THRESHOLD, M_TRIM_THRESHOLD). By default every activation over the
    dynamic threshold is a fresh mmap whose pages fault in and are zeroed on each use: 12 of 67 s of a
    1-thread VAE decode / UNet loop on the mini world were kernel time, 1.4 s with this (55 s in all).
    Results do not change (where a tensor lives is not what it holds). Older glibc caps the mmap
    threshold at 32 MiB: then that. False where there is no glibc or it refuses both."""
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    try:
        mallopt = ctypes.CDLL(name).mallopt if name else None
    except (OSError, AttributeError):
        return False
    if mallopt is None:
        return False
    mmap_ok = bool(mallopt(-3, mmap_mb << 20)) or bool(mallopt(-3, 32 << 20))     # M_MMAP_THRESHOLD
    trim_ok = bool(mallopt(-1, trim_mb << 20))                                     # M_TRIM_THRESHOLD
    return mmap_ok or trim_ok
