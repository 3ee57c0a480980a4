"""A hostile user's probe of `sfv-bench run` / `sfv-train` (bad CLI input, bad data, bad weights, faults):
each case gives the right number or one line naming the fix with a non-zero exit. Tiny world, the
`dummy` method and a one-step tiny-stack method, N = 4; one subprocess (the concurrent run)."""
from __future__ import annotations

import csv
import io
import json
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from bench.cli import main, train_main

ROOT = Path(__file__).resolve().parents[2]
N = 4
RUN = ["run", "--world", "tiny", "-n", str(N), "--no-previews", "--batch-size", "2"]


def _run(out, methods="dummy:1,onestep:1", *extra):
    return main([*RUN, "--methods", methods, "--out", str(out), *extra])


def _records(out):
    return [json.loads(line) for line in (Path(out) / "results.jsonl").read_text().splitlines()]


def _table(out, drop=("Latency (s)", "Measured (s)", "Measured p90 (s)")):
    rows = list(csv.DictReader(io.StringIO((Path(out) / "table.csv").read_text())))
    return [{k: v for k, v in r.items() if k not in drop} for r in rows]


def _one_line_error(capsys, rc, code=2) -> str:
    err = capsys.readouterr().err.strip()
    assert rc == code and len(err.splitlines()) == 1 and "Traceback" not in err, (rc, err)
    return err


@pytest.fixture(scope="module")
def clean(tmp_path_factory, synthetic_root):
    out = tmp_path_factory.mktemp("hostile") / "clean"
    assert _run(out) == 0
    return out


def _copy(clean, tmp_path, name="copy"):
    out = tmp_path / name
    shutil.copytree(clean, out)
    return out


# ----------------------------------------------------------------------------------------- bad CLI input

@pytest.mark.parametrize("argv, message", [
    (["--methods", "svd:1000000", "-n", "1"], "--num-videos must be >= 2 (an FVD compares the covariances"),
    (["--methods", "svd:1000000", "-n", "2"], "1000000 steps is past the bound of 1000"),
    (["--methods", "dummy:1", "--force", "svd:4"], "--force svd:4: not among the methods of this run"),
])
def test_refused_before_any_work(argv, message, tmp_path, capsys, monkeypatch):
    def started(*args, **kw):
        raise AssertionError("generation started")

    monkeypatch.setattr("bench.run.generate_method", started)
    err = _one_line_error(capsys, main(["run", "--world", "tiny", "--out", str(tmp_path / "r"), *argv]))
    assert message in err
    assert not (tmp_path / "r" / "samples").exists()


@pytest.mark.parametrize("config, flag, message", [
    ({"num_videos": [4]}, ["-n", "[4]"], "num_videos = [4]: --num-videos takes a valid integer"),
    ({"batch_size": 2.5}, ["--batch-size", "2.5"], "batch_size = 2.5: --batch-size takes a valid integer"),
    ({"world": "huge"}, ["--world", "huge"], "world = 'huge': --world takes 'mini' or 'tiny'"),
    ({"fold": 4}, ["--fold", "4"], "fold = 4: --fold takes 1, 2 or 3"),
    ({"balanced": "maybe"}, ["--balanced", "maybe"], "balanced = 'maybe': --balanced takes a valid boolean"),
    ({"methods": {"a": 1}}, None, "methods = {'a': 1}: --methods takes a valid string"),
])
def test_run_config_values_are_checked_as_flags_are(config, flag, message, tmp_path, capsys):
    """A config file's bad value: one line naming the file, the key, the option and what it takes; the same
    value typed on the command line is refused too (argparse's line, naming the option)."""
    path = tmp_path / "c.json"
    path.write_text(json.dumps(config))
    err = _one_line_error(capsys, main(["run", "--config", str(path)]))
    assert f"config file {path}: {message}" in err
    if flag:
        with pytest.raises(SystemExit):
            main(["run", *flag])
        option = message.split(": ")[1].split(" takes")[0]             # --num-videos
        line = capsys.readouterr().err.splitlines()[-1]
        assert line.startswith("sfv-bench run: error: argument ") and option in line, line


@pytest.mark.parametrize("config, message", [
    ({"max_steps": [3]}, "max_steps = [3]: --max-steps takes a valid integer"),
    ({"batch_size": 2.5}, "batch_size = 2.5: --batch-size takes a valid integer"),
    ({"heads": "one"}, "heads = 'one': --heads takes 'both', 'spatial' or 'temporal'"),
    ({"recon_weight": "x"}, "recon_weight = 'x': --lambda takes a valid number"),
    ({"gradient_checkpointing": "sometimes"},
     "gradient_checkpointing = 'sometimes': --gradient-checkpointing takes a valid boolean"),
    ({"width": 64, "bogus": 1}, "unknown option 'bogus'"),
])
def test_train_config_values_are_checked_as_flags_are(config, message, tmp_path, capsys):
    path = tmp_path / "c.json"
    path.write_text(json.dumps(config))
    err = _one_line_error(capsys, train_main(["--config", str(path), "--out", str(tmp_path / "t")]))
    assert f"config file {path}: {message}" in err
    assert not (tmp_path / "t").exists()


def _run_args(tmp_path, text, *argv):
    from bench.cli import _subparser, build_parser
    from bench.run_config import RunConfig
    from sfv_core.typed_config import apply_config_file

    path = tmp_path / "c.json"
    path.write_text(text)
    parser = build_parser()
    apply_config_file(_subparser(parser, "run"), RunConfig, ["--config", str(path), *argv])
    return parser.parse_args(["run", "--config", str(path), *argv])


def test_config_boolean_as_text_is_a_boolean(tmp_path):
    args = _run_args(tmp_path, '{"balanced": "false", "no_previews": "yes", "trust_detector": "off"}')
    assert args.balanced is False and args.no_previews is True and args.trust_detector is False


def test_config_null_keeps_the_default(tmp_path):
    from bench.cli import build_parser

    default = build_parser().parse_args(["run"])
    args = _run_args(tmp_path, '{"threads": null, "fvd_batch_size": null}')
    assert (args.threads, args.fvd_batch_size) == (default.threads, default.fvd_batch_size) != (None, None)


def test_config_one_value_for_a_repeatable_option_and_flags_over_the_file(tmp_path):
    args = _run_args(tmp_path, '{"methods": "dummy:2", "force": ["dummy:2"], "seed": 3, "fvd_batch_size": 4}',
                     "--seed", "5")
    assert args.methods == ["dummy:2"] and args.force == ["dummy:2"]
    assert (args.seed, args.fvd_batch_size) == (5, 4)


# ---------------------------------------------------------------------------------------------- bad data

def test_one_file_name_in_two_classes_gives_two_samples(tmp_path, synthetic_root, capsys):
    """A/v_Dup_g01_c01 and B/v_Dup_g01_c01 are two videos: two sample files, N = 4 scored from 4 files."""
    videos = sorted((synthetic_root / "UCF-101").rglob("*.avi"))[:4]
    root = tmp_path / "ucf"
    names = [("A", "v_Dup_g01_c01"), ("B", "v_Dup_g01_c01"), ("A", "v_Other_g02_c01"), ("B", "v_Other_g02_c01")]
    for (cls, name), src in zip(names, videos):
        (root / "UCF-101" / cls).mkdir(parents=True, exist_ok=True)
        shutil.copy(src, root / "UCF-101" / cls / f"{name}.avi")
    lists = root / "ucfTrainTestlist"
    lists.mkdir()
    (lists / "classInd.txt").write_text("1 A\n2 B\n")
    (lists / "testlist01.txt").write_text("".join(f"{c}/{n}.avi\n" for c, n in names))
    out = tmp_path / "run"
    assert main([*RUN, "--data", str(root), "--methods", "dummy:1", "--out", str(out)]) == 0
    files = sorted(p.relative_to(out / "samples" / "dummy_1").as_posix()
                   for p in (out / "samples" / "dummy_1").rglob("*.npz"))
    assert files == [f"{c}/{n}.npz" for c, n in sorted(names)]
    assert _records(out)[0]["n_fake"] == 4
    a, b = (np.load(out / "samples" / "dummy_1" / c / "v_Dup_g01_c01.npz")["video"] for c in "AB")
    assert not np.array_equal(a, b)                     # each made from its own conditioning frame


def test_old_flat_sample_names_are_moved_not_regenerated(clean, tmp_path, capsys):
    """A run folder of an earlier version (samples/<spec>/<stem>.npz) is read: its samples move to their ids."""
    out = _copy(clean, tmp_path)
    sdir = out / "samples" / "onestep_1"
    for f in sorted(sdir.rglob("v_*")):
        f.rename(sdir / f.name)
    flat = {p.name: p.stat().st_mtime_ns for p in sdir.glob("*.npz")}
    assert len(flat) == N
    capsys.readouterr()
    assert _run(out) == 0
    assert "4 samples of an earlier version moved" in capsys.readouterr().out
    assert {p.name: p.stat().st_mtime_ns for p in sdir.rglob("*.npz")} == flat      # moved, not regenerated
    assert _table(out) == _table(clean)


def test_results_cut_mid_line(clean, tmp_path, capsys):
    """results.jsonl with its one record cut mid-line: `table` says so in one line naming the fix; a rerun
    skips the line, says so and remakes the records."""
    out = _copy(clean, tmp_path)
    path = out / "results.jsonl"
    path.write_text(path.read_text().splitlines()[0][:200])
    with pytest.warns(UserWarning, match="truncated last line"):
        err = _one_line_error(capsys, main(["table", str(out)]))
    assert "cut mid-write" in err and f"--out {out}" in err
    with pytest.warns(UserWarning, match="truncated last line"):
        assert _run(out) == 0
    assert _table(out) == _table(clean)


# ------------------------------------------------------------------------------------------- bad weights

def test_flipped_bit_in_a_weight_file_with_its_mtime_restored_is_caught(tmp_path, monkeypatch):
    from methods.models.mini import SHIPPED, verified
    from sfv_core.errors import UserError

    world = tmp_path / "mini"
    shutil.copytree(SHIPPED / "stack", world / "stack")
    shutil.copy(SHIPPED / "manifest.json", world / "manifest.json")
    assert verified("stack", world) == world / "stack"    # hashed; named by the caller
    monkeypatch.setenv("SFV_MINI_WORLD", str(world))
    assert verified("stack") == world / "stack"           # or by the user's $SFV_MINI_WORLD
    weights = world / "stack" / "unet" / "diffusion_pytorch_model.safetensors"
    st = weights.stat()
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0x01                            # bit rot: same size ...
    weights.write_bytes(bytes(data))
    os.utime(weights, ns=(st.st_atime_ns, st.st_mtime_ns))  # ... same mtime
    with pytest.raises(UserError, match="does not match its sha256 in manifest.json"):
        verified("stack")


class _ThreeOutputs:                   # a TorchScript "detector" returning (B, 3): the channel means
    @staticmethod
    def save(path):
        import torch

        class Wrong(torch.nn.Module):
            def forward(self, x: torch.Tensor, rescale: bool = False, resize: bool = False,
                        return_features: bool = True) -> torch.Tensor:
                return x.mean(dim=(2, 3, 4))

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.jit.script(Wrong()).save(str(path))
        return path


def _bad_pickle(path):
    import pickle

    with open(path, "wb") as f:
        pickle.dump({"w": _Thing()}, f)
    return path


class _Thing:
    pass


@pytest.mark.parametrize("make, extra, message", [
    (_ThreeOutputs.save, ["--trust-detector"], "returned (2, 3) for 2 clips, not (2, 400)"),
    (lambda p: p.write_bytes(os.urandom(4096)) and p, [], "cannot be read as a TorchScript module or a torch state dict"),
    (_bad_pickle, [], "cannot be read as a TorchScript module or a torch state dict"),
])
def test_bad_detector_files_one_line(make, extra, message, tmp_path, synthetic_root, capsys):
    det = tmp_path / "det.pt"
    make(det)
    capsys.readouterr()
    rc = main([*RUN, "--methods", "dummy:1", "--fvd-batch-size", "2", "--detector", str(det), *extra,
               "--out", str(tmp_path / "r")])
    err = _one_line_error(capsys, rc)
    assert message in err and "file an issue" not in err
    assert not (tmp_path / "r" / "samples").exists()


# ------------------------------------------------------------------------------------------------ faults

def test_truncated_sample_regenerated_in_its_batch_gives_the_clean_table(clean, tmp_path):
    """A sample made in a batch of 2 and regenerated alone differs in its last bits (kernels round by batch
    size); regenerated in its clean-run batch it is bit-equal, and so is the table."""
    out = _copy(clean, tmp_path)
    files = sorted((out / "samples" / "onestep_1").rglob("*.npz"))
    want = np.load(files[1])["video"]
    files[1].write_bytes(files[1].read_bytes()[:100])
    assert _run(out) == 0
    assert np.array_equal(np.load(files[1])["video"], want)
    assert _table(out) == _table(clean)


def test_interval_not_computable_or_below_zero_is_not_printed_as_one(tmp_path, synthetic_root, capsys):
    from bench.report import render_csv

    out = tmp_path / "n2"
    capsys.readouterr()
    assert main(["run", "--world", "tiny", "-n", "2", "--no-previews", "--methods", "dummy:1", "--out", str(out)]) == 0
    console = capsys.readouterr().out
    assert "nan" not in console.lower() and "none (N=2: needs >= 4 videos)," in console
    assert _records(out)[0]["fvd_interval"] is None
    for text in ((out / "table.md").read_text(), (out / "table.csv").read_text()):
        assert "none (N=2: needs >= 4 videos)" in text and "nan" not in text.lower()
    rec = {**_records(out)[0], "fvd_interval": [-277.31, 340.2], "n_fake": 4}      # N = 4 can reach below 0
    assert "[0 (clipped), 340.20]" in render_csv([rec])
    from sfv_fvd.stats import interval_text                                   # the console's text

    assert interval_text([-277.31, 340.2], 4) == "[0 (clipped), 340.20]"


def test_second_run_into_a_held_folder_is_refused_naming_the_lock(tmp_path, synthetic_root, monkeypatch):
    """While one `sfv-bench run` writes into a folder (here: this process, inside its generation), another
    process's run into it stops with one line naming the lock; the first one's row lands."""
    import bench.run

    out = tmp_path / "shared"
    second = {}
    real = bench.run.generate_method

    def generate_and_start_another(*args, **kw):
        if not second:
            env = {**os.environ, "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1"}
            second["p"] = subprocess.run([sys.executable, "-m", "bench", *RUN, "--methods", "dummy:2", "--out", str(out)],
                                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
        return real(*args, **kw)

    monkeypatch.setattr(bench.run, "generate_method", generate_and_start_another)
    assert _run(out, "dummy:1") == 0
    p = second["p"]
    err = p.stderr.strip().splitlines()
    assert p.returncode == 2 and len(err) == 1, p.stderr
    assert ".sfv-bench.lock" in err[0] and "in use (sfv-bench run, pid" in err[0]
    assert [r["spec"] for r in _records(out)] == ["dummy:1"]
    assert not (out / "samples" / "dummy_2").exists()
