"""`sfv-bench regress`: equal runs pass, a 20% slower run fails at 10%, unlike runs are refused; the
noise model (slower than the tolerance and current p10 above baseline p90), broken medians,
results.jsonl pairs and wrong files."""
from __future__ import annotations

import argparse
import copy
import json
import math

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
        "methods": [{"spec": "svd:25", "frames": 14, "unet_loop_ms": 3300.0 * scale, "unet_loop": s(3300.0),
                     "e2e": {"total_ms": 3460.0 * scale}},
                    {"spec": "sfv:1", "frames": 14, "unet_loop_ms": 71.0 * scale, "unet_loop": s(71.0),
                     "e2e": {"total_ms": 230.0 * scale}}],
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
    cur["unet_pass"]["batch2"].update(median_ms=150.0, p10_ms=147.0, p90_ms=153.0)  # the whole band moved
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


def _band(r: dict, group: str, key: str, median: float, p10: float, p90: float) -> None:
    r[group][key].update(median_ms=median, p10_ms=p10, p90_ms=p90)


def test_noisy_back_to_back_runs_pass_but_a_separated_slowdown_fails(tmp_path, capsys):
    """Medians 30% apart with overlapping p10-p90 bands (a busy machine's slow tail) pass; the same
    medians with the current p10 above the baseline p90 fail."""
    base, noisy, slow = _result(), _result(), _result()
    _band(base, "unet_pass", "batch1", 70.0, 66.0, 85.0)
    _band(noisy, "unet_pass", "batch1", 91.0, 68.0, 120.0)     # +30%, p10 68 < baseline p90 85
    _band(slow, "unet_pass", "batch1", 91.0, 88.0, 99.0)       # +30%, p10 88 > baseline p90 85
    b = _write(tmp_path, "base", base)
    capsys.readouterr()
    assert _run(b, _write(tmp_path, "noisy", noisy)) == 0
    out = capsys.readouterr().out
    assert "noise     unet_pass.batch1" in out and "1 metric(s) slower than +10% but within the noise" in out
    assert "no regression" in out
    assert _run(b, _write(tmp_path, "slow", slow)) == 1
    assert "unet_pass.batch1 70.000 -> 91.000 ms (+30.0%)" in capsys.readouterr().out


def test_separated_but_within_tolerance_passes(tmp_path):
    cur = _result()
    _band(cur, "components", "vae_encode", 6.3, 6.25, 6.35)  # +5%, bands apart, below 10%
    assert _run(_write(tmp_path, "base", _result()), _write(tmp_path, "cur", cur)) == 0


def test_end_to_end_band_comes_from_its_parts(tmp_path, capsys):
    """The total has no summary of its own: its band is the total plus the sums of its parts' p10 and
    p90 offsets. A total 12% slower is noise when a part (the VAE decode) is noisy, a regression when
    every part is tight."""
    base, cur = _result(), _result()
    for r in (base, cur):
        _band(r, "components", "vae_decode_14f", 150.0, 130.0, 190.0)
    cur["methods"][1]["e2e"]["total_ms"] = 230.0 * 1.12
    assert _run(_write(tmp_path, "base", base), _write(tmp_path, "cur", cur)) == 0
    out = capsys.readouterr().out
    assert "noise     methods.sfv:1.e2e.total_ms: baseline 230.000 ms [p10 208.420, p90 271.580]" in out
    tight = _result()
    tight["methods"][1]["e2e"]["total_ms"] = 230.0 * 1.12
    assert _run(_write(tmp_path, "base", _result()), _write(tmp_path, "tight", tight)) == 1


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), None, 0.0, "12"])
def test_broken_medians_never_pass(tmp_path, bad):
    cur = _result()
    cur["unet_pass"]["batch2"]["median_ms"] = bad
    path = tmp_path / "cur.json"
    path.write_text(json.dumps(cur))  # json writes NaN / Infinity, as json.dump of a NaN timing would
    with pytest.raises(UserError, match="unet_pass.batch2 has median") as e:
        _run(_write(tmp_path, "base", _result()), str(path))
    assert "\n" not in str(e.value) and "cur.json" in str(e.value)
    if bad is not None and not isinstance(bad, str) and math.isnan(bad):
        with pytest.raises(UserError, match="never passes"):
            _run(str(path), _write(tmp_path, "base", _result()))


def _records(scale=1.0, spread=(0.98, 1.02), **override):
    out = []
    for spec, sec in (("svd:25", 3.3), ("sfv:1", 0.07)):
        m = sec * scale
        rec = {"spec": spec, "method": spec.split(":")[0], "status": "ok", "fvd": 100.0,
               "device_name": "NVIDIA H200", "device": "cuda", "dtype": "float16",
               "protocol": {"num_frames": 14, "fps": 7, "seed": 0},
               "latency": {"median_s": m, "p10_s": m * spread[0], "p90_s": m * spread[1], "min_s": m * 0.9,
                           "mean_s": m, "n": 64, "clock": "cuda-events"}}
        rec.update(override)
        out.append(rec)
    return out + [{"spec": "real", "method": "real", "status": "ok", "fvd": 20.0, "latency": None}]  # no UNet


def _jsonl(tmp_path, name, records):
    path = tmp_path / name / "results.jsonl"
    path.parent.mkdir(exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return str(path)


def test_results_jsonl_pair(tmp_path, capsys):
    base = _jsonl(tmp_path, "base", _records())
    assert _run(base, _jsonl(tmp_path, "same", _records())) == 0
    assert _run(base, str(tmp_path / "same")) == 0  # the run folder works as well
    assert _run(base, _jsonl(tmp_path, "noisy", _records(1.3, spread=(0.7, 1.4)))) == 0
    capsys.readouterr()
    assert _run(base, _jsonl(tmp_path, "slow", _records(1.3))) == 1
    out = capsys.readouterr().out
    assert "2 metric(s) slower than +10%" in out and "sfv:1.latency 70.000 -> 91.000 ms (+30.0%)" in out
    with pytest.raises(UserError, match=r"svd:25: dtype \('float16' vs 'bfloat16'\)"):
        _run(base, _jsonl(tmp_path, "bf16", _records(dtype="bfloat16")))
    with pytest.raises(UserError, match="protocol"):
        _run(base, _jsonl(tmp_path, "proto", _records(protocol={"num_frames": 25, "fps": 7, "seed": 0})))
    threads = _records()
    threads[1]["latency"]["threads"] = 4
    with pytest.raises(UserError, match=r"sfv:1: latency.threads \(None vs 4\)"):
        _run(base, _jsonl(tmp_path, "threads", threads))
    with pytest.raises(UserError, match=r"sfv:1.latency has no median \(record status 'failed'\)"):
        _run(base, _jsonl(tmp_path, "failed", _records()[:1] + [{**_records()[1], "status": "failed",
                                                                  "latency": None}]))
    nan = _records()
    nan[0]["latency"]["median_s"] = float("nan")
    with pytest.raises(UserError, match="svd:25.latency has median nan"):
        _run(base, _jsonl(tmp_path, "nan", nan))


@pytest.mark.parametrize("content,says", [
    ("", "is empty, not a latency.json or results.jsonl"),
    ("[1, 2]", "not an `sfv-bench latency` result (schema 'list'"),
    ('{"spec_list": []}', "not an `sfv-bench latency` result (schema None"),
    ("hello\n", "is not a JSON file"),
    (b"\xff\xfe\x00binary", "is not a JSON file (not text)"),
    ('{"spec": "svd:1", "latency": {"median_s": 1}}\nnot json\n', ":2 is not a JSON record"),
])
def test_wrong_files_get_one_line(tmp_path, content, says):
    path = tmp_path / "thing.txt"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(UserError) as e:
        _run(_write(tmp_path, "good", _result()), str(path))
    msg = str(e.value)
    assert says in msg and "\n" not in msg and str(path) in msg
    if ":2 is not" not in says:
        assert "pass the latency.json of `sfv-bench latency` or the results.jsonl of `sfv-bench run`" in msg


def test_folders_and_mixed_kinds(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="folder without latency.json or results.jsonl"):
        _run(str(tmp_path / "empty"), str(tmp_path / "empty"))
    with pytest.raises(UserError, match="cannot compare a latency.json .* with a results.jsonl"):
        _run(_write(tmp_path, "lat", _result()), _jsonl(tmp_path, "run", _records()))
