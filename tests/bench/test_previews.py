"""Labelled previews (bench.previews): GIF + MP4, rows condition | real | generated, title and labels drawn."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from bench.previews import BACKGROUND, MIN_HEIGHT, compose, write_preview
from sfv_core.data.videoio import read_video

T = 5


def _rows(with_real=True):
    rng = np.random.default_rng(0)
    clip = lambda: rng.integers(0, 256, (T, 32, 32, 3), dtype=np.uint8)   # noqa: E731 - every frame differs
    return [(f"v_{i}", rng.integers(0, 256, (32, 32, 3), dtype=np.uint8), clip() if with_real and i != 1 else None,
             clip()) for i in range(3)]


def _contains(frame, patch) -> bool:
    ys, xs = np.nonzero((frame == patch[0, 0]).all(-1))
    return any(np.array_equal(frame[y:y + len(patch), x:x + patch.shape[1]], patch) for y, x in zip(ys, xs))


def test_write_preview_gif_and_mp4(tmp_path):
    title = "svd:25 - mini world (not the paper's numbers)"
    gif, mp4 = write_preview(tmp_path / "previews" / "svd_25", _rows(), 7, title)
    assert (gif.name, mp4.name) == ("svd_25.gif", "svd_25.mp4")
    assert sorted(p.name for p in gif.parent.iterdir()) == ["svd_25.gif", "svd_25.mp4"]   # no temp files left
    with Image.open(gif) as im:
        assert im.n_frames == T
        first = np.asarray(im.convert("RGB"))
        width, height = im.size
    video = read_video(mp4)
    assert video.shape == (T, height, width, 3)
    assert gif.stat().st_size < 2_000_000
    header = first[:24].astype(int)     # title and column captions
    assert (np.abs(header - BACKGROUND) > 60).sum() > 100
    assert (np.abs(video[0, :24].astype(int) - BACKGROUND) > 60).sum() > 100


def test_compose_scales_small_frames_and_draws_text():
    rows = _rows()
    frames = compose(rows, "title")
    blank = compose(rows, "")
    assert frames.shape[0] == T and frames.shape[1] >= 3 * MIN_HEIGHT
    assert not np.array_equal(frames[:, :12], blank[:, :12])          # the title is drawn
    # the generated clip of row 0 appears nearest-neighbour upscaled x4 (32 -> 128), frame by frame
    gen = rows[0][3]
    big = gen.repeat(4, axis=1).repeat(4, axis=2)
    assert _contains(frames[0], big[0]) and _contains(frames[-1], big[-1])
    # no real clips at all: two columns only
    assert compose(_rows(with_real=False), "t").shape[2] < frames.shape[2]


def test_compose_rejects_bad_rows():
    with pytest.raises(ValueError, match="no rows"):
        compose([], "t")
    cond = np.zeros((32, 32, 3), np.uint8)
    with pytest.raises(ValueError, match=r"v generated clip: expected uint8 \(T, H, W, 3\)"):
        compose([("v", cond, None, np.zeros((T, 32, 32), np.uint8))], "t")
