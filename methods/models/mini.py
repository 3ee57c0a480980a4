"""The mini world's shipped weights: where they live and the check that they are the built ones.

Layout of the folder (``methods/models/mini/`` in the repository; a caller names another one with
``world=``, e.g. ``sfv-train --mini-world`` at a fresh ``sfv-bench build-mini`` output; a user points every
command at another one with ``$SFV_MINI_WORLD``, read in ``mini_dir`` only)::

    stack/            a StableVideoDiffusionPipeline folder (unet = the teacher, vae, image_encoder, ...)
    unets/<name>/     distilled UNets (sfv, ufogen, ladd, lcm), diffusers folders
    detector/         the FVD detector (detector.safetensors + detector.json)
    manifest.json     {relative path: sha256} of every weight and config file
    build.json        how it was built: command, git commit, machine, times, quality figures

Every load checks the files it uses against the manifest (sha256, remembered by size and mtime).
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from sfv_core.errors import UserError
from sfv_core.fsutil import sha256_cached

SHIPPED = Path(__file__).resolve().parent / "mini"
BUILD_HINT = "build it with `sfv-bench build-mini OUT --install` (about two hours on 2 CPU cores)"


def mini_dir(world: str | os.PathLike | None = None) -> Path:
    """The mini world's folder: ``world`` when given, else ``$SFV_MINI_WORLD`` when set, else the shipped one."""
    return Path(world or os.environ.get("SFV_MINI_WORLD") or SHIPPED)


def manifest(folder: Path | None = None) -> dict:
    folder = folder or mini_dir()
    path = folder / "manifest.json"
    if not path.is_file():
        raise UserError(f"the mini world is not in {folder} (no manifest.json): {BUILD_HINT}")
    try:
        return json.loads(path.read_text())["files"]
    except (ValueError, KeyError, TypeError):
        raise UserError(f"{path} is damaged: restore it from git or {BUILD_HINT}") from None


def verified(part: str, world: str | os.PathLike | None = None) -> Path:
    """``mini_dir(world)/part`` after checking every manifest file under it (a UserError otherwise)."""
    folder = mini_dir(world)
    files = manifest(folder)
    prefix = part.rstrip("/") + "/"
    mine = {k: v for k, v in files.items() if k.startswith(prefix)}
    if not mine:
        raise UserError(f"the mini world in {folder} has no {part}/ ({BUILD_HINT})")
    for rel, digest in sorted(mine.items()):
        path = folder / rel
        if not path.is_file():
            raise UserError(f"mini world file {path} is missing: restore it from git or {BUILD_HINT}")
        if sha256_cached(path) != digest:
            raise UserError(f"mini world file {path} does not match its sha256 in manifest.json: restore it from "
                            f"git or {BUILD_HINT}")
    return folder / part


def has(part: str) -> bool:
    """Whether the mini world ships ``part`` (e.g. 'unets/sfv'), without checking it."""
    try:
        return any(k.startswith(part.rstrip("/") + "/") for k in manifest())
    except UserError:
        return False
