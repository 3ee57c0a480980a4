#!/usr/bin/env python3
"""One-file bootstrap: `python3 dev.py run [ARGS]` and `python3 dev.py test [ARGS]`.

Both create `.venv` (once), install torch and this package into it (again only when
pyproject.toml or this file changed), then run the main job or the test suite.
Only the standard library is used here, so a machine with Python 3.10+ is enough.

torch: on a machine without an NVIDIA GPU we ask pip for the CPU build
(`torch==2.13.0+cpu`), so no CUDA wheels are ever downloaded there. Where pip cannot
find that build, set SFV_TORCH_INDEX to a PyTorch CPU wheel index, or install torch
into .venv yourself: a torch that already imports is kept.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = Path(os.environ.get("SFV_VENV", ROOT / ".venv"))
TORCH_VERSION = "2.13.0"
STAMP = VENV / ".sfv-bench-installed"


def _py() -> Path:
    return VENV / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def _bin(name: str) -> Path:
    return VENV / ("Scripts" if os.name == "nt" else "bin") / name


def _run(cmd: list, **kw) -> None:
    print("+", " ".join(str(c) for c in cmd), flush=True)
    subprocess.run([str(c) for c in cmd], check=True, **kw)


def _has_gpu() -> bool:
    return shutil.which("nvidia-smi") is not None and subprocess.run(
        ["nvidia-smi", "-L"], capture_output=True).returncode == 0


def _torch_ok() -> bool:
    return subprocess.run([str(_py()), "-c", "import torch"], capture_output=True).returncode == 0


def _stamp_value() -> str:
    h = hashlib.sha256()
    for name in ("pyproject.toml", "dev.py"):
        h.update((ROOT / name).read_bytes())
    return h.hexdigest()


def setup() -> None:
    if sys.version_info < (3, 10):
        sys.exit("sfv-bench needs Python 3.10 or newer (found %d.%d)" % sys.version_info[:2])
    if not _py().exists():
        print(f"creating virtual environment {VENV}", flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)
    if STAMP.exists() and STAMP.read_text() == _stamp_value():
        return
    pip = [_py(), "-m", "pip", "install", "--disable-pip-version-check"]
    if not _torch_ok():
        if _has_gpu():
            spec, extra = f"torch=={TORCH_VERSION}", []
        else:
            spec = f"torch=={TORCH_VERSION}+cpu"
            index = os.environ.get("SFV_TORCH_INDEX")
            extra = ["--extra-index-url", index] if index else []
        try:
            _run(pip + extra + [spec])
        except subprocess.CalledProcessError:
            sys.exit(f"error: could not install {spec}; set SFV_TORCH_INDEX to a PyTorch wheel index "
                     f"(CPU builds: the PyTorch 'whl/cpu' index) or install torch into {VENV} yourself")
    _run(pip + ["-e", f"{ROOT}[test,train]"])
    STAMP.write_text(_stamp_value())


def main(argv: list) -> int:
    if not argv or argv[0] not in ("setup", "run", "test"):
        print(__doc__)
        print("usage: python3 dev.py {setup|run|test} [ARGS...]")
        return 2
    setup()
    env = dict(os.environ)
    env.setdefault("SFV_BENCH_CACHE", str(ROOT / ".cache"))
    if argv[0] == "run":
        return subprocess.run([str(_bin("sfv-bench")), "run", *argv[1:]], cwd=ROOT, env=env).returncode
    if argv[0] == "test":
        return subprocess.run([str(_py()), "-m", "pytest", *argv[1:]], cwd=ROOT, env=env).returncode
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
