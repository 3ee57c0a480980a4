"""sfv-train with 2 processes (torchrun's variables, gloo on CPU, as `sfv-bench run --procs 2` starts
them): a resume with 2 processes continues exactly (the checkpoint of step 2 equals the uninterrupted
run's); a resume with 1 process is refused in one line before anything is built.

The two launches (~40 s of process start-up and tiny steps) run in the background from the session's
start (conftest: ``start_background``), with their own cache and dataset."""
from __future__ import annotations

import sys

import pytest
import torch
from safetensors.torch import load_file

from bench.cli import train_main
from helpers import BackgroundJob
from train_runs import TINY

# A: 2 processes, steps 0-2 (checkpoints 1 and 2); B: a copy of A without step 2, resumed by 2 processes
RUNS = """import shutil, sys
from pathlib import Path
from bench.dist import torchrun
from sfv_core.data.synthetic import make_synthetic
root = Path(sys.argv[1])
data = make_synthetic(root / "data", seed=0, classes=2, groups=3, clips=1, frames=30)
entry = [sys.executable, "-c", "import sys; from bench.cli import train_main; sys.exit(train_main(sys.argv[1:]))"]
if torchrun(2, [*entry, "--data", str(data), "--out", str(root / "a"), "--max-steps", "2", *sys.argv[2:]], 1):
    sys.exit("the 2-process run failed")
shutil.copytree(root / "a", root / "b")
shutil.rmtree(root / "b" / "checkpoints" / "step-000002")
if torchrun(2, [*entry, "--resume", str(root / "b"), "--max-steps", "2"], 1):
    sys.exit("the 2-process resume failed")
"""
JOB = BackgroundJob()


def start_background() -> None:
    JOB.start([sys.executable, "-c", RUNS, "{root}", *TINY], "sfv-train-procs-",
              env={"SFV_BENCH_CACHE": "{root}/cache"})


def stop_background() -> None:
    JOB.stop()


@pytest.fixture(scope="module")
def runs():
    start_background()
    p = JOB.wait(600)
    assert p.returncode == 0, (p.stdout + p.stderr)[-3000:]
    return JOB.root / "a", JOB.root / "b"


@pytest.mark.slow
def test_two_process_resume_equals_the_uninterrupted_run(runs):
    a, b = runs
    for name in ("generator", "ema", "heads"):
        ta = load_file(str(a / "checkpoints" / "step-000002" / f"{name}.safetensors"))
        tb = load_file(str(b / "checkpoints" / "step-000002" / f"{name}.safetensors"))
        assert ta.keys() == tb.keys() and all(torch.equal(ta[k], tb[k]) for k in ta), name
    assert torch.load(b / "checkpoints" / "step-000002" / "optimizer_g.pt", weights_only=True)["state"]


@pytest.mark.slow
def test_resume_with_another_process_count_is_refused_in_one_line(runs, capsys, monkeypatch):
    a = runs[0]
    monkeypatch.setenv("SFV_BENCH_CACHE", str(JOB.root / "cache"))
    before = sorted(p.name for p in (a / "checkpoints").iterdir())
    assert train_main(["--resume", str(a), "--max-steps", "3"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "written by 2 process(es), this run has 1: launch with 2" in err[0], err
    assert sorted(p.name for p in (a / "checkpoints").iterdir()) == before
