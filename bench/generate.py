"""The samples store of a run and the timing pass.

``samples/<spec>/`` holds ``method.json`` (what made the samples: options and the content sha256 of
the weights), ``<sample_id>.npz`` (``Class/v_Class_gXX_cYY.npz``: uint8 (T, H, W, 3), lossless, atomic) with a ``.json`` sidecar
(seed, UNet calls, shape and the sha256 of the frames), and ``latency.json`` (the timing pass). The
sidecar is written first: the ``.npz`` is the completion marker. On resume a sample is trusted only
if it loads, has the expected shape and dtype, and matches its sidecar's checksum; anything else is
regenerated (and said so). Samples made by other weights or options are discarded.

Latency is the paper's quantity, measured apart from generation (which may batch videos and use
every thread): the UNet time of one video at batch 1 (batch 2 with CFG), over a few videos after a
warm-up video, in the first process alone when several generate, with ``threads`` torch threads on a
CPU (one by default: several threads on a shared small machine give numbers off by 20-45x). The
machine, threads and load average are recorded with it.

Rows timed minutes apart on a shared machine disagree (one-step rows making the same pass came out 1.3-1.8x
apart), so each distinct UNet pass (architecture, input shapes, dtype, device) is also timed once per run
folder (``passes.json``: median of ``PASS_REPEATS`` calls after warm-up, in the first row that makes it) and a
row's headline latency is its UNet calls x that pass time: rows making the same passes show the same time, and
time scales with the calls. The per-row measurement stays beside it (``median_s``).
"""
from __future__ import annotations

import hashlib
import json
import logging
import shutil
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from methods.models.timing import clock_name, summarize, time_ms
from sfv_core.data.transforms import resize_frames
from sfv_core.data.videoio import read_video, save_array
from sfv_core.env import cpu_name, device_name, load_average
from sfv_core.fsutil import atomic_write_json

log = logging.getLogger(__name__)


def spec_dirname(spec: str) -> str:
    return spec.replace(":", "_").replace("/", "_")


def frames_sha256(video: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(video).tobytes()).hexdigest()


def prepare_dir(sdir: Path, identity: dict, force: bool, refs=()) -> None:
    """Make ``sdir`` hold samples of ``identity``: samples of another identity (or ``force``) are removed;
    samples of ``refs`` stored under flat names (``sdir/<stem>.npz``, the layout before Class/ folders) are
    moved to their ids."""
    path = sdir / "method.json"
    old = None
    if path.is_file():
        try:
            old = json.loads(path.read_text())
        except (OSError, ValueError):
            old = {"damaged": True}
    if sdir.is_dir() and (force or (old is not None and old != identity)):
        what = "--force" if force else "other weights or options (" + ", ".join(
            k for k in sorted(set(old) | set(identity)) if old.get(k) != identity.get(k)) + ")"
        log.info(f"  {identity['spec']}: discarding {len(list(sdir.rglob('*.npz')))} samples made with {what}")
        shutil.rmtree(sdir)
    atomic_write_json(path, identity)
    adopt_flat_samples(refs, sdir, identity["spec"])


def adopt_flat_samples(refs, sdir: Path, spec: str) -> None:
    """Run folders of earlier versions named a sample by its file stem (``sdir/v_X_g01_c01.npz``), which two
    classes can share. Such a sample whose stem is unique among ``refs`` is moved to its id
    (``sdir/Class/v_X_g01_c01.npz``: same seed, same video, checked as usual); one whose stem is ambiguous
    is removed (it cannot be told whose it is) and so regenerated."""
    stems: dict = {}
    for r in refs:
        stems.setdefault(r.seed_name, []).append(r)
    moved = dropped = 0
    for stem, owners in stems.items():
        flat = sdir / f"{stem}.npz"
        if not flat.exists():
            continue
        if len(owners) > 1:
            flat.unlink()
            flat.with_suffix(".json").unlink(missing_ok=True)
            dropped += 1
            continue
        new = sdir / f"{owners[0].sample_id}.npz"
        new.parent.mkdir(parents=True, exist_ok=True)
        if flat.with_suffix(".json").exists():          # the sidecar first: the .npz marks a finished sample
            flat.with_suffix(".json").replace(new.with_suffix(".json"))
        flat.replace(new)
        moved += 1
    if moved or dropped:
        log.info(f"  {spec}: {moved} samples of an earlier version moved to their Class/name ids"
                 f"{f', {dropped} with a name two classes share removed (regenerated)' if dropped else ''}")


def sample_problem(npz: Path, shape: tuple) -> str | None:
    """Why a finished-looking sample cannot be trusted, or None."""
    side = npz.with_suffix(".json")
    try:
        meta = json.loads(side.read_text())
        if not isinstance(meta, dict):
            raise ValueError("not a mapping")
    except (OSError, ValueError) as e:
        return f"sidecar {side.name}: {e}"
    try:
        video = read_video(npz)
    except Exception as e:  # noqa: BLE001 - any decoding failure
        return f"unreadable ({(str(e).splitlines() or [type(e).__name__])[0].replace(str(npz), '').strip(': ')[:80]})"
    if tuple(video.shape) != tuple(shape):
        return f"shape {tuple(video.shape)}, expected {tuple(shape)}"
    if meta.get("sha256") != frames_sha256(video):
        return "frames do not match the sidecar's checksum"
    return None


def missing(refs, sdir: Path, shape: tuple) -> list:
    """The refs whose sample is absent or fails ``sample_problem`` (damaged ones are named)."""
    out = []
    for r in refs:
        npz = sdir / f"{r.sample_id}.npz"
        if not npz.exists():
            out.append(r)
            continue
        problem = sample_problem(npz, shape)
        if problem:
            log.info(f"  regenerating {npz}: {problem}")
            npz.unlink()
            out.append(r)
    return out


def cut_batches(refs: list, batch_size: int) -> list:
    """``refs`` in consecutive batches of ``batch_size`` (the last may be shorter)."""
    return [refs[i:i + batch_size] for i in range(0, len(refs), batch_size)]


def generate_method(method, todo, seeds: dict, sdir: Path, protocol, conditions_of, *, batch_size: int = 1,
                    save_size: str = "score", label: str = "", progress: bool = False, batches=None,
                    process=(0, 1)) -> None:
    """Generate ``todo`` with a loaded ``method`` in batches; each sample is written atomically.

    ``batches``: the batches to compute (lists of refs; default ``todo`` cut by ``batch_size``). A video's bits
    depend on its batch (kernels round by batch size, the VAE decodes the batch's frames together), so the run
    cuts its batches from the whole list of samples (in selection order), whatever the number of processes,
    and a sample regenerated on a rerun is made in the batch it had in the clean run: the whole batch
    computed, its members in ``todo`` written. The rerun's table equals the clean run's.
    ``conditions_of(ref)`` gives the conditioning image; ``process`` (rank, processes) is recorded in the
    sidecar. No warm-up: nothing here is timed."""
    if not todo:
        return
    conditions = protocol.conditions()
    wanted = {r.sample_id for r in todo}
    if batches is None:
        batches = cut_batches(list(todo), batch_size)
    chunks = [c for c in batches if any(r.sample_id in wanted for r in c)]
    bar = tqdm(total=len(todo), desc=f"{label:>14}", disable=not progress, unit="video")
    for chunk in chunks:
        labels = {"labels": [r.label for r in chunk]} if getattr(method, "takes_labels", False) else {}
        videos = method.generate([conditions_of(r) for r in chunk], [seeds[r.sample_id] for r in chunk], conditions,
                                 **labels)
        calls = method.unet_calls_per_video()
        for j, ref in enumerate(chunk):
            if ref.sample_id not in wanted:             # finished already: the same bits, kept as they are
                continue
            v = videos[j]  # AnimateLCM*: the adapter returns the first 14 of its 25 frames
            if save_size == "score":
                v = resize_frames(v, protocol.score_width, protocol.score_height)
            atomic_write_json(sdir / f"{ref.sample_id}.json", {
                "seed": seeds[ref.sample_id], "unet_calls": calls["calls"], "unet_batch": calls["batch"],
                "batch_videos": len(chunk), "frames_generated": int(videos.shape[1]), "shape": list(v.shape),
                "sha256": frames_sha256(v), "process": f"{process[0] + 1} of {process[1]}"})
            save_array(sdir / f"{ref.sample_id}.npz", v)
            bar.update(1)
    bar.close()


def read_samples(refs, sdir: Path, protocol):
    """Yield each finished sample at the scoring size, in ``refs`` order."""
    for ref in refs:
        yield resize_frames(read_video(sdir / f"{ref.sample_id}.npz"), protocol.score_width, protocol.score_height)


PASS_REPEATS = 7          # timed calls of one UNet pass (after warm-up); its median is the pass time


class PassTimes:
    """``passes.json`` of a run folder: {pass key: pass time summary (s) and what the pass is}. A pass is
    timed when its key is absent, or under ``redo`` once per call (the first row making it)."""

    def __init__(self, out: Path, redo: bool = False):
        self.path, self.redo, self.fresh = Path(out) / "passes.json", redo, {}

    def _stored(self) -> dict:
        try:
            return json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}

    def get(self, key: str) -> dict | None:
        return self.fresh.get(key) or (None if self.redo else self._stored().get(key))

    def put(self, key: str, record: dict) -> None:
        self.fresh[key] = record
        atomic_write_json(self.path, {**self._stored(), key: record})

    def lookup(self, key) -> dict | None:
        """What a row's pass key reads in the table (the newest time of that pass)."""
        return self.fresh.get(key) or self._stored().get(key) if key else None


def time_method(method, images: list, *, seeds: list, conditions, device: str, threads: int,
                passes: PassTimes | None = None, tick=lambda: None) -> dict:
    """The timing pass: one video at a time (after one untimed video; ``seeds``: one per image), UNet seconds
    per video; then the UNet pass the method makes (``method.unet_pass()``), timed into ``passes`` unless
    already there. It runs ``method.timed_part`` (the SVD family: up to the latents; the VAE decode is not
    timed, so not run). ``tick()`` follows each video and the pass timing (the other processes wait in such steps)."""
    old = torch.get_num_threads()
    cpu = not str(device).startswith("cuda")
    if cpu and threads:
        torch.set_num_threads(threads)
    try:
        method.timed_part(images[:1], seeds[:1], conditions)       # warm-up at this thread count
        tick()
        times, parts = [], {}
        for image, seed in zip(images, seeds):
            method.timed_part([image], [seed], conditions)
            times.append(method.last_unet_times()[0])
            for part, seconds in getattr(method, "last_part_times", dict)().items():   # text encoder, VAE ...
                parts.setdefault(part, []).append(seconds)
            tick()
        pass_key = _time_pass(method, device, passes, tick)
        env = {"device_name": device_name(device), "threads": torch.get_num_threads(), "cpu": cpu_name(),
               "load_average": load_average()}
    finally:
        torch.set_num_threads(old)
    out = {**summarize(times, "s"), "clock": clock_name(device), "batch": 1, **env, "pass_key": pass_key}
    out["spread"] = out["p90_s"] / out["p10_s"] if out["p10_s"] > 0 else None
    if parts:
        out["parts"] = {part: summarize(values, "s") for part, values in parts.items()}
    return out


def _time_pass(method, device, passes, tick) -> str | None:
    unet_pass = method.unet_pass() if passes is not None else None
    if unet_pass is None:
        return None
    key, what, replay = unet_pass
    if passes.get(key) is None:
        ms = time_ms(replay, device, warmup=3, repeats=PASS_REPEATS)
        passes.put(key, {**summarize([m / 1e3 for m in ms], "s"), **what, "timed_in": f"{method.name}:{method.steps}",
                         "threads": torch.get_num_threads()})
        tick()
    return key
