"""`sfv-bench run` end to end on the tiny world: outputs, resume, errors, NaN, table, two processes."""
from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.cli import main

N = 6
# Latency is re-measured on every run, so run-to-run comparisons use every other column.
STABLE = ["Name", "Steps", "Method spec", "FVD", "UNet calls x batch", "N", "FVD (paper)", "Latency (s) (paper, A100)"]


def _run(out, *extra, methods="dummy:3,onestep:1"):
    return main(["run", "--methods", methods, "-n", str(N), "--out", str(out), "--no-previews", *extra])


def _stable_table(run_dir):
    rows = list(csv.DictReader(io.StringIO((Path(run_dir) / "table.csv").read_text())))
    return [{k: r[k] for k in STABLE} for r in rows]


@pytest.fixture(scope="module")
def full_run(tmp_path_factory, synthetic_root):
    out = tmp_path_factory.mktemp("run") / "full"
    assert _run(out) == 0
    return out


def test_outputs_and_record(full_run):
    records = [json.loads(line) for line in (full_run / "results.jsonl").read_text().splitlines()]
    assert [r["spec"] for r in records] == ["dummy:3", "onestep:1"]
    for r in records:
        assert r["status"] == "ok" and r["n_fake"] == N and r["n_real"] == N
        assert r["detector"]["toy"] is True and len(r["detector"]["sha256"]) == 64
        assert r["protocol"]["num_videos"] == N and r["protocol"]["num_frames"] == 14
        assert r["metric"] == f"fvd{N}_14f_7fps_320x240"
        assert r["latency"]["n"] == N and r["latency"]["p90_s"] >= r["latency"]["median_s"] > 0
        assert r["versions"]["torch"] and r["versions"]["diffusers"] and r["device"] == "cpu"
        assert r["fvd"] > 0
    assert records[1]["unet_calls"] == 1 and records[1]["unet_batch"] == 1
    assert (records[1]["adapter"]["stack"], records[1]["adapter"]["unet"]) == ("tiny", "stack")
    assert records[0]["unet_calls"] == 3
    # one lossless sample per selected video, and the samples are what FVD scored
    files = sorted((full_run / "samples" / "onestep_1").glob("*.npz"))
    assert len(files) == N
    md = (full_run / "table.md").read_text()
    assert "TOY NUMBERS" in md and "FVD (toy detector)" in md and "153.4" in md  # paper rows side by side
    assert (full_run / "fvd_vs_latency.png").stat().st_size > 1000


def test_table_command_reproduces_files(full_run, capsys):
    for fmt, name in (("csv", "table.csv"), ("md", "table.md")):
        capsys.readouterr()
        assert main(["table", str(full_run), "--format", fmt]) == 0
        assert capsys.readouterr().out == (full_run / name).read_text()


def test_rerun_is_a_noop_and_uses_stats_cache(full_run, monkeypatch):
    import sfv_core.data.videoio as videoio

    before = {p: p.stat().st_mtime_ns for p in (full_run / "samples").rglob("*.npz")}
    real_read = videoio.read_video

    def no_containers(path, indices=None):  # generated samples are .npz; real clips are .avi
        assert not str(path).endswith(".avi"), f"decoded a real video on a cached run: {path}"
        return real_read(path, indices)

    for where in ("sfv_core.data.videoio", "sfv_core.data.ucf101", "bench.generate", "bench.run"):
        monkeypatch.setattr(f"{where}.read_video", no_containers, raising=False)
    assert _run(full_run) == 0
    after = {p: p.stat().st_mtime_ns for p in (full_run / "samples").rglob("*.npz")}
    assert before == after
    records = [json.loads(line) for line in (full_run / "results.jsonl").read_text().splitlines()]
    assert all(r["data"]["real_stats_cache_hit"] for r in records)


def test_resume_after_interrupt_gives_same_table(full_run, tmp_path, monkeypatch):
    import bench.generate as videoio

    out = tmp_path / "interrupted"
    real_save, calls = videoio.save_array, {"n": 0}

    def save_then_die(path, frames, compress=True):
        calls["n"] += 1
        if calls["n"] == N + 3:  # dummy done, 2 onestep samples written, then "Ctrl-C"
            raise KeyboardInterrupt
        real_save(path, frames, compress)

    monkeypatch.setattr(videoio, "save_array", save_then_die)
    assert _run(out) == 130
    done = sorted(p.name for p in (out / "samples" / "onestep_1").iterdir())
    assert len([p for p in done if p.endswith(".npz")]) == 2
    assert not [p for p in done if p.endswith(".tmp") or p.startswith(".")]  # nothing half-written
    monkeypatch.setattr(videoio, "save_array", real_save)
    assert _run(out) == 0
    assert _stable_table(out) == _stable_table(full_run)


def test_other_settings_in_same_folder_refused(full_run, capsys):
    assert main(["run", "--methods", "dummy:3,onestep:1", "-n", str(N + 1), "--out", str(full_run),
                 "--no-previews"]) == 2
    assert "holds a run with other settings (protocol)" in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["--methods", "svd:25,foo:2"], "unknown method 'foo' in 'foo:2'; valid methods: animatelcm, dummy"),
    (["--methods", "animatelcm:3"], "valid steps for animatelcm: 1, 2, 4, 8"),
    (["--methods", "svd:4", "--stack", "svd"], "stabilityai/stable-video-diffusion-img2vid"),
    (["--methods", "sfv:1", "--stack", "svd"], "stabilityai/stable-video-diffusion-img2vid"),
    (["--data", "/nonexistent/ucf"], "/nonexistent/ucf"),
])
def test_bad_input_one_line_errors(argv, message, tmp_path, capsys):
    assert main(["run", "--out", str(tmp_path / "r"), *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "r" / "samples").exists()  # nothing generated before the check


def test_nan_fails_that_method_only(tmp_path, synthetic_root):
    out = tmp_path / "nan"
    rc = main(["run", "--methods", "dummy:1,onestep:1", "--method-option", "dummy.nan=true", "-n", "3",
               "--out", str(out), "--no-previews"])
    assert rc == 1
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert [r["status"] for r in records] == ["failed", "ok"]
    assert "NonFiniteOutput" in records[0]["error"] and records[1]["fvd"] > 0
    assert "FAILED dummy:1" in (out / "table.md").read_text()


def test_one_step_family_needs_a_checkpoint_off_the_tiny_stack(tmp_path, capsys):
    import shutil

    from methods.models.stacks import tiny_stack_dir

    stack = tmp_path / "my-stack"  # a real-looking stack folder that is not the tiny one
    shutil.copytree(tiny_stack_dir(), stack)
    assert main(["run", "--methods", "sfv:1", "--stack", str(stack), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "sfv needs its UNet checkpoint: pass --sfv-unet DIR" in err


@pytest.mark.slow
def test_two_processes_give_the_single_process_table(full_run, tmp_path):
    out = tmp_path / "two"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "bench", "run", "--methods", "dummy:3,onestep:1", "-n", str(N), "--out", str(out),
           "--no-previews"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert _stable_table(out) == _stable_table(full_run)
    rec = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert rec[0]["processes"] == 2 and rec[1]["latency"]["n"] == N


def test_fvd_command_on_cached_stats_reproduces_the_run(full_run, capsys):
    """`sfv-bench fvd STATS SAMPLES` scores a run's samples against its cached real statistics."""
    from sfv_core.fsutil import cache_dir

    rec = [json.loads(line) for line in (full_run / "results.jsonl").read_text().splitlines()][1]
    stats = sorted(cache_dir("stats").glob(f"{rec['metric']}-*.npz"))
    assert len(stats) == 1
    capsys.readouterr()
    assert main(["fvd", str(stats[0]), str(full_run / "samples" / "onestep_1")]) == 0
    out = capsys.readouterr().out
    assert f"FVD = {rec['fvd']:.2f}  (N_real={N}, N_fake={N}" in out
