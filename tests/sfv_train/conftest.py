"""A small trained sfv-train run (tiny stack, 2 steps, checkpoints at 1 and 2), made once per session
through a --config file; tests copy it (``run_copy``) before changing anything."""
from __future__ import annotations

import shutil

import pytest

from bench.cli import train_main


@pytest.fixture(scope="session")
def train_data(tmp_path_factory):
    """2 classes x 3 groups x 1 clip, 30 frames: fold 1 trains on 4 videos."""
    from sfv_core.data.synthetic import make_synthetic
    return make_synthetic(tmp_path_factory.mktemp("train-data"), seed=0, classes=2, groups=3, clips=1, frames=30)


@pytest.fixture(scope="session")
def trained_run(train_data, tmp_path_factory):
    """train_runs.TINY's options from a TOML file (max-steps 5 there, 2 on the command line: flags win)."""
    root = tmp_path_factory.mktemp("trained")
    config = root / "train.toml"
    config.write_text(f'data = "{train_data}"\nstack = "tiny"\nwidth = 64\nheight = 64\nnum-frames = 6\n'
                      'grad_accum = 1\nreport-to = "none"\nprogress = false\noptimizer = "adamw"\nr1 = "none"\n'
                      'checkpoint-every = 1\nlog-every = 1\nmax-steps = 5\n')
    out = root / "run"
    assert train_main(["--config", str(config), "--out", str(out), "--max-steps", "2"]) == 0
    return out


@pytest.fixture
def run_copy(trained_run, tmp_path):
    dst = tmp_path / "run"
    shutil.copytree(trained_run, dst)
    return dst
