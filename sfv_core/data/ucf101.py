"""UCF-101: the split lists, the seeded selection of N videos, and per video the conditioning image
and the real clip, exactly as written in sfv_core/protocol.py.

Layout (the real download; ``sfv-bench make-synthetic DIR`` writes the same)::

    <root>/UCF-101/<Class>/v_<Class>_gXX_cYY.avi
    <root>/ucfTrainTestlist/classInd.txt          "1 ApplyEyeMakeup"            (1-based)
    <root>/ucfTrainTestlist/trainlist0{1,2,3}.txt "ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 1"
    <root>/ucfTrainTestlist/testlist0{1,2,3}.txt  "ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi"

The root may also be the ``UCF-101`` folder itself with ``ucfTrainTestlist`` beside or inside it.
List files may use CRLF (the real ones do) or LF. The class of a line is its folder part (real
UCF-101 has ``HandstandPushups/v_HandStandPushups_g01_c01.avi``: the folder, not the file name,
matches classInd); a listed file missing on disk is looked up case-insensitively before it counts
as undecodable.

Rules (protocol.py states them; this module implements them with sfv_core.data.transforms):

* Selection: the split's videos sorted by relative path (so file-system order never matters),
  then ``numpy.random.default_rng(protocol.seed)``: ``balanced=False`` takes the first N of a
  permutation; ``balanced=True`` permutes the classes and, inside each class, its videos, then takes
  one video per class in that class order, round after round, until N. N = min(num_videos,
  available), with a warning when fewer are available. The list comes back in selection order,
  so a smaller N selects a prefix of a larger N's list (same seed).
* Clip indices: sfv_core.data.clips.clip_indices (index_k = start + round_half_up(k * src_fps / fps));
  a random start is drawn with ``sfv_core.seeds.sample_seed(protocol.seed, ref.seed_name)`` (stable across
  runs, processes and selection order). Too short -> skipped.
* Conditioning image: frame 0 at its native size (``cond_resize="stretch"``; the method stretches
  it), or through ``resize_cover_crop`` to gen_w x gen_h (``"cover-center-crop"``: 320x240 ->
  1024x768, rows 96..671 kept).
* Real clip: ``real_crop="none"``: ``resize_frames`` to score_w x score_h (a no-op for 320x240 at
  320x240); ``"match"``: ``center_crop_to_aspect`` to gen_w:gen_h (320x240 -> rows 30..209,
  320x180) first.
* Failures: an undecodable (or missing) file and a file too short for the clip are skipped with a
  ``DataWarning`` naming the path and listed in the ``DataRecord``. Both count as failures: once
  failures exceed ``floor(max_fail_frac * selected)`` iteration stops with a UserError.
"""
from __future__ import annotations

import math
import re
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

from ..errors import UserError
from ..seeds import sample_seed
from .clips import clip_indices, frames_needed
from .videoio import VideoDecodeError, read_video, video_info

VIDEO_DIR = "UCF-101"
LIST_DIR = "ucfTrainTestlist"
SYNTHETIC_HINT = "run `sfv-bench make-synthetic DIR` for a synthetic one"
_GROUP_CLIP = re.compile(r"_g(\d+)_c(\d+)$")


class DataWarning(UserWarning):
    """A video of the selection was skipped (undecodable, missing or too short)."""


class ClipTooShort(Exception):
    """The video has fewer frames than the protocol's real clip needs."""


@dataclass(frozen=True)
class VideoRef:
    path: Path          # absolute file path
    rel: str            # "Class/v_Class_g01_c01.avi", as in the split lists
    label: str          # class name (the folder part of rel)
    class_index: int    # 1-based, as classInd.txt
    group: int
    clip: int

    @property
    def sample_id(self) -> str:
        """Id of the video's outputs, unique by construction: ``rel`` without its suffix,
        "Class/v_Class_g01_c01" (two classes may hold files of the same name)."""
        return str(Path(self.rel).with_suffix(""))

    @property
    def seed_name(self) -> str:
        """What the per-video seed is drawn from (``sfv_core.seeds.sample_seed``): the file's stem,
        "v_Class_g01_c01": a video's seed does not depend on the form of its id."""
        return Path(self.rel).stem


class UCF101:
    """The UCF-101 folder and its split lists (see the module docstring for the layout)."""

    def __init__(self, root):
        root = Path(root).expanduser()
        if not root.is_dir():
            raise UserError(f"UCF-101 root not found: {root} (expected a folder holding {VIDEO_DIR}/ and "
                            f"{LIST_DIR}/; {SYNTHETIC_HINT})")
        if (root / VIDEO_DIR).is_dir():
            video_dir, lists = root / VIDEO_DIR, [root / LIST_DIR, root / VIDEO_DIR / LIST_DIR]
        else:
            video_dir, lists = root, [root / LIST_DIR, root.parent / LIST_DIR]
        list_dir = next((p for p in lists if p.is_dir()), None)
        if list_dir is None:
            raise UserError(f"not a UCF-101 root: {root} (expected {root / VIDEO_DIR}/ and {root / LIST_DIR}/ "
                            f"with classInd.txt, trainlist0{{1,2,3}}.txt, testlist0{{1,2,3}}.txt; {SYNTHETIC_HINT})")
        if not any(p.is_dir() and p.name != LIST_DIR for p in video_dir.iterdir()):
            raise UserError(f"no class folders in {video_dir} (expected {video_dir}/<Class>/v_<Class>_gXX_cYY.avi; "
                            f"{SYNTHETIC_HINT})")
        self.root, self.video_dir, self.list_dir = root, video_dir, list_dir
        self._class_ind: dict[str, int] | None = None

    def __repr__(self) -> str:
        return f"UCF101({str(self.root)!r})"

    def _lines(self, name: str) -> list[tuple[int, str]]:
        path = self.list_dir / name
        if not path.is_file():
            raise UserError(f"split file not found: {path} (expected {self.list_dir}/ to hold classInd.txt, "
                            f"trainlist0{{1,2,3}}.txt, testlist0{{1,2,3}}.txt; {SYNTHETIC_HINT})")
        text = path.read_text(encoding="utf-8-sig")
        return [(i, line.strip()) for i, line in enumerate(text.splitlines(), 1) if line.strip()]

    def class_index(self) -> dict[str, int]:
        """classInd.txt as {class name: 1-based index}."""
        if self._class_ind is None:
            out = {}
            for i, line in self._lines("classInd.txt"):
                parts = line.split()
                if len(parts) != 2 or not parts[0].isdigit():
                    raise UserError(f"{self.list_dir / 'classInd.txt'}:{i}: expected '<index> <ClassName>', "
                                    f"got {line!r}")
                out[parts[1]] = int(parts[0])
            self._class_ind = out
        return self._class_ind

    def classes(self) -> list[str]:
        """Class names ordered by their classInd index."""
        ind = self.class_index()
        return sorted(ind, key=ind.get)

    def refs(self, split: str = "test", fold: int = 1) -> list[VideoRef]:
        """Videos of ``split`` (train, test, all = train + test) of ``fold``, de-duplicated, sorted by rel."""
        if split not in ("train", "test", "all") or fold not in (1, 2, 3):
            raise UserError(f"split must be train, test or all and fold 1, 2 or 3 (got {split!r}, {fold!r})")
        names = {"train": ["train"], "test": ["test"], "all": ["train", "test"]}[split]
        ind = self.class_index()
        out: dict[str, VideoRef] = {}
        for kind in names:
            fname = f"{kind}list0{fold}.txt"
            for i, line in self._lines(fname):
                parts = line.split()
                rel = parts[0].replace("\\", "/")
                where = f"{self.list_dir / fname}:{i}"
                label = rel.split("/")[0] if "/" in rel else ""
                m = _GROUP_CLIP.search(Path(rel).stem)
                if len(parts) > 2 or not label or m is None or rel.count("/") != 1 or ".." in rel.split("/"):
                    raise UserError(f"{where}: expected 'Class/v_Class_gXX_cYY.avi [label]', got {line!r}")
                if label not in ind:
                    raise UserError(f"{where}: class {label!r} is not in {self.list_dir / 'classInd.txt'}")
                if len(parts) == 2 and parts[1] != str(ind[label]):
                    raise UserError(f"{where}: label {parts[1]} does not match classInd ({label} = {ind[label]})")
                out[rel] = VideoRef(self.video_dir / rel, rel, label, ind[label], int(m.group(1)), int(m.group(2)))
        return [out[k] for k in sorted(out)]


# --------------------------------------------------------------------------- selection

def select_videos(dataset: UCF101, protocol) -> list[VideoRef]:
    """N videos of protocol.split / protocol.fold, chosen from protocol.seed (see module docstring)."""
    pool = sorted(dataset.refs(protocol.split, protocol.fold), key=lambda r: r.rel)
    if not pool:
        raise UserError(f"no videos listed for split {protocol.split!r} fold {protocol.fold} in {dataset.list_dir}")
    n = min(protocol.num_videos, len(pool))
    if n < protocol.num_videos:
        warnings.warn(f"only {len(pool)} videos in split {protocol.split!r} fold {protocol.fold} of {dataset.root}: "
                      f"using N={n} instead of {protocol.num_videos}", DataWarning, stacklevel=2)
    rng = np.random.default_rng(protocol.seed)
    if not protocol.balanced:
        return [pool[i] for i in rng.permutation(len(pool))[:n]]
    by_class: dict[str, list[VideoRef]] = {}
    for r in pool:
        by_class.setdefault(r.label, []).append(r)
    names = sorted(by_class)
    queues = []
    for ci in rng.permutation(len(names)):
        vids = by_class[names[ci]]
        queues.append([vids[i] for i in rng.permutation(len(vids))])
    out: list[VideoRef] = []
    for depth in range(max(len(q) for q in queues)):
        for q in queues:
            if depth < len(q) and len(out) < n:
                out.append(q[depth])
    return out


def clip_indices_of(ref: VideoRef, n_src: int, src_fps: float, protocol) -> list[int] | None:
    """The real clip's source frames for one video under ``protocol`` (see sfv_core.data.clips)."""
    return clip_indices(n_src, src_fps, protocol.num_frames, protocol.fps, protocol.clip_start,
                        sample_seed(protocol.seed, ref.seed_name))


def condition_image(frame: np.ndarray, protocol) -> np.ndarray:
    """Frame (H, W, 3) uint8 -> the conditioning image handed to a method.

    ``cond_resize="stretch"``: the frame itself (the method stretches it to the generation size
    and computes CLIP from it, as diffusers' pipeline does); ``"cover-center-crop"``: cover-resized
    and centre-cropped to (gen_h, gen_w)."""
    if protocol.cond_resize == "stretch":
        return frame
    from .transforms import resize_cover_crop        # torch: imported only when frames are processed

    return resize_cover_crop(frame[None], protocol.gen_width, protocol.gen_height)[0]


def real_clip_frames(frames: np.ndarray, protocol) -> np.ndarray:
    """Clip (T, H, W, 3) uint8 -> scoring geometry (T, score_h, score_w, 3) per protocol.real_crop."""
    from .transforms import center_crop_to_aspect, resize_frames

    if protocol.real_crop == "match":
        frames = center_crop_to_aspect(frames, protocol.gen_width, protocol.gen_height)
    return resize_frames(frames, protocol.score_width, protocol.score_height)


@dataclass
class Sample:
    ref: VideoRef
    cond_image: np.ndarray | None        # (gen_h, gen_w, 3) uint8; None when only the clip was asked for
    real_clip: np.ndarray | None         # (T, score_h, score_w, 3) uint8; None when only the condition was
    frame_indices: list[int]             # source indices of the real clip
    src_fps: float


def _resolve(path: Path) -> Path:
    """``path``, or a case-insensitive match of its folder and name on disk (else unchanged)."""
    if path.exists():
        return path
    folder = path.parent
    if not folder.is_dir() and folder.parent.is_dir():
        folder = next((p for p in folder.parent.iterdir() if p.name.lower() == folder.name.lower()), folder)
    if folder.is_dir():
        return next((p for p in folder.iterdir() if p.name.lower() == path.name.lower()), path)
    return path


def _load(ref: VideoRef, protocol, want_cond: bool, want_clip: bool, check_length: bool = True) -> Sample:
    path = _resolve(ref.path)
    if not path.is_file():
        raise VideoDecodeError(f"{ref.path}: file not found")
    idx: list[int] = []
    fps = 0.0
    if want_clip or check_length:
        n, fps, _, _ = video_info(path)
        if not (fps > 0 and math.isfinite(fps)):
            raise VideoDecodeError(f"{path}: no usable frame rate ({fps})")
        got = clip_indices_of(ref, n, fps, protocol)
        if got is None:
            need = frames_needed(fps, protocol.num_frames, protocol.fps)
            raise ClipTooShort(f"{path}: {n} frames, the clip needs {need} ({protocol.num_frames} frames at "
                               f"{protocol.fps} fps from {fps:g} fps)")
        idx = got
    wanted = sorted(set(([0] if want_cond else []) + (idx if want_clip else [])))
    frames = read_video(path, wanted)
    pos = {f: i for i, f in enumerate(wanted)}
    cond = condition_image(frames[pos[0]], protocol) if want_cond else None
    clip = real_clip_frames(frames[[pos[i] for i in idx]], protocol) if want_clip else None
    return Sample(ref, cond, clip, idx, fps)


def load_sample(ref: VideoRef, protocol) -> Sample:
    """Conditioning image and real clip of one video; decodes only frame 0 and the clip's frames.

    Raises VideoDecodeError (undecodable or missing) or ClipTooShort.
    """
    return _load(ref, protocol, True, True)


def load_condition(ref: VideoRef, protocol, check_length: bool = True) -> np.ndarray:
    """Only the conditioning image (what generation needs); the clip is not decoded.

    With ``check_length`` (default) a video too short for the real clip raises ClipTooShort here
    too, so the generated set and the real set skip the same videos.
    """
    return _load(ref, protocol, True, False, check_length).cond_image


# --------------------------------------------------------------------------- iteration with a record

@dataclass
class DataRecord:
    """What happened to a selection; goes into the run record.

    ``selected`` is the size the fail share is measured against (iter_samples sets it to len(refs)
    when it is 0; set it beforehand when iterating over part of a selection).
    """
    selected: int = 0
    used: int = 0
    corrupt: list[str] = field(default_factory=list)      # undecodable or missing files (paths)
    too_short: list[str] = field(default_factory=list)    # files shorter than the clip (paths)

    @property
    def failed(self) -> int:
        return len(self.corrupt) + len(self.too_short)

    def to_dict(self) -> dict:
        return dict(asdict(self), failed=self.failed)


def raise_if_too_many_failures(record: DataRecord, protocol) -> None:
    """Raise UserError when record.failed > floor(max_fail_frac * record.selected).

    For a selection split over processes, merge the records (lists concatenated, selected = the
    whole selection) and call this once.
    """
    limit = math.floor(protocol.max_fail_frac * record.selected + 1e-9)
    if record.failed > limit:
        first = (record.corrupt + record.too_short)[:3]
        raise UserError(
            f"{record.failed} of {record.selected} selected videos failed ({len(record.corrupt)} undecodable, "
            f"{len(record.too_short)} too short), more than max_fail_frac={protocol.max_fail_frac} allows "
            f"({limit}); first: {', '.join(first)}; fix or remove them, or raise --max-fail-frac")


def iter_samples(refs, protocol, record: DataRecord, what: str = "both",
                 check_fail_share: bool = True) -> Iterator[Sample]:
    """Load each ref (``what``: both | condition | clip), skipping and recording bad videos.

    Raises UserError as soon as the failures exceed floor(max_fail_frac * record.selected)
    (``check_fail_share=False``: never; a sharded caller checks the merged record itself).
    """
    if what not in ("both", "condition", "clip"):
        raise ValueError(f"what must be both, condition or clip (got {what!r})")
    refs = list(refs)
    if not record.selected:
        record.selected = len(refs)
    for ref in refs:
        try:
            sample = _load(ref, protocol, what != "clip", what != "condition")
        except VideoDecodeError as e:
            msg = str(e) if str(ref.path) in str(e) else f"{ref.path}: {e}"
            record.corrupt.append(str(ref.path))
            warnings.warn(f"skipping undecodable video {msg}", DataWarning, stacklevel=2)
        except ClipTooShort as e:
            record.too_short.append(str(ref.path))
            warnings.warn(f"skipping video too short for the clip: {e}", DataWarning, stacklevel=2)
        else:
            record.used += 1
            yield sample
            continue
        if check_fail_share:
            raise_if_too_many_failures(record, protocol)
