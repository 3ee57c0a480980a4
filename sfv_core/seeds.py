"""The per-video seed: one hash, used for generation noise, random clip starts and training noise."""
from __future__ import annotations

import hashlib


def sample_seed(base_seed: int, sample_id: str) -> int:
    """Seed of one video: sha256 of ``"<base_seed>:<sample_id>"``, first 8 hex digits (0 .. 2^32-1).

    The same for every method (common random numbers) and independent of the selection order,
    sharding and process count."""
    return int(hashlib.sha256(f"{base_seed}:{sample_id}".encode()).hexdigest()[:8], 16)
