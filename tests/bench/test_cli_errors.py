"""Every mistake gets one line: bad input and damaged files -> exit code != 0, one line on stderr, no traceback."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from bench.cli import main


def _one_line(capsys, rc, expect_rc=2):
    err = capsys.readouterr().err.strip()
    assert rc == expect_rc, err
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    return err


@pytest.fixture(scope="module")
def unet_folders(tmp_path_factory):
    """A UNet folder with a broken config, one with foreign weights, an sfv-train run and checkpoint layout."""
    from safetensors.torch import save_file
    import torch

    from methods.models.stacks import tiny_stack_dir

    root = tmp_path_factory.mktemp("unets")
    good = tiny_stack_dir() / "unet"
    bad_cfg = root / "bad_config"
    shutil.copytree(good, bad_cfg)
    (bad_cfg / "config.json").write_text("{not json")
    foreign = root / "foreign"
    shutil.copytree(good, foreign)
    weights = next(foreign.glob("*.safetensors"))
    save_file({"some.weight": torch.zeros(3, 3)}, str(weights))
    run = root / "train-out"
    shutil.copytree(good, run / "export" / "unet")
    ckpt = run / "checkpoints" / "step-000010"
    ckpt.mkdir(parents=True)
    (ckpt / "state.json").write_text("{}")
    save_file({"x": torch.zeros(1)}, str(ckpt / "generator.safetensors"))
    return {"bad_config": bad_cfg, "foreign": foreign, "run": run, "ckpt": ckpt}


@pytest.mark.parametrize("case, argv, message", [
    ("device", ["--device", "tpu"], "--device takes cpu, cuda or cuda:N"),
    ("seed", ["--seed", "-1"], "--seed must be >= 0"),
    ("batch", ["--batch-size", "0"], "--batch-size must be >= 1"),
    ("batch-negative", ["--batch-size", "-3"], "--batch-size must be >= 1"),
    ("fvd-batch", ["--fvd-batch-size", "-1"], "--fvd-batch-size must be >= 1"),
    ("fvd-batch-zero", ["--fvd-batch-size", "0"], "--fvd-batch-size must be >= 1"),
    ("no-methods", ["--methods", ""], "--methods is empty"),
    ("twice", ["--methods", "dummy:2", "--methods", "dummy:2"], "method dummy:2 is listed twice"),
    ("config-missing", ["--config", "/nonexistent.toml"], "config file /nonexistent.toml does not exist"),
    ("fail-frac", ["--max-fail-frac", "2"], "max_fail_frac must be in [0, 1)"),
    ("procs", ["--procs", "0"], "--procs must be >= 1"),
    ("variant", ["--variant", "../fp16"], "--variant takes a weight variant name such as fp16"),
])
def test_run_bad_arguments(case, argv, message, tmp_path, capsys):
    rc = main(["run", "--world", "tiny", "--out", str(tmp_path / "r"), "-n", "2", *argv])
    assert message in _one_line(capsys, rc)
    assert not (tmp_path / "r" / "samples").exists()


def test_a_bad_process_group_timeout_is_said_once_before_any_process_starts(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("SFV_DIST_TIMEOUT_S", "soon")
    rc = main(["run", "--world", "tiny", "--out", str(tmp_path / "r"), "-n", "2", "--procs", "2"])
    assert "SFV_DIST_TIMEOUT_S must be a number of seconds > 0 (got 'soon')" in _one_line(capsys, rc)


def test_run_config_unknown_key_and_out_file(tmp_path, capsys):
    cfg = tmp_path / "c.toml"
    cfg.write_text('methods = "dummy:2"\nbogus = 3\n')
    assert "unknown option 'bogus'" in _one_line(capsys, main(["run", "--world", "tiny", "--config", str(cfg)]))
    (tmp_path / "f").write_text("x")
    assert "is a file: pass a folder" in _one_line(capsys, main(["run", "--world", "tiny", "--out", str(tmp_path / "f")]))


def test_run_out_unwritable(tmp_path, capsys, monkeypatch):
    """A folder the user cannot write (simulated: the tests may run as root, who can write anywhere)."""
    import bench.settings

    real_access = bench.settings.os.access
    monkeypatch.setattr(bench.settings.os, "access", lambda p, mode: False if mode == bench.settings.os.W_OK
                        else real_access(p, mode))
    rc = main(["run", "--world", "tiny", "--methods", "dummy:2", "-n", "2", "--out", str(tmp_path / "r")])
    assert "is not writable: pass another folder" in _one_line(capsys, rc)


@pytest.mark.parametrize("which, message", [
    ("bad_config", "is not a readable UNet config"),
    ("foreign", "do not fit the UNet config"),
    ("run", "is an sfv-train run folder: pass its exported UNet"),
    ("ckpt", "is an sfv-train checkpoint: pass the run's exported UNet"),
])
def test_run_bad_unet_folders_caught_before_any_work(which, message, unet_folders, tmp_path, capsys):
    rc = main(["run", "--world", "tiny", "--methods", "sfv:1", "--sfv-unet", str(unet_folders[which]), "-n", "2",
               "--out", str(tmp_path / "r")])
    assert message in _one_line(capsys, rc)
    assert not (tmp_path / "r" / "run.json").exists()          # refused in the pre-flight


def _results(tmp_path, lines):
    run = tmp_path / "run"
    run.mkdir(exist_ok=True)
    (run / "results.jsonl").write_text("".join(lines))
    return run


def test_table_damaged_results(tmp_path, capsys):
    rec = {"spec": "dummy:1", "method": "dummy", "steps": 1, "status": "ok", "fvd": 1.0, "n_fake": 2,
           "unet_calls": 1, "unet_batch": 1, "latency": None, "world": "tiny", "detector": {"toy": True}}
    run = _results(tmp_path, [json.dumps(rec) + "\n", '{"spec": "dummy:2", "me'])
    with pytest.warns(UserWarning, match="truncated last line"):
        assert main(["table", str(run)]) == 0
    assert "| dummy:1 " in capsys.readouterr().out.replace("dummy   ", "dummy")
    run = _results(tmp_path, ["[1, 2]\n"])
    assert "results.jsonl:1: not a `sfv-bench run` record" in _one_line(capsys, main(["table", str(run)]))
    run = _results(tmp_path, ['{"fvd": 1}\n', json.dumps(rec) + "\n"])
    assert "results.jsonl:1: not a `sfv-bench run` record" in _one_line(capsys, main(["table", str(run)]))
    assert "is a file" in _one_line(capsys, main(["table", str(run / "results.jsonl")]))


def test_table_merges_runs_and_refuses_unlike_ones(tmp_path, capsys):
    base = {"method": "dummy", "steps": 1, "status": "ok", "fvd": 1.0, "n_fake": 2, "unet_calls": 1,
            "unet_batch": 1, "latency": None, "world": "tiny", "detector": {"toy": True, "sha256": "a"},
            "metric": "fvd2", "protocol": {"num_videos": 2}, "covariance": "biased", "n_real": 2}
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    for run, spec, n in ((a, "dummy:1", 2), (b, "dummy:2", 2), (c, "dummy:3", 3)):
        run.mkdir()
        (run / "results.jsonl").write_text(json.dumps({**base, "spec": spec, "n_real": n}) + "\n")
    assert main(["table", str(a), str(b), "--format", "csv"]) == 0
    out = capsys.readouterr().out
    assert "dummy:1" in out and "dummy:2" in out
    err = _one_line(capsys, main(["table", str(a), str(c)]))
    assert "differ in n_real" in err


def test_table_write_into_a_read_only_run(tmp_path, capsys, monkeypatch):
    """`table --write` where the run folder refuses writes: one line naming the file, the old tables kept."""
    import errno
    from pathlib import Path

    rec = {"spec": "dummy:1", "method": "dummy", "steps": 1, "status": "ok", "fvd": 1.0, "n_fake": 2,
           "unet_calls": 1, "unet_batch": 1, "latency": None, "world": "tiny", "detector": {"toy": True}}
    run = _results(tmp_path, [json.dumps(rec) + "\n"])
    (run / "table.md").write_text("old table\n")

    def refuse(self, data):
        raise PermissionError(errno.EACCES, "Permission denied", str(self))

    monkeypatch.setattr(Path, "write_bytes", refuse)
    rc = main(["table", str(run), "--write"])
    err = _one_line(capsys, rc, expect_rc=1)
    assert "Permission denied" in err and str(run) in err
    monkeypatch.undo()
    assert (run / "table.md").read_text() == "old table\n"
    assert not [f for f in run.iterdir() if f.name.endswith(".tmp")]


@pytest.mark.parametrize("damage, message", [
    ("shapes", "damaged statistics file (sum has shape"),
    ("nan", "NaN or inf in the sums"),
    ("meta", "its metadata is not a mapping"),
])
def test_fvd_damaged_stats_file(damage, message, tmp_path, capsys):
    from sfv_fvd.stats import STATS_FORMAT

    path = tmp_path / "s.npz"
    s, so, meta = np.zeros(4), np.zeros((4, 4)), json.dumps({})
    if damage == "shapes":
        so = np.zeros((3, 3))
    elif damage == "nan":
        s = np.full(4, np.nan)
    else:
        meta = json.dumps([1, 2])
    np.savez(path, format=np.array(STATS_FORMAT), n=np.array(5), sum=s, sum_outer=so, metadata=np.array(meta))
    fake = tmp_path / "fake"
    fake.mkdir()
    np.save(fake / "v.npy", np.zeros((14, 32, 32, 3), np.uint8))
    rc = main(["fvd", str(path), str(fake), "--detector", "toy"])
    assert message in _one_line(capsys, rc)


def test_make_synthetic_onto_a_file(tmp_path, capsys):
    (tmp_path / "f").write_text("x")
    assert "is a file: pass a folder" in _one_line(capsys, main(["make-synthetic", str(tmp_path / "f")]))


def test_procs_default_one_per_core_up_to_4_in_the_mini_world_on_a_cpu_only():
    from bench.cli import build_parser
    from bench.settings import Settings
    from sfv_core.env import usable_cores

    def procs(*argv):
        return Settings(build_parser().parse_args(["run", "--device", "cpu", *argv])).procs

    assert procs() == min(usable_cores(), 4) and procs("--world", "tiny") == 1 and procs("--procs", "3") == 3
