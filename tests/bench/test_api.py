"""The library API (bench.api): compute_fvd and generate_video in one call, lazy and torch-free `import bench`."""
from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import bench
from sfv_fvd.detectors import load_detector
from sfv_fvd.features import compute_stats
from sfv_core.data.videoio import save_array
from sfv_core.errors import UserError

ROOT = Path(__file__).resolve().parents[2]
T = 9   # I3D's minimum


@pytest.fixture(scope="module")
def toy():
    return load_detector("toy")


@pytest.fixture(scope="module")
def videos():
    rng = np.random.default_rng(0)
    real = rng.integers(0, 256, (2, T, 32, 32, 3), dtype=np.uint8)
    fake = np.clip(real.astype(int) + rng.integers(-60, 60, real.shape), 0, 255).astype(np.uint8)
    return real, fake


@pytest.fixture(scope="module")
def ref(toy, videos):
    return bench.compute_fvd(*videos, toy)


def test_import_bench_and_cli_is_torch_free_and_names_are_lazy():
    code = ("import sys, bench, bench.cli; names = dir(bench); "
            "print(all(n in names for n in ('compute_fvd', 'generate_video', 'get_method', 'load_detector')), "
            "any(m == 'torch' or m.startswith('torch.') for m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.stdout.split() == ["True", "False"], out.stderr
    from bench import compute_fvd, generate_video, get_method, load_detector as ld
    from bench.api import compute_fvd as cf, generate_video as gv
    from methods.registry import get_method as gm
    assert (compute_fvd, generate_video, get_method, ld) == (cf, gv, gm, load_detector)
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        bench.nope  # noqa: B018


def test_load_detector_needs_a_spec():
    with pytest.raises(UserError) as e:
        load_detector()
    msg = str(e.value)
    assert "\n" not in msg and all(w in msg for w in ("'toy'", "not comparable", "'stylegan-v'", "'tats'", "path"))
    with pytest.raises(UserError, match="no FVD detector given"):
        load_detector(None)


def test_compute_fvd_layouts_and_value_ranges_agree(toy, videos, ref):
    real, fake = videos
    assert ref["fvd"] > 0 and (ref["n_real"], ref["n_fake"], ref["covariance"]) == (2, 2, "biased")
    assert "toy detector" in ref["detector"]
    chw01 = torch.from_numpy(real).permute(0, 1, 4, 2, 3).float() / 255           # (B, T, 3, H, W) in [0, 1]
    signed = fake.astype(np.float32) / 127.5 - 1                                  # (B, T, H, W, 3) in [-1, 1]
    longer = [torch.from_numpy(np.concatenate([c, c[:2]])).permute(0, 3, 1, 2) for c in fake]   # (T+2, 3, H, W)
    for r in (bench.compute_fvd(chw01, signed, toy), bench.compute_fvd(list(real), longer, toy, num_frames=T)):
        assert r["fvd"] == pytest.approx(ref["fvd"], rel=1e-9)


def test_compute_fvd_folders_and_statistics(toy, videos, ref, tmp_path):
    real, fake = videos
    for name, vids in (("real", real), ("fake", fake)):
        for i, v in enumerate(vids):
            save_array(tmp_path / name / f"v{i}.npy", v)
    folders = bench.compute_fvd(tmp_path / "real", str(tmp_path / "fake"), "toy", num_frames=T)
    assert folders["fvd"] == pytest.approx(ref["fvd"], rel=1e-9)
    stats = compute_stats(toy, real)
    stats.metadata = {"detector_sha256": toy.sha256, "protocol": {"num_frames": T, "fps": 7}}
    stats.save(tmp_path / "real.npz")
    for r in (stats, tmp_path / "real.npz"):
        assert bench.compute_fvd(r, tmp_path / "fake", toy)["fvd"] == pytest.approx(ref["fvd"], rel=1e-9)
    with pytest.raises(UserError, match="hold 9-frame clips, not num_frames=10"):
        bench.compute_fvd(tmp_path / "real.npz", fake, toy, num_frames=10)
    stats.save(tmp_path / "other.npz", {"detector_sha256": "0" * 64})
    with pytest.raises(UserError, match="computed with detector sha256 000000000000"):
        bench.compute_fvd(tmp_path / "other.npz", fake, toy)


def test_compute_fvd_refuses_other_inputs_in_one_line(toy, videos, tmp_path):
    real, fake = videos
    cases = [
        ((real[0], fake), "real: expected a (B, T, H, W, 3) or (B, T, 3, H, W)"),
        (("/no/such/dir", fake), "got str '/no/such/dir' (no such folder)"),
        ((real, tmp_path / "x.npz"), "statistics are accepted for the real side only"),
        ((real, {"a": 1}), "fake: expected"),
        ((real.astype(np.int64), fake), "dtype int64"),
        ((real.astype(np.float32), fake), "float values must lie in [0, 1] or [-1, 1], got 0..255"),
        ((real, fake[:, :5]), "I3D needs at least 9"),
        ((real, fake[:1]), "at least 2 videos on each side"),
        ((real, fake[:, :, :, :, :2]), "fake: expected"),
    ]
    for args, message in cases:
        with pytest.raises(UserError) as e:
            bench.compute_fvd(*args, toy)
        assert message in str(e.value) and "\n" not in str(e.value), (message, str(e.value))
    with pytest.raises(UserError, match="detector: expected 'toy'"):
        bench.compute_fvd(real, fake, 3)
    with pytest.raises(UserError, match="covariance must be"):
        bench.compute_fvd(real, fake, toy, covariance="n-1")


def test_generate_video_accepts_pil_torch_and_numpy_images():
    rng = np.random.default_rng(1)
    img = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    kw = dict(method="svd:2", stack="tiny", num_frames=3, width=32, height=32, seed=3, device="cpu")
    ref = bench.generate_video(img, **kw)
    assert ref.shape == (3, 32, 32, 3) and ref.dtype == np.uint8
    chw = torch.from_numpy(img).permute(2, 0, 1).float() / 255
    for image in (Image.fromarray(img), chw):
        np.testing.assert_array_equal(bench.generate_video(image, **kw), ref)


def test_generate_video_uses_the_native_size_and_says_it_stretches(caplog):
    img = np.full((32, 48, 3), 100, np.uint8)
    with caplog.at_level(logging.WARNING, logger="bench.api"):
        video = bench.generate_video(img, "svd:1", "tiny", num_frames=2, device="cpu", max_guidance=1.0)
    assert video.shape == (2, 64, 64, 3)
    assert [r.getMessage() for r in caplog.records] == ["stretching 48x32 -> 64x64 (the pipeline's rule)"]
    caplog.clear()
    bench.generate_video(img, "svd:1", "tiny", num_frames=2, width=48, height=32, max_guidance=1.0)
    assert "stretching" not in caplog.text


def test_generate_video_bad_inputs_are_one_line_errors():
    img = np.zeros((32, 32, 3), np.uint8)
    cases = [
        ((np.zeros((32, 32)),), {}, "image: expected a PIL image"),
        ((np.zeros((2, 32, 32, 3)),), {}, "image: expected"),
        (("/no/such.png",), {}, "image: cannot read /no/such.png"),
        ((np.full((32, 32, 3), 2.0),), {}, "float values must lie in [0, 1] or [-1, 1], got 2..2"),
        ((img,), {"width": 32}, "give both width and height"),
        ((img, "svd:2", "tiny"), {"width": 36, "height": 32}, "multiples of 8"),
        ((img, "nosuch:2"), {}, "unknown method 'nosuch'"),
        ((img, "svd:2", "/no/such/stack"), {}, "stack folder /no/such/stack does not exist"),
    ]
    for args, kw, message in cases:
        with pytest.raises(UserError) as e:
            bench.generate_video(*args, num_frames=2, device="cpu", **kw)
        assert message in str(e.value) and "\n" not in str(e.value), (message, str(e.value))
