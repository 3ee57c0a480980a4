#!/usr/bin/env python3
"""One-file bootstrap: `python3 dev.py run [ARGS]` and `python3 dev.py test [ARGS]`.

Both create `.venv` (once), install torch and this package into it (again only when
pyproject.toml, constraints.txt or this file changed), then run the main job or the test suite.
`run` installs only what `sfv-bench run` imports; `test` (and `setup`) add the `test` and `train`
extras (pytest, scipy, tensorboard, pytorch-optimizer), so `sfv-train` and the tests work.
Only the standard library is used here, so a machine with Python 3.10+ is enough.

Versions: the package is installed with `-c constraints.txt`, the exact versions of a venv the
suite passed in (`pip freeze`), so a fresh clone resolves the same packages as everyone else.
torch is not in it (installed first, below; the CPU and CUDA builds differ). To refresh it
(newer versions within pyproject.toml's ranges): delete constraints.txt and .venv, run
`python3 dev.py setup` (without the file, pip takes the newest versions), run the tests, then
`python3 dev.py lock`, which writes constraints.txt from .venv's `pip freeze` (torch and its
CUDA companions left out), and commit it.

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
LOCK = ROOT / "constraints.txt"
FULL = ("test", "train")       # the extras `dev.py test` and `dev.py setup` install; `dev.py run` needs none


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
    for name in ("pyproject.toml", "dev.py", LOCK.name):
        h.update((ROOT / name).read_bytes() if (ROOT / name).is_file() else b"-")
    return h.hexdigest()


def _installed_extras() -> set | None:
    """The extras the stamp says are installed, or None when the stamp is absent or stale."""
    if not STAMP.exists():
        return None
    digest, _, extras = STAMP.read_text().partition(" ")
    return set(extras.split(",")) - {""} if digest == _stamp_value() else None


def setup(extras=FULL) -> None:
    if sys.version_info < (3, 10):
        sys.exit("sfv-bench needs Python 3.10 or newer (found %d.%d)" % sys.version_info[:2])
    if not _py().exists():
        print(f"creating virtual environment {VENV}", flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)
    have = _installed_extras()
    if have is not None and have >= set(extras):
        return
    extras = sorted(set(extras) | (have or set()))
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
    target = f"{ROOT}[{','.join(extras)}]" if extras else str(ROOT)
    _run(pip + (["-c", LOCK] if LOCK.is_file() else []) + ["-e", target])
    STAMP.write_text(f"{_stamp_value()} {','.join(extras)}")


def lock() -> None:
    """constraints.txt from .venv's `pip freeze`: every package but this one, torch and torch's own."""
    if not _py().exists():
        sys.exit(f"error: no virtual environment at {VENV}: run `python3 dev.py setup` first")
    if not (_installed_extras() or set()) >= set(FULL):
        sys.exit(f"error: {VENV} lacks the test/train extras or is out of date: run `python3 dev.py setup` first")
    frozen = subprocess.run([str(_py()), "-m", "pip", "freeze", "--exclude-editable", "--disable-pip-version-check"],
                            capture_output=True, text=True, check=True).stdout.splitlines()
    where = subprocess.run([str(_py()), "-c", "import platform; print(platform.python_version(), platform.system(), "
                            "platform.machine())"], capture_output=True, text=True, check=True).stdout.strip()
    keep = []
    for line in frozen:
        name = line.split("==")[0].strip().lower().replace("_", "-")
        if "==" not in line or line.startswith(("#", "-")) or " @ " in line:
            continue                                  # editable, URL or local-path installs: not pinnable
        if name in ("torch", "triton") or name.startswith("nvidia-"):
            continue                                  # dev.py installs torch itself (CPU or CUDA build)
        keep.append(line.strip())
    LOCK.write_text(f"# Exact versions for `pip install -c constraints.txt` (dev.py setup): pip freeze of a venv\n"
                    f"# that passed the suite ({where}). torch is left out: dev.py installs torch=={TORCH_VERSION}\n"
                    f"# itself. Refresh: see dev.py's docstring (`python3 dev.py lock` writes this file).\n"
                    + "".join(line + "\n" for line in keep))
    print(f"wrote {LOCK} ({len(keep)} packages)")


def main(argv: list) -> int:
    if not argv or argv[0] not in ("setup", "run", "test", "lock"):
        print(__doc__)
        print("usage: python3 dev.py {setup|run|test|lock} [ARGS...]")
        return 2
    if argv[0] == "lock":
        lock()
        return 0
    setup(() if argv[0] == "run" else FULL)
    env = dict(os.environ)
    env.setdefault("SFV_BENCH_CACHE", str(ROOT / ".cache"))
    if argv[0] == "run":
        return subprocess.run([str(_bin("sfv-bench")), "run", *argv[1:]], cwd=ROOT, env=env).returncode
    if argv[0] == "test":
        return subprocess.run([str(_py()), "-m", "pytest", *argv[1:]], cwd=ROOT, env=env).returncode
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
