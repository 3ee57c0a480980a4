"""videoio's two container readers: decord and PyAV give identical frames and info on mpeg4 AVI/MP4
and on the synthetic dataset; undecodable files and bad indices raise VideoDecodeError with both."""
from __future__ import annotations

import numpy as np
import pytest

from sfv_core.data import videoio
from sfv_core.data.synthetic import make_synthetic
from sfv_core.data.videoio import VideoDecodeError, read_video, video_info, write_video
from sfv_core.errors import UserError

needs_decord = pytest.mark.skipif(not videoio._have_decord(), reason="decord does not import here")
BACKENDS = [pytest.param("decord", marks=needs_decord), "pyav"]


def _both(monkeypatch, fn, *args):
    out = []
    for name in videoio.BACKENDS:
        monkeypatch.setenv(videoio.BACKEND_ENV, name)
        assert videoio.backend() == name
        out.append(fn(*args))
    return out


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    """Random-noise mpeg4 AVI and MP4 (the hardest case for a codec) and two synthetic dataset AVIs."""
    d = tmp_path_factory.mktemp("videos")
    noise = np.random.default_rng(0).integers(0, 256, (13, 48, 64, 3), dtype=np.uint8)
    paths = []
    for ext in (".avi", ".mp4"):
        write_video(d / f"noise{ext}", noise, fps=25)
        paths.append(d / f"noise{ext}")
    root = make_synthetic(d / "syn", seed=0, classes=1, groups=3, clips=1, frames=24)
    paths += sorted((root / "UCF-101").rglob("*.avi"))[:2]
    return paths


@needs_decord
def test_backends_give_identical_frames_and_info(videos, monkeypatch):
    for path in videos:
        info_d, info_a = _both(monkeypatch, video_info, path)
        assert info_d == info_a, path
        n = info_d[0]
        full_d, full_a = _both(monkeypatch, read_video, path)
        assert full_d.dtype == full_a.dtype == np.uint8 and full_d.shape == full_a.shape == (n, info_d[3], info_d[2], 3)
        assert np.array_equal(full_d, full_a), f"{path}: max diff {np.abs(full_d.astype(int) - full_a).max()}"
        pick = [n - 1, 0, 3, 3, n // 2]  # unsorted, repeated
        sub_d, sub_a = _both(monkeypatch, read_video, path, pick)
        assert np.array_equal(sub_d, sub_a) and np.array_equal(sub_a, full_a[pick])


def test_expected_info_of_the_written_files(videos, monkeypatch):
    monkeypatch.setenv(videoio.BACKEND_ENV, "pyav")
    assert video_info(videos[0]) == (13, 25.0, 64, 48)
    assert video_info(videos[2]) == (24, 25.0, 320, 240)
    assert read_video(videos[0], []).shape == (0, 48, 64, 3)


@pytest.mark.parametrize("name", BACKENDS)
def test_errors_name_the_path(tmp_path, videos, monkeypatch, name):
    monkeypatch.setenv(videoio.BACKEND_ENV, name)
    garbage = tmp_path / "garbage.avi"
    garbage.write_bytes(np.random.default_rng(1).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    for fn in (video_info, read_video):
        with pytest.raises(VideoDecodeError, match="garbage.avi"):
            fn(garbage)
        with pytest.raises(VideoDecodeError, match="missing.mp4"):
            fn(tmp_path / "missing.mp4")
    with pytest.raises(VideoDecodeError, match="out of range \\(video has 13 frames\\)"):
        read_video(videos[0], [0, 13])
    with pytest.raises(VideoDecodeError, match="out of range"):
        read_video(videos[0], [-1])


def test_backend_choice(monkeypatch):
    monkeypatch.delenv(videoio.BACKEND_ENV, raising=False)
    assert videoio.backend() == ("decord" if videoio._have_decord() else "pyav")
    monkeypatch.setenv(videoio.BACKEND_ENV, "opencv")
    with pytest.raises(UserError, match="use decord or pyav"):
        videoio.backend()
    monkeypatch.delenv(videoio.BACKEND_ENV)
    monkeypatch.setattr(videoio, "_have_decord", lambda: False)
    assert videoio.backend() == "pyav"
    monkeypatch.setenv(videoio.BACKEND_ENV, "decord")
    with pytest.raises(UserError, match="SFV_VIDEO_BACKEND=pyav"):
        videoio.backend()


def test_gif_bytes_loops_every_frame_at_the_frame_rate_and_stays_close():
    """The one GIF encoder (previews and TensorBoard): every distinct frame, 1000/fps ms each, looping,
    colours within a few levels of the source after the per-frame palette."""
    import io

    import numpy as np
    from PIL import Image

    from sfv_core.data.videoio import gif_bytes

    y, x = np.mgrid[0:24, 0:32]
    frames = np.stack([np.stack([(x * 8 + 40 * t) % 256, y * 10, np.full_like(x, 60 * t)], -1)
                       for t in range(4)]).astype(np.uint8)
    gif = Image.open(io.BytesIO(gif_bytes(frames, 7)))
    assert (gif.n_frames, gif.size, gif.info["loop"]) == (4, (32, 24), 0)
    assert abs(gif.info["duration"] - 1000 / 7) < 10          # GIF stores centiseconds: 140 ms
    for t in range(4):
        gif.seek(t)
        assert np.abs(np.asarray(gif.convert("RGB"), int) - frames[t]).mean() < 8


def test_pyav_only_where_a_container_is_read_or_written(tmp_path):
    """With PyAV absent (the GPU check's payload carries none), the commands import and arrays round-trip;
    only a container read or write needs it."""
    import subprocess
    import sys

    code = f"""
import sys
sys.modules["av"] = None                                   # import av -> ImportError
import numpy as np
import bench.cli, bench.run, bench.generate, bench.latency.benchmark, sfv_train.data
from sfv_core.data.videoio import read_video, save_array, write_video
v = np.arange(2 * 4 * 4 * 3, dtype=np.uint8).reshape(2, 4, 4, 3)
save_array({str(tmp_path / 'v.npz')!r}, v)
assert (read_video({str(tmp_path / 'v.npz')!r}) == v).all()
try:
    write_video({str(tmp_path / 'v.avi')!r}, v, 7)
except ImportError:
    print("container needs av")
"""
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr[-2000:]
    assert p.stdout.strip() == "container needs av"
