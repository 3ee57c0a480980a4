"""bench.synthetic: UCF-101's layout and split rule, determinism, class-specific motion, the CLI."""
from __future__ import annotations

import json
import re

import numpy as np
import pytest

from bench.cli import main
from sfv_core.data.ucf101 import UCF101
from sfv_core.errors import UserError
from sfv_core.fsutil import sha256_file
from sfv_core.data.synthetic import KINDS, class_names, fold_test_groups, make_synthetic, render_video
from sfv_core.data.videoio import read_video, video_info

NAME = re.compile(r"^v_([A-Za-z0-9]+)_g(\d\d)_c(\d\d)\.avi$")


def test_layout_and_lists(synthetic_root):
    vid, lists = synthetic_root / "UCF-101", synthetic_root / "ucfTrainTestlist"
    names = sorted(p.name for p in vid.iterdir())
    assert names == sorted(class_names(5)) == ["BouncingBall", "DriftingTexture", "PulsingDisk", "RotatingBar",
                                               "SlidingSquare"]
    files = sorted(p.relative_to(vid).as_posix() for p in vid.rglob("*.avi"))
    assert len(files) == 5 * 7 * 2
    for f in files:
        cls, name = f.split("/")
        m = NAME.match(name)
        assert m and m.group(1) == cls and 1 <= int(m.group(2)) <= 7 and 1 <= int(m.group(3)) <= 2
    raw = (lists / "classInd.txt").read_bytes()
    assert raw == b"".join(f"{i} {n}\r\n".encode() for i, n in enumerate(names, 1))   # CRLF, 1-based
    for fold, test_groups in ((1, {1, 2}), (2, {3, 4}), (3, {5, 6})):
        train = (lists / f"trainlist0{fold}.txt").read_bytes().decode().splitlines()
        test = (lists / f"testlist0{fold}.txt").read_bytes().decode().splitlines()
        assert all(len(l.split()) == 2 and l.split()[1] == str(names.index(l.split("/")[0]) + 1) for l in train)
        assert all(len(l.split()) == 1 for l in test)
        train_rel, test_rel = [l.split()[0] for l in train], test
        assert sorted(train_rel + test_rel) == files and not set(train_rel) & set(test_rel)
        assert {int(NAME.match(r.split("/")[1]).group(2)) for r in test_rel} == test_groups   # g07: train
    ds = UCF101(synthetic_root)
    assert [r.rel for r in ds.refs("all", 1)] == files


def test_fold_rule_scales_ucf():
    # 25 groups is UCF-101's own rule: fold 1 tests g01-g07, fold 2 g08-g14, fold 3 g15-g21
    assert [list(fold_test_groups(25, k)) for k in (1, 2, 3)] == [list(range(1, 8)), list(range(8, 15)),
                                                                  list(range(15, 22))]
    assert [list(fold_test_groups(7, k)) for k in (1, 2, 3)] == [[1, 2], [3, 4], [5, 6]]
    assert [list(fold_test_groups(3, k)) for k in (1, 2, 3)] == [[1], [2], [3]]


def test_videos_decode_to_the_rendered_frames(synthetic_root):
    path = synthetic_root / "UCF-101" / "RotatingBar" / "v_RotatingBar_g03_c02.avi"
    assert video_info(path) == (60, 25.0, 320, 240)
    got = read_video(path, [0, 31, 59]).astype(int)
    want = render_video(0, [n for n, _ in KINDS].index("RotatingBar"), 3, 2)[[0, 31, 59]].astype(int)
    assert np.abs(got - want).mean() < 3.0                      # mpeg4 at 800 kbit/s: small loss


def _track(alpha):
    """Per frame: area, centroid (x, y) and orientation (rad) of an alpha mask (T, H, W)."""
    T, H, W = alpha.shape
    ys, xs = np.mgrid[0:H, 0:W].astype(np.float32)
    area = alpha.sum((1, 2))
    cx, cy = (alpha * xs).sum((1, 2)) / area, (alpha * ys).sum((1, 2)) / area
    dx, dy = xs[None] - cx[:, None, None], ys[None] - cy[:, None, None]
    mxx, myy, mxy = [(alpha * m).sum((1, 2)) for m in (dx * dx, dy * dy, dx * dy)]
    return area, cx, cy, 0.5 * np.arctan2(2 * mxy, mxx - myy)


def _alpha(kind, seed):
    T, H, W = 24, 240, 320
    t = np.arange(T, dtype=np.float32)[:, None, None]
    xs, ys = np.arange(W, dtype=np.float32)[None, None, :], np.arange(H, dtype=np.float32)[None, :, None]
    fn = dict(KINDS)[kind]
    return np.broadcast_to(np.asarray(fn(np.random.default_rng(seed), t, xs, ys, W, H, 1.0, 1.0)), (T, H, W))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_motion_is_class_specific(seed):
    area, cx, cy, _ = _track(_alpha("SlidingSquare", seed))      # horizontal only, 3..6 px / frame
    step = np.abs(np.diff(cx))
    assert np.ptp(cy) < 1e-3 and np.ptp(area) / area.mean() < 0.01
    assert 2.5 < np.median(step) < 6.5

    area, cx, cy, _ = _track(_alpha("BouncingBall", seed))       # diagonal, 4..7 px / frame
    speed = np.hypot(np.diff(cx), np.diff(cy))
    assert 3.5 < np.median(speed) < 7.5 and np.ptp(cx) > 20 and np.ptp(cy) > 20

    area, cx, cy, ang = _track(_alpha("RotatingBar", seed))      # fixed centre, 0.06..0.12 rad / frame
    turn = np.abs(np.angle(np.exp(2j * np.diff(ang)))) / 2      # orientation is defined modulo pi
    assert np.ptp(cx) < 0.5 and np.ptp(cy) < 0.5 and np.ptp(area) / area.mean() < 0.05
    assert 0.05 < np.median(turn) < 0.13

    area, cx, cy, _ = _track(_alpha("PulsingDisk", seed))        # fixed centre, radius +-35 %
    assert np.ptp(cx) < 0.5 and np.ptp(cy) < 0.5 and area.max() / area.min() > 2

    tex = _alpha("DriftingTexture", seed)                        # the whole frame moves, evenly
    assert np.abs(np.diff(tex, axis=0)).mean() > 0.05 and np.ptp(tex.mean((1, 2))) < 0.05


def test_every_kind_moves():
    for slot, (name, _) in enumerate(KINDS):
        v = render_video(1, slot, 1, 1, frames=12, width=160, height=120).astype(np.int16)
        step = np.abs(np.diff(v, axis=0)).mean((1, 2, 3))
        assert (step > 0).all() and step.mean() > 0.2, name     # something changes in every frame


def test_deterministic_and_idempotent(tmp_path):
    kw = dict(seed=3, classes=2, groups=3, clips=1, frames=12, width=64, height=48)
    a, b = make_synthetic(tmp_path / "a", **kw), make_synthetic(tmp_path / "b", **kw)
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert len(files) == 2 * 3 + 7 + 1
    assert all(sha256_file(a / f) == sha256_file(b / f) for f in files)          # identical bytes
    c = make_synthetic(tmp_path / "c", **dict(kw, seed=4))
    one = "UCF-101/BouncingBall/v_BouncingBall_g01_c01.avi"
    assert not np.array_equal(read_video(a / one), read_video(c / one))
    stamp = (a / one).stat().st_mtime_ns
    assert make_synthetic(tmp_path / "a", **kw) == a and (a / one).stat().st_mtime_ns == stamp
    with pytest.raises(UserError, match="other parameters"):
        make_synthetic(tmp_path / "a", **dict(kw, seed=5))
    (tmp_path / "real" / "UCF-101").mkdir(parents=True)
    with pytest.raises(UserError, match="did not write"):
        make_synthetic(tmp_path / "real", **kw)
    with pytest.raises(UserError, match="groups >= 3"):
        make_synthetic(tmp_path / "x", **dict(kw, groups=2))


def test_more_classes_than_kinds():
    names = class_names(len(KINDS) + 2)
    assert names[:len(KINDS)] == [n for n, _ in KINDS]
    assert names[len(KINDS):] == [KINDS[0][0] + "2", KINDS[1][0] + "2"] and len(set(names)) == len(names)


def test_cli_make_synthetic(tmp_path, capsys):
    out = tmp_path / "syn"
    assert main(["make-synthetic", str(out), "--classes", "2", "--groups", "3", "--clips", "1",
                 "--frames", "8", "--seed", "1"]) == 0
    text = capsys.readouterr().out
    assert str(out) in text and "6 videos, 2 classes" in text and "needs 47 frames" in text
    assert len(UCF101(out).refs("all", 1)) == 6 and video_info(next(out.rglob("*.avi")))[0] == 8
    assert main(["make-synthetic", str(out), "--groups", "2"]) == 2
    assert "groups >= 3" in capsys.readouterr().err


def test_first_clip_numbers_a_validation_set_beside_the_default(tmp_path):
    """first_clip=6: clips c06.. of the same classes and groups (the bytes a dataset with more clips holds
    there), lists numbered alike; the default's manifest is unchanged (no first_clip key)."""
    kw = dict(seed=0, classes=2, groups=3, clips=2, frames=6, width=32, height=24)
    base = make_synthetic(tmp_path / "base", **kw)
    val = make_synthetic(tmp_path / "val", **kw, first_clip=6)
    more = make_synthetic(tmp_path / "more", **dict(kw, clips=7))                 # c01..c07

    def videos(root):
        return sorted(p.relative_to(root).as_posix() for p in (root / "UCF-101").rglob("*.avi"))

    shift = {"_c01.avi": "_c06.avi", "_c02.avi": "_c07.avi"}
    renamed = [re.sub(r"_c0[12]\.avi", lambda m: shift[m.group(0)], f) for f in videos(base)]
    assert videos(val) == renamed and len(renamed) == 2 * 3 * 2
    assert {NAME.match(f.split("/")[-1]).group(3) for f in videos(val)} == {"06", "07"}
    for f in videos(val):
        assert sha256_file(val / f) == sha256_file(more / f)                      # the same clip c06, c07
    one = "UCF-101/BouncingBall/v_BouncingBall_g02_c0{}.avi"
    assert not np.array_equal(read_video(val / one.format(6)), read_video(base / one.format(1)))
    lists = base / "ucfTrainTestlist"
    for name in ("classInd.txt", *[f"{k}list0{f}.txt" for k in ("train", "test") for f in (1, 2, 3)]):
        text = (lists / name).read_bytes().decode()                                 # CRLF kept
        want = re.sub(r"_c0([12])\.avi", lambda m: f"_c0{int(m.group(1)) + 5}.avi", text)
        assert (val / "ucfTrainTestlist" / name).read_bytes() == want.encode(), name
    assert {r.rel.split("_")[-1] for r in UCF101(val).refs("train", 1)} == {"c06.avi", "c07.avi"}
    params = {r: json.loads((r / "sfv_synthetic.json").read_text())["params"] for r in (base, val)}
    assert set(params[base]) == {"version", "seed", "classes", "groups", "clips", "frames", "width", "height", "fps",
                                 "codec", "bit_rate"}
    assert params[val] == {**params[base], "first_clip": 6}
    assert make_synthetic(val, **kw, first_clip=6) == val                          # made: returns at once
    with pytest.raises(UserError, match="other parameters"):
        make_synthetic(val, **kw)


def test_test_fold_writes_that_folds_test_videos_first_and_the_rest_later(tmp_path):
    """test_fold=1 writes fold 1's test videos and every list (the run's cold start needs no more); a later
    call without it adds the others, keeping those written; the bytes equal a dataset made in one go."""
    kw = dict(seed=0, classes=2, groups=4, clips=1, frames=6, width=32, height=24)
    part = make_synthetic(tmp_path / "part", **kw, test_fold=1)
    test = {line.strip() for line in (part / "ucfTrainTestlist" / "testlist01.txt").read_text().splitlines()}
    have = {p.relative_to(part / "UCF-101").as_posix() for p in part.rglob("*.avi")}
    assert have == test and len(have) == 2 * len(fold_test_groups(4, 1))
    assert len(UCF101(part).refs("train", 1)) == 2 * 3                            # listed, not yet written
    manifest = json.loads((part / "sfv_synthetic.json").read_text())
    assert not manifest["complete"] and manifest["test_folds_written"] == [1]
    one = part / "UCF-101" / "BouncingBall" / "v_BouncingBall_g01_c01.avi"
    stamp = one.stat().st_mtime_ns
    assert make_synthetic(part, **kw, test_fold=1) == part and one.stat().st_mtime_ns == stamp
    make_synthetic(part, **kw)
    whole = make_synthetic(tmp_path / "whole", **kw)
    files = sorted(p.relative_to(whole) for p in whole.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(part) for p in part.rglob("*") if p.is_file())
    assert all(sha256_file(part / f) == sha256_file(whole / f) for f in files if f.suffix == ".avi")
    assert one.stat().st_mtime_ns == stamp and json.loads((part / "sfv_synthetic.json").read_text())["complete"]
    assert make_synthetic(part, **kw, test_fold=2) == part                        # complete: nothing to do
    with pytest.raises(UserError, match="test_fold is 1, 2 or 3"):
        make_synthetic(tmp_path / "x", **kw, test_fold=4)
