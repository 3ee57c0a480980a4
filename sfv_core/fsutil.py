"""File-system helpers shared by the whole suite: atomic writes, hashing, file signatures, cache folder."""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from pathlib import Path

from .errors import UserError

CACHE_ENV = "SFV_BENCH_CACHE"


def cache_dir(sub: str = "") -> Path:
    """Root of the suite's cache (``$SFV_BENCH_CACHE``, default ``~/.cache/sfv-bench``)."""
    root = Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "sfv-bench")
    path = root / sub if sub else root
    path.mkdir(parents=True, exist_ok=True)
    return path


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = ""):
    """Yield a temporary path next to ``path``; rename it onto ``path`` only if the block succeeds.

    An interrupted write leaves no partial file under the final name (the temp file is removed).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp" + suffix, dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600 files; give the usual permissions
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        Path(tmp).write_bytes(data)


def atomic_write_text(path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def sha256_file(path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def sha256_json(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def file_signature(path) -> list:
    """[resolved path, size, mtime_ns] of a file: cheap identity for cache keys."""
    p = Path(path)
    st = p.stat()
    return [str(p.resolve()), st.st_size, st.st_mtime_ns]


def save_safetensors(tensors: dict, path) -> None:
    """Atomic safetensors file of CPU, contiguous copies of ``tensors``."""
    from safetensors.torch import save_file

    with atomic_path(path, suffix=".safetensors") as tmp:
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(tmp))


def load_safetensors(path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(path))


_HASHED: dict = {}


def sha256_cached(path) -> str:
    """sha256 of a file, read again in every process (then remembered for the process's life, keyed by
    path, size, mtime, ctime and inode). Nothing is remembered across processes: size and mtime do not
    change when bits rot on disk, so a weight file is hashed at disk speed whenever a run uses it."""
    p = Path(path).resolve()
    st = p.stat()
    key = (str(p), st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)
    if key not in _HASHED:
        _HASHED[key] = sha256_file(p)
    return _HASHED[key]


def folder_sha256(folder, patterns=("*.safetensors", "*.bin", "*.json")) -> str:
    """One sha256 of a model folder: its weight and config files (names and contents, name-sorted)."""
    folder = Path(folder)
    files = sorted({p for pat in patterns for p in folder.glob(pat) if p.is_file()})
    return sha256_json([[p.name, sha256_cached(p)] for p in files])


LOCK_NAME = ".sfv-bench.lock"


@contextlib.contextmanager
def folder_lock(folder, what: str, option: str = "--out"):
    """Hold ``folder/.sfv-bench.lock`` (an exclusive ``flock``, released when the block ends or the
    process dies) while ``what`` writes into ``folder``; a folder already held is a UserError naming the
    lock and its holder's pid."""
    import fcntl

    path = Path(folder) / LOCK_NAME
    f = open(path, "a+")
    try:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "another process"
            raise UserError(f"{option} {folder} is in use ({holder} holds {path}): wait for it to end or pass "
                            f"another {option}") from None
        f.seek(0)
        f.truncate()
        f.write(f"{what}, pid {os.getpid()}")
        f.flush()
        yield path
    finally:
        f.close()                  # closing the file releases the lock
