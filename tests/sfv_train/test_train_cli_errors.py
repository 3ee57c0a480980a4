"""sfv-train's bad inputs and faults, one table: each exits != 0 with exactly one line on stderr (no
traceback) and leaves the run folder as it was. Plus the damaged-checkpoint rule per fault kind."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch

from bench.cli import train_main
from sfv_train.checkpoint import damage, find_resume, list_checkpoints
from train_runs import FAULTS, TINY, damage_checkpoints, garbage


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


# case -> (function (run folder, tmp_path) -> argv, text the error line holds)
CASES = {
    "config-unknown-key": (lambda run, tmp: ["--config", str(write(tmp / "c.toml", "bogus = 1\n")), "--out",
                                             str(tmp / "o")], "unknown option 'bogus'"),
    "config-bad-value": (lambda run, tmp: ["--config", str(write(tmp / "c.json", '{"method": "dmd"}')), "--out",
                                           str(tmp / "o")],
                         "method = 'dmd': --method takes 'sfv', 'ufogen', 'ladd' or 'lcm'"),
    "config-garbage": (lambda run, tmp: ["--config", str(write(tmp / "c.yaml", "a: [1,\n")), "--out",
                                         str(tmp / "o")], "does not parse"),
    "config-missing": (lambda run, tmp: ["--config", str(tmp / "none.toml")], "does not exist"),
    "bad-flag": (lambda run, tmp: [*TINY, "--out", str(tmp / "o"), "--bogus"], "unrecognized arguments"),
    "out-is-file": (lambda run, tmp: [*TINY, "--out", str(write(tmp / "f", "x"))], "is a file"),
    "device-tpu": (lambda run, tmp: [*TINY, "--out", str(tmp / "o"), "--device", "tpu"],
                   "--device takes cpu, cuda or cuda:N"),
    "data-required": (lambda run, tmp: ["--stack", "svd", "--out", str(tmp / "o")],
                      "--data is required with --stack svd"),
    "fresh-run-over-checkpoints": (lambda run, tmp: [*TINY, "--out", str(run)], "already holds checkpoints"),
    "resume-changes-option": (lambda run, tmp: ["--resume", str(run), "--lambda", "0.5"],
                              "recon_weight (0.01 -> 0.5)"),
    "resume-changes-config": (lambda run, tmp: ["--resume", str(run), "--config",
                                                str(write(tmp / "c.toml", "heads = 'spatial'\n"))], "heads"),
    "resume-other-out": (lambda run, tmp: ["--resume", str(run), "--out", str(tmp / "o")], "drop --out"),
    "resume-nothing": (lambda run, tmp: ["--resume", str(tmp / "nope")], "not a finished checkpoint"),
    "resume-garbage-config": (lambda run, tmp: (garbage(run / "config.json"), ["--resume", str(run)])[1],
                              "config.json is not a readable run configuration"),
    "resume-out-garbage-config": (lambda run, tmp: (garbage(run / "config.json"),
                                                    ["--resume", "--out", str(run)])[1], "run/config.json"),
    "resume-damaged-checkpoint-folder": (
        lambda run, tmp: (damage_checkpoints(run, "heads", [2]),
                          ["--resume", str(run / "checkpoints" / "step-000002")])[1],
        "heads.safetensors: truncated"),
    **{f"resume-all-damaged-{kind}": (
        lambda run, tmp, kind=kind: (damage_checkpoints(run, kind), ["--resume", str(run)])[1],
        f"no intact checkpoint in {{run}}/checkpoints (step-000002/{FAULTS[kind][0]}")
        for kind in FAULTS},
}
if not torch.cuda.is_available():
    CASES["device-cuda-without-cuda"] = (lambda run, tmp: [*TINY, "--out", str(tmp / "o"), "--device", "cuda"],
                                         "--device cuda: torch sees no CUDA device")


def _files(folder: Path) -> dict:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_line_and_changes_nothing(case, run_copy, tmp_path, capsys):
    make_argv, needle = CASES[case]
    argv = make_argv(run_copy, tmp_path)
    before = _files(run_copy)
    capsys.readouterr()
    rc = train_main(argv)
    err = capsys.readouterr().err
    assert rc != 0
    assert len(err.strip().splitlines()) == 1 and err.startswith("sfv-train: error:"), err
    assert "Traceback" not in err
    assert needle.format(run=run_copy) in err, err
    assert _files(run_copy) == before
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("kind", list(FAULTS))
def test_damaged_latest_checkpoint_falls_back_to_older(kind, run_copy, caplog):
    root = run_copy / "checkpoints"
    assert damage(root / "step-000002") is None
    damage_checkpoints(run_copy, kind, [2])
    assert FAULTS[kind][0] in damage(root / "step-000002")
    with caplog.at_level(logging.WARNING, logger="sfv_train.checkpoint"):
        assert find_resume("latest", root, lambda p: None) == root / "step-000001"
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and f"step-000002 is damaged ({FAULTS[kind][0]}" in lines[0], lines
    assert "resuming from step-000001" in lines[0]
    assert [p.name for p in list_checkpoints(root)] == ["step-000001", "step-000002"]


def test_config_file_values_and_flags(trained_run, train_data):
    """The fixture's run came from a TOML file (max-steps 5) and --max-steps 2 on the command line."""
    cfg = json.loads((trained_run / "config.json").read_text())
    assert cfg["max_steps"] == 2 and cfg["optimizer"] == "adamw" and cfg["progress"] is False
    assert (cfg["width"], cfg["num_frames"], cfg["data"]) == (64, 6, str(train_data))
    assert "config" not in cfg


def test_tiny_stack_defaults_to_the_synthetic_dataset():
    from sfv_core.data.synthetic import default_dataset_root
    from sfv_core.errors import UserError
    from sfv_train.config import TrainConfig

    assert TrainConfig(out="o", stack="tiny").resolved().data == str(default_dataset_root().absolute())
    with pytest.raises(UserError, match="--data is required with --stack svd-xt"):
        TrainConfig(out="o", stack="svd-xt").resolved()
