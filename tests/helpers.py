"""Helpers shared by the tests (not part of the package)."""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import torch

from methods.models.configs import TINY_CONFIGS

TINY_UNET_CONFIG = TINY_CONFIGS["unet"]


def tiny_unet(seed: int = 0):
    """The tiny SVD UNet (random init, seeded)."""
    from diffusers import UNetSpatioTemporalConditionModel

    torch.manual_seed(seed)
    return UNetSpatioTemporalConditionModel(**TINY_UNET_CONFIG)


class BackgroundJob:
    """One long subprocess a test module starts at collection (conftest calls the module's
    ``start_background``) so it overlaps the suite on the core the one-thread tests leave idle: nice 10,
    one thread, stdout and stderr to ``root/stdout.txt`` and ``root/stderr.txt``; ``wait`` gives them to
    the test, ``stop`` (the session's end) kills it if still going and removes ``root``."""

    def __init__(self):
        self.proc = None

    def start(self, cmd: list, prefix: str, env: dict | None = None) -> "BackgroundJob":
        if self.proc is None:
            self.root = Path(tempfile.mkdtemp(prefix=prefix))
            self.cmd = [str(c).replace("{root}", str(self.root)) for c in cmd]
            self.logs = [open(self.root / "stdout.txt", "w"), open(self.root / "stderr.txt", "w")]
            env = {**os.environ, **(env or {}), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
            env = {k: str(v).replace("{root}", str(self.root)) for k, v in env.items()}
            self.proc = subprocess.Popen(self.cmd, cwd=Path(__file__).resolve().parents[1], env=env, text=True,
                                         stdout=self.logs[0], stderr=self.logs[1], preexec_fn=lambda: os.nice(10))
        return self

    def wait(self, timeout: float = 600):
        """``subprocess.CompletedProcess`` once it has ended (killed after ``timeout`` s)."""
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for f in self.logs:
            f.flush()
        return subprocess.CompletedProcess(self.cmd, self.proc.returncode, (self.root / "stdout.txt").read_text(),
                                           (self.root / "stderr.txt").read_text())

    def stop(self) -> None:
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            for f in self.logs:
                f.close()
            shutil.rmtree(self.root, ignore_errors=True)
            self.proc = None
