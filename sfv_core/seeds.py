"""The per-video seed: one hash, used for generation noise, random clip starts and training noise."""
from __future__ import annotations

import hashlib


def sample_seed(base_seed: int, name: str) -> int:
    """Seed of one video: sha256 of ``"<base_seed>:<name>"``, first 8 hex digits (0 .. 2^32-1); ``name`` is
    the video's file stem (``VideoRef.seed_name``, "v_Class_g01_c01").

    The same for every method (common random numbers) and independent of the selection order,
    sharding and process count."""
    return int(hashlib.sha256(f"{base_seed}:{name}".encode()).hexdigest()[:8], 16)
