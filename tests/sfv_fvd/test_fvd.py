"""FVD end to end: ordering on the synthetic dataset, the real-statistics cache, `sfv-bench fvd`."""
from __future__ import annotations

import numpy as np
import pytest

from bench.cli import main as cli_main
from sfv_fvd import stats as stats_mod
from sfv_fvd.detectors import load_detector
from sfv_fvd.features import cached_stats, compute_stats, stats_cache_key
from sfv_fvd.stats import fvd_from_stats
from sfv_core.fsutil import cache_dir
from sfv_core.data.videoio import list_videos, read_video, save_array

FRAMES, STRIDE = 14, 1     # 14 consecutive frames (0.56 s at 25 fps) from frame 0


@pytest.fixture(scope="module")
def toy():
    return load_detector("toy")


@pytest.mark.slow
def test_ordering_on_synthetic(synthetic_root, toy):
    """Disjoint real halves < real vs the same clips shuffled in time < real vs noise."""
    files = list_videos(synthetic_root / "UCF-101")
    assert len(files) >= 40
    clips = [read_video(f, range(0, FRAMES * STRIDE, STRIDE)) for f in files]
    rng = np.random.default_rng(0)
    half_a, half_b = clips[0::2], clips[1::2]
    shuffled = [c[rng.permutation(FRAMES)] for c in half_b]
    noise = [rng.integers(0, 256, size=c.shape, dtype=np.uint8) for c in half_b]
    a = compute_stats(toy, half_a)
    fvd = {name: fvd_from_stats(a, compute_stats(toy, vids))["fvd"]
           for name, vids in (("halves", half_b), ("shuffled", shuffled), ("noise", noise))}
    assert 0 < fvd["halves"] < fvd["shuffled"] < fvd["noise"], fvd
    assert fvd["shuffled"] > 1.5 * fvd["halves"], fvd


# ------------------------------------------------------------------------------------------ cache

def _tiny_videos(n, seed, t=9, h=24, w=32):
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, size=(n, 1, h, w, 3)).astype(np.int16)
    drift = np.arange(t)[None, :, None, None, None] * rng.integers(-6, 7, size=(n, 1, 1, 1, 3))
    return list(np.clip(base + drift, 0, 255).astype(np.uint8))


def cached_real_stats(parts, make_videos, detector, batch_size, name_prefix):
    """The one cache with a plain (single-process) feature computation, as `sfv-bench fvd` uses it."""
    parts = dict(parts)
    files = parts.pop("files")
    return cached_stats(files, parts, detector, lambda: (compute_stats(detector, make_videos(), batch_size), {}),
                        label=name_prefix)


class _Factory:
    def __init__(self, videos):
        self.videos, self.calls = videos, 0

    def __call__(self):
        self.calls += 1
        return iter(self.videos)


def test_cache_hit_and_miss(toy, tmp_path):
    videos = _tiny_videos(5, 0)
    files = [tmp_path / f"v{i}.npy" for i in range(5)]
    parts = {"files": files, "num_frames": 9, "size": None}
    make = _Factory(videos)
    s1, hit1, p1 = cached_real_stats(parts, make, toy, batch_size=2, name_prefix="test")
    s2, hit2, p2 = cached_real_stats(parts, make, toy, batch_size=2, name_prefix="test")
    assert (hit1, hit2, make.calls) == (False, True, 1)
    assert p1 == p2 and p1.parent == cache_dir("stats") and p1.name.startswith("test-")
    assert s2.n == 5 and np.array_equal(s1.sum_outer, s2.sum_outer)
    assert s2.metadata["detector_sha256"] == toy.sha256 and s2.metadata["n"] == 5
    s3, hit3, p3 = cached_real_stats(dict(parts, num_frames=10), make, toy, batch_size=2, name_prefix="test")
    assert (hit3, make.calls) == (False, 2) and p3 != p1
    k = stats_cache_key(files, {"num_frames": 9}, toy.sha256)
    assert k != stats_cache_key(files[:4], {"num_frames": 9}, toy.sha256)
    assert k != stats_cache_key(files, {"num_frames": 9}, "0" * 64)


def test_interrupted_producer_leaves_nothing(toy, tmp_path):
    videos = _tiny_videos(4, 1)

    def broken():
        yield videos[0]
        yield videos[1]
        raise KeyboardInterrupt

    parts = {"files": [tmp_path / "x.npy"], "case": "producer"}
    with pytest.raises(KeyboardInterrupt):
        cached_real_stats(parts, broken, toy, batch_size=1, name_prefix="broken")
    assert list(cache_dir("stats").glob("broken-*")) == [] and list(cache_dir("stats").glob(".broken-*")) == []


def test_interrupted_write_leaves_nothing(toy, tmp_path, monkeypatch):
    videos = _tiny_videos(3, 2)

    def failing_savez(f, **arrays):
        f.write(b"PK\x03\x04 partial")      # a partial archive on disk, then the failure
        f.flush()
        raise OSError("disk full")

    monkeypatch.setattr(stats_mod.np, "savez", failing_savez)
    parts = {"files": [tmp_path / "y.npy"], "case": "write"}
    with pytest.raises(OSError, match="disk full"):
        cached_real_stats(parts, lambda: iter(videos), toy, batch_size=2, name_prefix="partial")
    assert list(cache_dir("stats").glob("*partial*")) == []


# -------------------------------------------------------------------------------------------- CLI

@pytest.fixture()
def folders(tmp_path):
    real, fake = tmp_path / "real", tmp_path / "fake"
    for folder, seed in ((real, 10), (fake, 11)):
        folder.mkdir()
        for i, v in enumerate(_tiny_videos(4, seed, t=10)):
            save_array(folder / f"v{i}.npy", v)
    return real, fake


def test_cli_two_folders_then_cache_then_stats_file(folders, capsys, toy):
    real, fake = folders
    argv = ["fvd", str(real), str(fake), "--num-frames", "9", "--size", "40x30", "--batch-size", "3", "--detector", "toy"]
    assert cli_main(argv) == 0
    out, err = capsys.readouterr()
    assert out.startswith("FVD = ") and "N_real=4, N_fake=4" in out and "toy detector" in out
    assert "covariance: biased, 9 frames at 7 fps at 40x30" in out and "written to cache" in err
    assert "clips: 9 frames at 7 fps from frame 0" in out
    value = float(out.split()[2])
    # The same number from the library, on the same clips.
    from sfv_core.data.transforms import resize_frames
    clips = lambda d: [resize_frames(read_video(f, range(9)), 40, 30) for f in list_videos(d)]  # noqa: E731
    expected = fvd_from_stats(compute_stats(toy, clips(real)), compute_stats(toy, clips(fake)))["fvd"]
    assert value == pytest.approx(expected, abs=0.006)

    assert cli_main(argv) == 0
    out2, err2 = capsys.readouterr()
    assert out2 == out and "read from cache" in err2
    stats_file = err2.strip().split("cache: ")[-1]
    assert cli_main(["fvd", stats_file, str(fake), "--num-frames", "9", "--size", "40x30",
                     "--covariance", "unbiased"]) == 0
    out3, _ = capsys.readouterr()
    assert "N_real=4, N_fake=4" in out3 and "covariance: unbiased" in out3
    assert cli_main(["fvd", stats_file, str(fake), "--num-frames", "10", "--size", "40x30"]) == 2
    assert "match --num-frames/--size" in capsys.readouterr().err


def test_cli_bad_input(folders, tmp_path, capsys):
    real, fake = folders
    cases = [
        (["fvd", str(real), str(fake)], "choose the detector: --detector toy"),
        (["fvd", str(tmp_path / "missing"), str(fake)], "REAL not found"),
        (["fvd", str(real), str(tmp_path / "nofake")], "FAKE folder not found"),
        (["fvd", str(real), str(fake), "--detector", "toy", "--num-frames", "12"], "10 frames, the clip needs 12"),
        (["fvd", str(real), str(fake), "--detector", "toy", "--num-frames", "5"], "--num-frames must be >= 9"),
        (["fvd", str(real), str(fake), "--detector", "toy", "--size", "big"], "--size must be WxH"),
    ]
    (tmp_path / "empty").mkdir()
    cases.append((["fvd", str(real), str(tmp_path / "empty"), "--detector", "toy"], "FAKE folder has no videos"))
    for argv, message in cases:
        assert cli_main(argv) == 2, argv
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err


def test_cli_takes_real_video_clips_by_the_protocol_frame_rule(synthetic_root, tmp_path, capsys, toy):
    """25 fps containers: frame k = round(k * 25 / 7) from frame 0, as `sfv-bench run` takes real clips,
    unless --consecutive."""
    import shutil

    from sfv_core.data.clips import clip_indices

    files = list_videos(synthetic_root / "UCF-101")[:6]
    real, fake = tmp_path / "r", tmp_path / "f"
    for folder, part in ((real, files[:3]), (fake, files[3:])):
        folder.mkdir()
        for f in part:
            shutil.copy(f, folder / f.name)
    idx = clip_indices(60, 25.0, 14, 7)
    assert idx[:4] == [0, 4, 7, 11]
    for extra, frames in (([], idx), (["--consecutive"], list(range(14)))):
        assert cli_main(["fvd", str(real), str(fake), "--detector", "toy", *extra]) == 0
        value = float(capsys.readouterr().out.split()[2])
        stats = [compute_stats(toy, [read_video(f, frames) for f in list_videos(d)]) for d in (real, fake)]
        assert value == pytest.approx(fvd_from_stats(*stats)["fvd"], abs=0.006)


def test_cli_warns_when_real_and_fake_lengths_differ(tmp_path, capsys):
    """16-frame reals against 20/30-frame fakes: scored (both cut to 14 frames) with a warning naming both."""
    real, fake = tmp_path / "r", tmp_path / "f"
    rng = np.random.default_rng(0)
    for folder, lengths in ((real, [16, 16, 16]), (fake, [20, 30, 20])):
        folder.mkdir()
        for i, t in enumerate(lengths):
            np.save(folder / f"v{i}.npy", rng.integers(0, 255, (t, 32, 32, 3), dtype=np.uint8))
    assert cli_main(["fvd", str(real), str(fake), "--detector", "toy", "--consecutive"]) == 0
    err = capsys.readouterr().err
    assert "real videos have 16 frames, the fake ones 20..30" in err, err
