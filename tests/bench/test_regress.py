"""`sfv-bench regress`: equal runs pass, a 20% slower run fails at 10%, unlike runs are refused."""
from __future__ import annotations

import argparse
import copy

import pytest

from bench.latency import regress
from sfv_core.errors import UserError
from sfv_core.fsutil import atomic_write_json


def _result(scale: float = 1.0) -> dict:
    """A result in `sfv-bench latency`'s schema (only the fields regress reads, plus some others)."""
    def s(ms):
        return {"median_ms": ms * scale, "p10_ms": ms * scale * 0.98, "p90_ms": ms * scale * 1.02,
                "min_ms": ms * scale * 0.97, "n": 20}

    return {
        "schema": regress.SCHEMA,
        "env": {"gpu_name": "NVIDIA H200", "driver": "570.1", "torch": "2.13.0", "cuda": "12.8",
                "cpu": "x", "threads": 16},
        "options": {"dtype": "bf16", "attention": "default", "channels_last": False, "compile": True,
                    "cuda_graphs": True},
        "shape": {"name": "paper", "num_frames": 14, "height": 576, "width": 1024, "latent": [14, 4, 72, 128]},
        "models": {"unet_params": 1524623082, "vae_params": 97742847, "image_encoder_params": 632076800},
        "decode_chunk_size": 14,
        "unet_pass": {"batch1": s(70.0), "batch2": s(130.0)},
        "components": {"image_encoder": s(2.0), "vae_encode": s(6.0), "vae_decode_14f": s(150.0)},
        "methods": [{"spec": "svd:25", "unet_loop_ms": 3300.0 * scale, "e2e": {"total_ms": 3460.0 * scale}},
                    {"spec": "sfv:1", "unet_loop_ms": 71.0 * scale, "e2e": {"total_ms": 230.0 * scale}}],
    }


def _write(tmp_path, name, obj):
    path = tmp_path / f"{name}.json"
    atomic_write_json(path, obj)
    return str(path)


def _run(base, cur, tol="10"):
    return regress.cli_regress(argparse.Namespace(baseline=base, current=cur, tolerance=tol))


def test_equal_and_faster_runs_pass(tmp_path, capsys):
    base = _write(tmp_path, "base", _result())
    assert _run(base, _write(tmp_path, "same", _result())) == 0
    assert _run(base, _write(tmp_path, "faster", _result(0.7))) == 0
    assert _run(base, _write(tmp_path, "slightly", _result(1.09))) == 0  # within +10%
    assert "no regression" in capsys.readouterr().out


def test_twenty_percent_slower_fails_at_ten_percent(tmp_path, capsys):
    base = _write(tmp_path, "base", _result())
    slow = _write(tmp_path, "slow", _result(1.2))
    capsys.readouterr()
    assert _run(base, slow, "10%") == 1
    out = capsys.readouterr().out
    assert "9 metric(s) slower than +10%" in out
    assert "unet_pass.batch1 70.000 -> 84.000 ms (+20.0%)" in out
    assert "methods.sfv:1.e2e.total_ms 230.000 -> 276.000 ms (+20.0%)" in out
    assert _run(base, slow, "25") == 0


def test_one_regressed_metric_is_named(tmp_path, capsys):
    cur = _result()
    cur["unet_pass"]["batch2"]["median_ms"] = 150.0
    base = _write(tmp_path, "base", _result())
    capsys.readouterr()
    assert _run(base, _write(tmp_path, "cur", cur)) == 1
    out = capsys.readouterr().out
    assert "1 metric(s) slower" in out and "unet_pass.batch2 130.000 -> 150.000 ms (+15.4%)" in out


@pytest.mark.parametrize("field,value,named", [
    (("env", "gpu_name"), "NVIDIA A100-SXM4-80GB", "env.gpu_name"),
    (("env", "torch"), "2.12.0", "env.torch"),
    (("options", "dtype"), "fp16", "options.dtype"),
    (("options", "compile"), False, "options.compile"),
    (("decode_chunk_size",), 7, "decode_chunk_size"),
])
def test_unlike_runs_are_refused_with_the_reason(tmp_path, field, value, named):
    other = copy.deepcopy(_result())
    target = other
    for k in field[:-1]:
        target = target[k]
    target[field[-1]] = value
    base = _write(tmp_path, "base", _result())
    with pytest.raises(UserError, match="not comparable") as e:
        _run(base, _write(tmp_path, "other", other))
    msg = str(e.value)
    assert named in msg and repr(value) in msg and "\n" not in msg


def test_main_exits_2_with_one_line(tmp_path, capsys):
    other = _result()
    other["options"]["dtype"] = "fp32"
    from bench.cli import main

    rc = main(["regress", _write(tmp_path, "a", _result()), _write(tmp_path, "b", other)])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "options.dtype ('bf16' vs 'fp32')" in err


def test_bad_files_and_tolerance(tmp_path):
    good = _write(tmp_path, "good", _result())
    with pytest.raises(UserError, match="does not exist"):
        _run(good, str(tmp_path / "missing.json"))
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(UserError, match="not a JSON file"):
        _run(good, str(tmp_path / "bad.json"))
    with pytest.raises(UserError, match="not an `sfv-bench latency` result"):
        _run(good, _write(tmp_path, "other", {"schema": "something-else"}))
    with pytest.raises(UserError, match="--tolerance takes a percentage"):
        _run(good, good, "ten")
