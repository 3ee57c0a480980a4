"""`sfv-bench run` end to end on the tiny world: outputs, resume, errors, NaN, table, two processes."""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest

from bench.cli import main
from sfv_core.protocol import WORLDS

N = 6
# Latency is re-measured when asked, so run-to-run comparisons use every other column.
FVD = f"FVD ({WORLDS['tiny'].label})"
STABLE = ["Name", "Steps", "Method spec", FVD, "FVD 95% interval", "UNet calls x batch", "N", "FVD (paper)",
          "Latency (s) (paper, A100)"]


def _run(out, *extra, methods="dummy:3,onestep:1"):
    return main(["run", "--world", "tiny", "--methods", methods, "-n", str(N), "--out", str(out), "--no-previews", *extra])


def _stable_table(run_dir):
    rows = list(csv.DictReader(io.StringIO((Path(run_dir) / "table.csv").read_text())))
    return [{k: r[k] for k in STABLE} for r in rows]


@pytest.fixture(scope="module")
def full_run(tmp_path_factory, synthetic_root):
    out = tmp_path_factory.mktemp("run") / "full"
    assert _run(out) == 0
    return out


def _records(run_dir):
    return [json.loads(line) for line in (Path(run_dir) / "results.jsonl").read_text().splitlines()]


def test_outputs_and_record(full_run):
    records = _records(full_run)
    assert [r["spec"] for r in records] == ["dummy:3", "onestep:1"]
    for r in records:
        assert r["status"] == "ok" and r["n_fake"] == N and r["n_real"] == N
        assert r["schema"] == "sfv-bench-results/2" and r["created"] and r["world"] == "tiny"
        assert r["detector"]["toy"] is True and len(r["detector"]["sha256"]) == 64
        assert r["protocol"]["num_videos"] == N and r["protocol"]["num_frames"] == 14
        assert r["metric"] == f"fvd{N}_14f_7fps_320x240"
        lat = r["latency"]        # the timing pass: 3 videos at batch 1, one thread, machine recorded
        assert lat["n"] == 3 and lat["batch"] == 1 and lat["threads"] == 1 and lat["p90_s"] >= lat["median_s"] > 0
        assert lat["cpu"] and "load_average" in lat
        assert r["versions"]["torch"] and r["versions"]["diffusers"] and r["device"] == "cpu"
        lo, hi = r["fvd_interval"]
        assert r["fvd"] > 0 and lo < r["fvd"] < hi
    assert records[1]["unet_calls"] == 1 and records[1]["unet_batch"] == 1
    assert (records[1]["adapter"]["stack"], records[1]["adapter"]["unet"]) == ("tiny", "stack")
    assert len(records[1]["adapter"]["unet_sha256"]) == 64                  # what made the samples
    assert records[0]["unet_calls"] == 3
    # one lossless sample per selected video, and the samples are what FVD scored
    files = sorted((full_run / "samples" / "onestep_1").rglob("*.npz"))     # <Class>/<name>.npz
    assert len(files) == N
    md = (full_run / "table.md").read_text()
    assert "NOT THE PAPER'S NUMBERS" in md and FVD in md and "153.4" in md  # paper rows side by side
    header = (full_run / "table.csv").read_text().splitlines()[0]
    assert FVD in header and "FVD 95% interval" in header        # the label survives a CSV reader
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
    assert all(r["data"]["real_stats_cache_hit"] for r in _records(full_run))


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
    done = sorted(p.name for p in (out / "samples" / "onestep_1").rglob("*") if p.is_file())
    assert len([p for p in done if p.endswith(".npz")]) == 2
    assert not [p for p in done if p.endswith(".tmp") or p.startswith(".")]  # nothing half-written
    monkeypatch.setattr(videoio, "save_array", real_save)
    assert _run(out) == 0
    assert _stable_table(out) == _stable_table(full_run)


def test_other_settings_in_same_folder_refused(full_run, capsys):
    assert main(["run", "--world", "tiny", "--methods", "dummy:3,onestep:1", "-n", str(N + 1), "--out", str(full_run),
                 "--no-previews"]) == 2
    assert "holds a run with other settings (data, protocol)" in capsys.readouterr().err


def test_methods_accumulate_in_a_run_folder(full_run, tmp_path):
    """A method added later (other options, the same protocol and detector) joins the table; the others stay."""
    import shutil

    out = tmp_path / "acc"
    shutil.copytree(full_run, out)
    before = {r["spec"]: r for r in _records(out)}
    assert _run(out, "--method-option", "dummy.batch=2", methods="dummy:2,static") == 0
    after = {r["spec"]: r for r in _records(out)}
    assert list(after) == ["dummy:3", "onestep:1", "dummy:2", "static"]
    assert after["onestep:1"] == before["onestep:1"] and after["static"]["unet_calls"] == 0
    assert "| static " in (out / "table.md").read_text()


def test_damaged_sample_is_regenerated_and_table_equals_a_clean_run(full_run, tmp_path, capsys):
    import shutil

    import numpy as np

    out = tmp_path / "damaged"
    shutil.copytree(full_run, out)
    files = sorted((out / "samples" / "onestep_1").rglob("*.npz"))
    files[0].write_bytes(files[0].read_bytes()[:100])                        # truncated
    np.savez_compressed(files[1], video=np.zeros((14, 240, 320, 3), np.uint8))   # plausible but wrong
    files[2].with_suffix(".json").write_text("{garbage")                     # damaged sidecar
    short = np.zeros((16, 240, 320, 3), np.uint8)                             # wrong frame count, own checksum
    np.savez_compressed(files[3], video=short)
    side = json.loads(files[3].with_suffix(".json").read_text())
    files[3].with_suffix(".json").write_text(json.dumps({**side, "sha256": __import__("hashlib").sha256(
        short.tobytes()).hexdigest(), "shape": list(short.shape)}))
    capsys.readouterr()
    assert _run(out) == 0
    log = capsys.readouterr().out
    for f in files[:4]:
        assert f"regenerating {f}" in log, log
    assert "sidecar" in log and "shape (16, 240, 320, 3)" in log
    assert _stable_table(out) == _stable_table(full_run)


def test_disk_full_mid_run_one_line_then_resume(full_run, tmp_path, capsys, monkeypatch):
    """ENOSPC while writing a sample: exit 1 with one line, no partial file, earlier samples kept; a rerun
    after space is freed finishes with the clean run's table."""
    import errno

    out = tmp_path / "full-disk"
    written = []
    real_write = Path.write_bytes

    def fill_up(self, data):
        if ".npz." in self.name:
            if len(written) >= 2:                     # the third sample: half written, then no space
                real_write(self, data[:len(data) // 2])
                raise OSError(errno.ENOSPC, "No space left on device", str(self))
            written.append(self.name)
        return real_write(self, data)

    monkeypatch.setattr(Path, "write_bytes", fill_up)
    capsys.readouterr()
    rc = _run(out)
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1 and len(err) == 1 and "No space left on device" in err[0], err
    monkeypatch.undo()
    samples = list((out / "samples").rglob("*"))
    assert not [f for f in samples if f.name.endswith(".tmp")]                 # no partial file left
    kept = [f for f in samples if f.suffix == ".npz"]
    assert len(kept) == 2
    assert _run(out) == 0
    assert _stable_table(out) == _stable_table(full_run)


def test_new_weights_behind_the_same_path_are_scored(tmp_path, synthetic_root):
    """The samples are keyed on the weights' content, not the path: replacing them means new samples."""
    import shutil

    from methods.models.stacks import load_unet, tiny_stack_dir

    unet_dir = tmp_path / "unet"
    shutil.copytree(tiny_stack_dir() / "unet", unet_dir)
    out = tmp_path / "r"
    args = ("--onestep-unet", str(unet_dir))
    assert _run(out, *args, methods="onestep:1") == 0
    first = _records(out)[0]
    unet = load_unet(unet_dir)
    for p in unet.parameters():
        p.data.mul_(1.1)
    unet.save_pretrained(unet_dir)
    assert _run(out, *args, methods="onestep:1") == 0
    second = _records(out)[0]
    assert second["adapter"]["unet_sha256"] != first["adapter"]["unet_sha256"]
    assert second["fvd"] != first["fvd"]


@pytest.mark.parametrize("argv, message", [
    (["--methods", "svd:25,foo:2"], "unknown method 'foo' in 'foo:2'; valid methods: animatelcm, dummy"),
    (["--methods", "animatelcm:3"], "valid steps for animatelcm: 1, 2, 4, 8"),
    (["--methods", "svd:4", "--stack", "svd"], "stabilityai/stable-video-diffusion-img2vid"),
    (["--methods", "sfv:1", "--stack", "svd"], "stabilityai/stable-video-diffusion-img2vid"),
    (["--data", "/nonexistent/ucf"], "/nonexistent/ucf"),
])
def test_bad_input_one_line_errors(argv, message, tmp_path, capsys):
    assert main(["run", "--world", "tiny", "--out", str(tmp_path / "r"), *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "r" / "samples").exists()  # nothing generated before the check


def test_nan_fails_that_method_only(tmp_path, synthetic_root):
    out = tmp_path / "nan"
    rc = main(["run", "--world", "tiny", "--methods", "dummy:1,onestep:1", "--method-option", "dummy.nan=true", "-n", "3",
               "--out", str(out), "--no-previews"])
    assert rc == 1
    records = _records(out)
    assert [r["status"] for r in records] == ["failed", "ok"]
    assert "NonFiniteOutput" in records[0]["error"] and records[1]["fvd"] > 0
    assert "FAILED dummy:1" in (out / "table.md").read_text()


def test_one_step_family_needs_a_checkpoint_off_the_tiny_stack(tmp_path, capsys):
    import shutil

    from methods.models.stacks import tiny_stack_dir

    stack = tmp_path / "my-stack"  # a real-looking stack folder that is not the tiny one
    shutil.copytree(tiny_stack_dir(), stack)
    assert main(["run", "--world", "tiny", "--methods", "sfv:1", "--stack", str(stack), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "sfv needs its UNet checkpoint: pass --sfv-unet DIR" in err


@pytest.mark.slow
def test_two_processes_and_resumes_with_another_count_give_the_single_process_table(full_run, tmp_path, capfd):
    """`--procs 2` runs two processes under torchrun (gloo, one thread each) and gives the one-process table; so
    does a resume with another number of processes (1 then 2, then 2 then 1): what is left is dealt evenly, the
    timing pass runs in the first. A refusal met in both is said once."""
    import shutil

    out = tmp_path / "two"
    shutil.copytree(full_run, out)                            # made by one process; now take away
    shutil.rmtree(out / "samples" / "dummy_3")                # a whole method,
    onestep = out / "samples" / "onestep_1"
    first = sorted(onestep.rglob("*.npz"))[:3]                 # the first process's block of another
    for npz in first:
        npz.unlink()
    (onestep / "latency.json").unlink()
    assert _run(out, "--procs", "2") == 0
    assert _stable_table(out) == _stable_table(full_run)
    made = {p.stem: json.loads(p.with_suffix(".json").read_text())["process"] for p in first}
    assert sorted(made.values()) == ["1 of 2", "1 of 2", "2 of 2"]          # dealt, not one process's block
    rec = _records(out)
    assert rec[0]["processes"] == 2 and rec[1]["latency"]["n"] == 3 and rec[1]["latency"]["threads"] == 1
    assert "in each of 2 processes" in (out / "table.md").read_text()
    for p in onestep.rglob("*.json"):                         # 2 then 1: the second process's samples gone
        if p.name not in ("method.json", "latency.json") and json.loads(p.read_text()).get("process") == "2 of 2":
            p.with_suffix(".npz").unlink()
    assert _run(out) == 0
    assert _stable_table(out) == _stable_table(full_run)
    capfd.readouterr()
    assert main(["run", "--world", "tiny", "--methods", "dummy:3", "-n", str(N + 1), "--out", str(out),
                 "--procs", "2"]) == 2
    err = capfd.readouterr().err
    assert err.count("holds a run with other settings") == 1 and "Traceback" not in err, err


def test_rows_making_the_same_unet_passes_show_the_same_latency(full_run, tmp_path):
    """One-step rows (one batch-1 pass of one architecture) agree, and time scales with the UNet calls: ratios
    in one run folder, never absolute times. Rows added later reuse the folder's pass time."""
    import shutil

    out = tmp_path / "more"
    shutil.copytree(full_run, out)
    assert _run(out, methods="sfv:1,lcm:2,svd:1") == 0
    lat = {r["spec"]: r["latency"] for r in _records(out)}
    one = lat["onestep:1"]["calls_x_pass_s"]
    assert len({lat[s]["pass_key"] for s in ("onestep:1", "sfv:1", "lcm:2")}) == 1
    assert lat["sfv:1"]["calls_x_pass_s"] / one == pytest.approx(1.0, rel=1e-9)
    assert lat["lcm:2"]["calls_x_pass_s"] / one == pytest.approx(2.0, rel=1e-9)
    assert lat["svd:1"]["pass_key"] != lat["onestep:1"]["pass_key"]         # batch 2 (CFG): a pass of its own
    passes = json.loads((out / "passes.json").read_text())
    assert passes[lat["sfv:1"]["pass_key"]]["timed_in"] == "onestep:1" and len(passes) == 2
    assert passes[lat["svd:1"]["pass_key"]]["inputs"]["sample"][0] == 2
    rows = {r["Method spec"]: r for r in csv.DictReader(io.StringIO((out / "table.csv").read_text()))}
    assert rows["sfv:1"]["Latency (s)"] == rows["onestep:1"]["Latency (s)"]
    assert rows["sfv:1"]["Measured (s)"]                                    # the per-row measurement beside it


def test_fvd_command_on_cached_stats_reproduces_the_run(full_run, capsys):
    """`sfv-bench fvd STATS SAMPLES` scores a run's samples against its cached real statistics."""
    from sfv_core.fsutil import cache_dir

    rec = _records(full_run)[1]
    stats = sorted(cache_dir("stats").glob(f"{rec['metric']}-*.npz"))
    assert len(stats) == 1
    capsys.readouterr()
    assert main(["fvd", str(stats[0]), str(full_run / "samples" / "onestep_1")]) == 0
    out = capsys.readouterr().out
    assert f"FVD = {rec['fvd']:.2f}  (N_real={N}, N_fake={N}" in out


def test_redo_latency_and_force_remeasure_without_or_with_regenerating(full_run, tmp_path):
    """--redo-latency re-times every method and keeps every sample; --force SPEC regenerates that method's
    samples (same seeds: same FVD) and keeps the others'."""
    import shutil

    out = tmp_path / "again"
    shutil.copytree(full_run, out)
    mtimes = {p: p.stat().st_mtime_ns for p in (out / "samples").rglob("*.npz")}
    before = {r["spec"]: r["latency"] for r in _records(out)}
    assert _run(out, "--redo-latency") == 0
    assert {p: p.stat().st_mtime_ns for p in (out / "samples").rglob("*.npz")} == mtimes
    after = {r["spec"]: r["latency"] for r in _records(out)}
    assert all(after[s] != before[s] for s in before)              # every method re-timed
    assert _run(out, "--force", "onestep:1") == 0
    new = {p: p.stat().st_mtime_ns for p in (out / "samples").rglob("*.npz")}
    assert all(new[p] != t for p, t in mtimes.items() if "onestep_1" in str(p))
    assert all(new[p] == t for p, t in mtimes.items() if "dummy_3" in str(p))
    assert _stable_table(out) == _stable_table(full_run)


def test_run_config_file_values_and_flags(tmp_path, synthetic_root):
    """--config FILE (TOML and YAML) sets run options; a flag on the command line overrides the file."""
    toml = tmp_path / "run.toml"
    toml.write_text(f'world = "tiny"\nmethods = "dummy:2"\nnum_videos = 4\nout = "{tmp_path / "a"}"\n'
                    f'no_previews = true\n')
    assert main(["run", "--config", str(toml)]) == 0
    rec = _records(tmp_path / "a")
    assert [r["spec"] for r in rec] == ["dummy:2"] and rec[0]["n_fake"] == 4
    yaml_file = tmp_path / "run.yaml"
    yaml_file.write_text(f"world: tiny\nmethods: dummy:2\nnum-videos: 4\nout: {tmp_path / 'b'}\nno-previews: true\n")
    assert main(["run", "--config", str(yaml_file), "-n", "3"]) == 0
    assert _records(tmp_path / "b")[0]["n_fake"] == 3


def test_a_cold_run_renders_the_test_videos_and_the_rest_only_when_the_real_row_needs_them(tmp_path, monkeypatch):
    """A fresh cache: the run makes only fold 1's test videos; a `real` row that runs out of held-out test
    videos has the training ones written first (then the dataset is complete). A smaller tiny world's dataset
    (its own folder in the session cache, so it starts empty)."""
    import dataclasses

    from sfv_core.data.synthetic import default_dataset_root

    small = dict(seed=0, classes=2, groups=3, clips=2, frames=48, width=64, height=48)
    monkeypatch.setitem(WORLDS, "tiny", dataclasses.replace(WORLDS["tiny"], dataset=small))
    root = default_dataset_root(**small)
    assert main(["run", "--world", "tiny", "--methods", "static", "-n", "2", "--out", str(tmp_path / "a"),
                 "--no-previews"]) == 0
    manifest = json.loads((root / "sfv_synthetic.json").read_text())
    assert not manifest["complete"] and manifest["test_folds_written"] == [1]
    assert len(list(root.rglob("*.avi"))) == len((root / "ucfTrainTestlist" / "testlist01.txt").read_text().split())
    assert main(["run", "--world", "tiny", "--methods", "real", "-n", "3", "--out", str(tmp_path / "b"),
                 "--no-previews"]) == 0                          # 4 test videos: 1 left after 3, train added
    assert json.loads((root / "sfv_synthetic.json").read_text())["complete"]
    assert _records(tmp_path / "b")[0]["adapter"]["held_out"].endswith("+ train videos")
