"""bench.data: split lists, seeded selection, the protocol's index/crop rules, bad-data handling."""
from __future__ import annotations

import math
import shutil
import warnings

import numpy as np
import pytest

from sfv_core.data import clips
from sfv_core.data.ucf101 import (UCF101, ClipTooShort, DataRecord, DataWarning, condition_image,
                        iter_samples, load_condition, load_sample, raise_if_too_many_failures, real_clip_frames,
                        select_videos)
from sfv_core.errors import UserError
from sfv_core.protocol import Protocol, tiny_protocol
from sfv_core.seeds import sample_seed


def clip_indices(n_src, src_fps, p, seed):
    return clips.clip_indices(n_src, src_fps, p.num_frames, p.fps, p.clip_start, seed)


def sample_seed_of(seed, ref):
    return sample_seed(seed, ref.seed_name)
from sfv_core.data.transforms import center_crop_to_aspect, resize_cover_crop, resize_frames
from sfv_core.data.videoio import read_video, write_video


# --------------------------------------------------------------------------- split lists and roots

def _handmade(root, lists_inside=False):
    """A two-class UCF-101 tree with real-style lines (CRLF and LF mixed) and no videos."""
    vid = root / "UCF-101"
    for c in ("ApplyEyeMakeup", "HandstandPushups"):
        (vid / c).mkdir(parents=True)
    lists = (vid if lists_inside else root) / "ucfTrainTestlist"
    lists.mkdir()
    (lists / "classInd.txt").write_bytes(b"1 ApplyEyeMakeup\r\n2 HandstandPushups\r\n")
    for fold in (1, 2, 3):
        (lists / f"trainlist0{fold}.txt").write_bytes(
            b"ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 1\n"
            b"HandstandPushups/v_HandStandPushups_g09_c02.avi 2\n")
        (lists / f"testlist0{fold}.txt").write_bytes(
            b"HandstandPushups/v_HandStandPushups_g01_c03.avi\r\n"
            b"ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi\r\n"
            b"ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi\r\n\r\n")   # duplicate + blank line
    return root


def test_split_list_parsing(tmp_path):
    ds = UCF101(_handmade(tmp_path))
    assert ds.classes() == ["ApplyEyeMakeup", "HandstandPushups"]
    train = ds.refs("train", 1)
    assert [r.rel for r in train] == ["ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi",
                                      "HandstandPushups/v_HandStandPushups_g09_c02.avi"]
    r = train[1]
    assert (r.label, r.class_index, r.group, r.clip) == ("HandstandPushups", 2, 9, 2)
    assert (r.sample_id, r.seed_name) == ("HandstandPushups/v_HandStandPushups_g09_c02", "v_HandStandPushups_g09_c02")
    assert r.path == tmp_path / "UCF-101" / "HandstandPushups" / "v_HandStandPushups_g09_c02.avi"
    test = ds.refs("test", 1)                     # no label column; duplicate removed; sorted
    assert [(t.seed_name, t.class_index, t.group, t.clip) for t in test] == [
        ("v_ApplyEyeMakeup_g01_c01", 1, 1, 1), ("v_HandStandPushups_g01_c03", 2, 1, 3)]
    every = ds.refs("all", 1)
    assert [t.rel for t in every] == sorted({t.rel for t in train + test}) and len(every) == 4


def test_label_mismatch_and_unknown_class(tmp_path):
    ds = UCF101(_handmade(tmp_path))
    (ds.list_dir / "trainlist02.txt").write_text("ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 2\n")
    with pytest.raises(UserError, match=r"trainlist02.txt:1: label 2 does not match classInd"):
        ds.refs("train", 2)
    (ds.list_dir / "testlist03.txt").write_text("Nope/v_Nope_g01_c01.avi\n")
    with pytest.raises(UserError, match=r"class 'Nope' is not in .*classInd.txt"):
        ds.refs("test", 3)


@pytest.mark.parametrize("inside", [False, True])
def test_root_forms(tmp_path, inside):
    _handmade(tmp_path, lists_inside=inside)
    lists = (tmp_path / "UCF-101" / "ucfTrainTestlist") if inside else (tmp_path / "ucfTrainTestlist")
    for root in (tmp_path, tmp_path / "UCF-101"):
        ds = UCF101(root)
        assert ds.video_dir == tmp_path / "UCF-101" and ds.list_dir == lists
        assert len(ds.refs("all", 2)) == 4


def test_missing_root_and_files(tmp_path):
    with pytest.raises(UserError, match=r"UCF-101 root not found: .*nowhere.*make-synthetic DIR"):
        UCF101(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match=r"not a UCF-101 root: .*empty.*ucfTrainTestlist.*classInd.txt"):
        UCF101(tmp_path / "empty")
    ds = UCF101(_handmade(tmp_path / "d"))
    (ds.list_dir / "testlist02.txt").unlink()
    with pytest.raises(UserError, match=r"split file not found: .*ucfTrainTestlist/testlist02.txt.*make-synthetic"):
        ds.refs("test", 2)
    assert len(ds.refs("test", 1)) == 2             # the other folds still work
    (ds.list_dir / "classInd.txt").unlink()
    ds = UCF101(tmp_path / "d")
    with pytest.raises(UserError, match=r"split file not found: .*classInd.txt"):
        ds.classes()


# --------------------------------------------------------------------------- selection

def test_selection_deterministic(synthetic_root):
    ds = UCF101(synthetic_root)
    p = Protocol(split="all", num_videos=10, seed=0)
    a, b = select_videos(ds, p), select_videos(ds, p)
    assert a == b and len(a) == 10 and len({r.rel for r in a}) == 10
    assert [r.rel for r in select_videos(ds, p.replace(seed=1))] != [r.rel for r in a]
    assert select_videos(ds, p.replace(num_videos=4)) == a[:4]          # a smaller N is a prefix


def test_selection_ignores_listing_order(synthetic_root, monkeypatch):
    ds = UCF101(synthetic_root)
    p = Protocol(split="test", num_videos=7, seed=5)
    expected = select_videos(ds, p)
    original = ds.refs
    monkeypatch.setattr(ds, "refs", lambda split, fold: list(reversed(original(split, fold))))
    assert select_videos(ds, p) == expected
    pb = p.replace(balanced=True)
    assert select_videos(ds, pb) == select_videos(UCF101(synthetic_root), pb)


def test_selection_balanced_round_robin(synthetic_root):
    ds = UCF101(synthetic_root)
    nc = len(ds.classes())
    sel = select_videos(ds, Protocol(split="test", num_videos=3 * nc, seed=2, balanced=True))
    rounds = [[r.label for r in sel[i * nc:(i + 1) * nc]] for i in range(3)]
    assert sorted(rounds[0]) == sorted(ds.classes())              # every class once per round
    assert rounds[0] == rounds[1] == rounds[2]                    # in the same seeded class order
    other = select_videos(ds, Protocol(split="test", num_videos=nc, seed=3, balanced=True))
    assert sorted(r.label for r in other) == sorted(ds.classes())


def test_selection_fewer_available_warns(synthetic_root):
    ds = UCF101(synthetic_root)
    n = len(ds.refs("test", 1))
    with pytest.warns(DataWarning, match=rf"only {n} videos in split 'test' fold 1.*N={n} instead of 1000"):
        sel = select_videos(ds, Protocol(num_videos=1000))
    assert sorted(r.rel for r in sel) == [r.rel for r in ds.refs("test", 1)]


# --------------------------------------------------------------------------- index and geometry rules

def test_clip_indices_first():
    p = Protocol()                                                  # 14 frames at 7 fps
    expected = [math.floor(k * 25 / 7 + 0.5) for k in range(14)]
    assert expected == [0, 4, 7, 11, 14, 18, 21, 25, 29, 32, 36, 39, 43, 46]
    assert clip_indices(47, 25.0, p, 0) == expected
    assert clip_indices(46, 25.0, p, 0) is None                     # needs index 46 -> 47 frames
    assert clip_indices(300, 30.0, p, 0) == [0, 4, 9, 13, 17, 21, 26, 30, 34, 39, 43, 47, 51, 56]
    # ties round half up: 25 -> 10 fps gives k * 2.5 = 0, 2.5, 5, 7.5
    assert clip_indices(100, 25.0, Protocol(num_frames=4, fps=10), 0) == [0, 3, 5, 8]


def test_clip_indices_random_start():
    p = Protocol(clip_start="random")
    first = clip_indices(60, 25.0, Protocol(), 0)
    starts = []
    for seed in range(40):
        idx = clip_indices(60, 25.0, p, seed)
        assert idx == clip_indices(60, 25.0, p, seed)               # deterministic per seed
        assert [i - idx[0] for i in idx] == first                   # same spacing, shifted
        assert 0 <= idx[0] <= 60 - 47
        starts.append(idx[0])
    assert len(set(starts)) > 5
    assert clip_indices(47, 25.0, p, 123) == first                  # no slack: start 0
    assert clip_indices(46, 25.0, p, 123) is None


def test_sample_seed_is_per_video(synthetic_root):
    refs = UCF101(synthetic_root).refs("all", 1)
    seeds = {sample_seed_of(0, r) for r in refs}
    assert len(seeds) == len(refs)
    assert sample_seed_of(0, refs[0]) == sample_seed_of(0, refs[0]) != sample_seed_of(1, refs[0])


def _row_ramp(h=240, w=320):
    """A frame whose red channel is its row index."""
    f = np.zeros((h, w, 3), np.uint8)
    f[..., 0] = np.arange(h, dtype=np.uint8)[:, None]
    return f


def test_condition_image_default_is_the_native_frame():
    """The paper's reading: the method gets frame 0 as it is and stretches it (diffusers' pipeline)."""
    frame = _row_ramp()
    assert condition_image(frame, Protocol()) is frame


def test_condition_image_cover_crop_rows():
    cond = condition_image(_row_ramp(), Protocol(cond_resize="cover-center-crop"))
    assert cond.shape == (576, 1024, 3) and cond.dtype == np.uint8
    red = cond[..., 0].astype(int)
    assert (red == red[:, :1]).all()                                # rows only: no column change
    # 320x240 -> 1024x768 (scale 3.2), rows 96..671 kept: output row r samples source row
    # (96 + r + 0.5) / 3.2 - 0.5: row 0 -> 29.66, row 288 -> 119.66, row 575 -> 209.34
    assert (red[0, 0], red[288, 0], red[575, 0]) == (30, 120, 209)
    want = np.floor((96 + np.arange(576) + 0.5) / 3.2 - 0.5 + 0.5)
    assert np.abs(red[:, 0] - want).max() <= 1


def test_real_clip_match_and_none():
    clip = np.stack([_row_ramp()] * 3)
    assert np.array_equal(real_clip_frames(clip, Protocol()), clip)  # default: the full native frame
    match = real_clip_frames(clip, Protocol(real_crop="match"))      # crop rows 30..209 then 320x240
    assert match.shape == (3, 240, 320, 3)
    # output row r samples cropped row (r + 0.5) * 0.75 - 0.5: row 0 -> 29.875, row 239 -> 209.125
    assert (match[0, 0, 0, 0], match[0, 239, 0, 0]) == (30, 209)
    assert np.array_equal(match, resize_frames(clip[:, 30:210], 320, 240))
    assert np.array_equal(real_clip_frames(clip, Protocol(real_crop="none")), clip)
    small = real_clip_frames(clip, Protocol(real_crop="none", score_width=160, score_height=120))
    assert small.shape == (3, 120, 160, 3)


# --------------------------------------------------------------------------- loading

def test_load_sample_matches_full_decode(synthetic_root):
    ref = UCF101(synthetic_root).refs("test", 1)[0]
    p = Protocol()
    s = load_sample(ref, p)
    full = read_video(ref.path)
    assert s.src_fps == 25.0 and s.frame_indices == clip_indices(len(full), 25.0, p, 0)
    assert np.array_equal(s.cond_image, full[0])                    # the native frame (stretch rule)
    assert s.real_clip.shape == (14, 240, 320, 3)
    assert np.array_equal(s.real_clip, full[s.frame_indices])       # decoding a subset == decoding all
    assert np.array_equal(load_condition(ref, p), s.cond_image)
    crop = p.replace(cond_resize="cover-center-crop", real_crop="match")
    c = load_sample(ref, crop)
    assert np.array_equal(c.cond_image, resize_cover_crop(full[:1], 1024, 576)[0])
    assert np.array_equal(c.real_clip, resize_frames(center_crop_to_aspect(full[c.frame_indices], 1024, 576), 320, 240))
    r = load_sample(ref, crop.replace(clip_start="random"))         # a seeked start (seed-dependent)
    assert r.frame_indices == clip_indices(60, 25.0, crop.replace(clip_start="random"), sample_seed_of(0, ref))
    want = resize_frames(center_crop_to_aspect(full[r.frame_indices], 1024, 576), 320, 240)
    assert np.array_equal(r.real_clip, want) and np.array_equal(r.cond_image, c.cond_image)


def _copy_dataset(synthetic_root, dst):
    shutil.copytree(synthetic_root, dst)
    return UCF101(dst)


def test_load_condition_too_short_and_case_fallback(synthetic_root, tmp_path):
    ds = _copy_dataset(synthetic_root, tmp_path / "d")
    ref = ds.refs("test", 1)[0]
    p = tiny_protocol()
    write_video(ref.path, read_video(ref.path, range(20)), 25)
    with pytest.raises(ClipTooShort, match=r"20 frames, the clip needs 47"):
        load_condition(ref, p)
    assert load_condition(ref, p, check_length=False).shape == (240, 320, 3)   # the native frame
    other = ds.refs("test", 1)[1]
    other.path.rename(other.path.with_name(other.path.name.upper().replace(".AVI", ".avi")))
    assert load_sample(other, p).real_clip.shape == (14, 240, 320, 3)   # found case-insensitively


def _broken_dataset(synthetic_root, tmp_path):
    """Copy of the synthetic set with, in test fold 1: one corrupt, one short and one missing file."""
    ds = _copy_dataset(synthetic_root, tmp_path / "d")
    refs = ds.refs("test", 1)
    corrupt, short, missing = refs[1], refs[4], refs[7]
    corrupt.path.write_bytes(b"RIFF\x00\x00 this is not an avi " * 50)
    write_video(short.path, read_video(short.path, range(30)), 25)
    missing.path.unlink()
    return refs, corrupt, short, missing


def test_iter_samples_skips_and_names_bad_videos(synthetic_root, tmp_path):
    refs, corrupt, short, missing = _broken_dataset(synthetic_root, tmp_path)
    refs = refs[:10]
    p = tiny_protocol(max_fail_frac=0.3)                           # 3 of 10 allowed
    rec = DataRecord()
    with pytest.warns(DataWarning) as caught:
        got = list(iter_samples(refs, p, rec, what="clip"))
    assert [s.ref for s in got] == [r for r in refs if r not in (corrupt, short, missing)]
    assert all(s.cond_image is None and s.real_clip.shape == (14, 240, 320, 3) for s in got)
    assert rec.corrupt == [str(corrupt.path), str(missing.path)] and rec.too_short == [str(short.path)]
    d = rec.to_dict()
    assert (d["selected"], d["used"], d["failed"]) == (10, 7, 3)
    text = [str(w.message) for w in caught]
    assert any(str(corrupt.path) in t and "undecodable" in t for t in text)
    assert any(str(missing.path) in t and "file not found" in t for t in text)
    assert any(str(short.path) in t and "too short" in t for t in text)
    # generation's pass skips exactly the same videos
    rec2 = DataRecord()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        cond = list(iter_samples(refs, p, rec2, what="condition"))
    assert [s.ref for s in cond] == [s.ref for s in got] and cond[0].cond_image.shape == (240, 320, 3)
    assert cond[0].real_clip is None and rec2.to_dict() == d


def test_fail_share_limit_raises(synthetic_root, tmp_path):
    refs, corrupt, short, missing = _broken_dataset(synthetic_root, tmp_path)
    order = [corrupt, short] + [r for r in refs if r not in (corrupt, short, missing)]
    p = tiny_protocol(max_fail_frac=0.05)                          # floor(0.05 * 19) = 0 allowed
    rec = DataRecord()
    it = iter_samples(order, p, rec, what="clip")
    with pytest.warns(DataWarning), pytest.raises(UserError) as e:
        next(it)                                                    # stops at the first failure
    msg = str(e.value)
    assert f"1 of {len(order)} selected videos failed (1 undecodable, 0 too short)" in msg
    assert "max_fail_frac=0.05" in msg and str(corrupt.path) in msg and "\n" not in msg
    assert rec.used == 0
    # 2 failures among 19 with a 10% share (1 allowed) also stop
    rec = DataRecord()
    with pytest.warns(DataWarning), pytest.raises(UserError, match=r"2 of 19 selected videos failed"):
        list(iter_samples(order, tiny_protocol(max_fail_frac=0.1), rec, what="clip"))
    assert rec.too_short == [str(short.path)]
    # a sharded caller: no stop inside the loop, one check of the merged record
    parts = [DataRecord(selected=len(order)) for _ in range(2)]
    with pytest.warns(DataWarning):
        for k, part in enumerate(parts):
            list(iter_samples(order[k::2], p, part, what="clip", check_fail_share=False))
    merged = DataRecord(len(order), sum(q.used for q in parts), parts[0].corrupt + parts[1].corrupt,
                        parts[0].too_short + parts[1].too_short)
    assert (merged.used, merged.failed) == (len(order) - 2, 2)
    raise_if_too_many_failures(merged, tiny_protocol(max_fail_frac=0.15))     # 2 allowed of 19
    with pytest.raises(UserError, match=r"2 of 19 selected videos failed"):
        raise_if_too_many_failures(merged, p)
