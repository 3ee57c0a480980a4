"""`sfv-train --resume OUT` continues a run from its config.json alone and equals an uninterrupted run;
a damaged latest checkpoint falls back to the older one; what a kill leaves is cleaned up."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from bench.cli import train_main
from train_runs import TINY, damage_checkpoints


def _same_tensors(a: Path, b: Path):
    ta, tb = load_file(str(a)), load_file(str(b))
    assert ta.keys() == tb.keys()
    for k in ta:
        assert torch.equal(ta[k], tb[k]), k


def _steps(run: Path) -> list[int]:
    return [json.loads(line)["step"] for line in (run / "logs" / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_resume_run_folder_with_only_max_steps_equals_uninterrupted(run_copy, train_data, tmp_path, capsys):
    straight = tmp_path / "straight"
    assert train_main(["--data", str(train_data), *TINY, "--out", str(straight), "--max-steps", "4"]) == 0
    # what a kill leaves: an unfinished checkpoint, an export copy, metrics logged past the last checkpoint
    (run_copy / "checkpoints" / ".tmp-step-000003").mkdir()
    (run_copy / ".export-tmp").mkdir()
    with open(run_copy / "logs" / "metrics.jsonl", "a") as f:
        f.write('{"step": 3, "g_loss": 1.0}\n{"step": 4, "g_lo')
    capsys.readouterr()
    assert train_main(["--resume", str(run_copy), "--max-steps", "4"]) == 0
    out = capsys.readouterr().out
    assert "removed what an interrupted run left: checkpoints/.tmp-step-000003, .export-tmp" in out
    assert "dropped 2 line(s) past step 2" in out and "resumed from" in out
    assert not (run_copy / "checkpoints" / ".tmp-step-000003").exists() and not (run_copy / ".export-tmp").exists()
    for name in ("generator", "ema", "heads"):
        _same_tensors(straight / "checkpoints" / "step-000004" / f"{name}.safetensors",
                      run_copy / "checkpoints" / "step-000004" / f"{name}.safetensors")
    _same_tensors(straight / "export" / "unet" / "diffusion_pytorch_model.safetensors",
                  run_copy / "export" / "unet" / "diffusion_pytorch_model.safetensors")
    assert _steps(run_copy) == [1, 2, 3, 4]
    cfg = json.loads((run_copy / "config.json").read_text())
    assert cfg["max_steps"] == 4 and cfg["out"] == str(run_copy) and cfg["data"] == str(train_data)


@pytest.mark.slow
def test_damaged_latest_checkpoint_resumes_from_the_older(run_copy, trained_run, capsys):
    """step-000002's optimiser is truncated: the run continues from step-000001 and rewrites step 2
    exactly as the uninterrupted run did."""
    damage_checkpoints(run_copy, "optimizer", [2])
    capsys.readouterr()
    assert train_main(["--resume", "--out", str(run_copy)]) == 0
    out, err = capsys.readouterr()
    line = [s for s in err.splitlines() if s.startswith("warning:")]
    assert len(line) == 1 and "step-000002 is damaged (optimizer_g.pt" in line[0], err
    assert "resumed from" in out and "step-000001 (step 1)" in out
    for name in ("generator", "ema", "heads"):
        _same_tensors(trained_run / "checkpoints" / "step-000002" / f"{name}.safetensors",
                      run_copy / "checkpoints" / "step-000002" / f"{name}.safetensors")
    assert _steps(run_copy) == [1, 2]


def test_a_second_sfv_train_into_a_held_run_folder_is_refused_naming_the_lock(train_data, tmp_path, capsys):
    """Two sfv-train processes never write one --out: the second is refused in one line, the folder untouched."""
    from sfv_core.fsutil import folder_lock

    out = tmp_path / "run"
    out.mkdir()
    with folder_lock(out, "sfv-train"):
        rc = train_main(["--data", str(train_data), "--out", str(out), "--max-steps", "2", *TINY])
    err = capsys.readouterr().err
    assert rc == 2 and "is in use" in err and ".sfv-bench.lock" in err and err.count("\n") == 1, err
    assert sorted(p.name for p in out.iterdir()) == [".sfv-bench.lock"]
