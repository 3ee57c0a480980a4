"""sfv_core.protocol: the generation conditions have one home (GenerationConditions), which Protocol holds;
its flat names, its record (``to_dict``, what results and caches are keyed by) and the worlds stay as they were."""
from __future__ import annotations

import dataclasses

import pytest

from sfv_core.protocol import GEN, WORLDS, GenerationConditions, Protocol, World

# Protocol().to_dict() as recorded in results and real-statistics cache keys: must not change
RECORDED_DEFAULT = {
    "dataset": "ucf101", "split": "test", "fold": 1, "num_videos": 2048, "seed": 0, "balanced": False,
    "num_frames": 14, "fps": 7, "gen_width": 1024, "gen_height": 576, "score_width": 320, "score_height": 240,
    "cond_resize": "stretch", "clip_start": "first", "real_crop": "none", "max_fail_frac": 0.05,
    "motion_bucket_id": 127, "noise_aug_strength": 0.02, "decode_chunk_size": 14, "decode_videos": 1,
    "detector_size": 224, "covariance": "biased"}


def test_protocol_record_is_unchanged():
    assert Protocol().to_dict() == RECORDED_DEFAULT
    for world in WORLDS.values():
        assert Protocol(**world.protocol).to_dict() == {**RECORDED_DEFAULT, **world.protocol}


def test_protocol_holds_the_generation_conditions():
    p = Protocol()
    assert p.conditions() is p.generation
    assert p.generation == dataclasses.replace(GEN, width=1024, height=576)     # SVD's defaults, paper size
    p = Protocol(num_frames=2, gen_width=64, gen_height=32, cond_resize="cover-center-crop", decode_videos=3)
    assert p.conditions() == GenerationConditions.of(None, num_frames=2, width=64, height=32,
                                                     resize="cover-center-crop", decode_videos=3)
    assert (p.num_frames, p.gen_width, p.gen_height, p.cond_resize, p.decode_videos) == (2, 64, 32,
                                                                                       "cover-center-crop", 3)
    q = p.replace(fps=5, seed=3)
    assert q.generation == dataclasses.replace(p.generation, fps=5) and q.seed == 3 and p.fps == 7
    assert Protocol(generation=p.generation) == Protocol(**{k: v for k, v in p.to_dict().items()})
    assert hash(Protocol(num_frames=2)) == hash(Protocol(num_frames=2))


def test_every_generation_condition_has_a_protocol_name():
    from sfv_core.protocol import _conditions

    names = _conditions()
    assert {c.field for c in names.values()} == {f.name for f in dataclasses.fields(GenerationConditions)}
    assert set(names) <= set(RECORDED_DEFAULT)


def test_protocol_rejects_bad_and_unknown_values():
    with pytest.raises(TypeError, match="width"):
        Protocol(width=64)                       # the protocol's name is gen_width
    with pytest.raises(ValueError, match="multiple of 8"):
        Protocol(gen_width=60)
    with pytest.raises(ValueError, match="cond_resize"):
        Protocol(cond_resize="crop")
    with pytest.raises(dataclasses.FrozenInstanceError):
        Protocol().seed = 1


def test_records_with_many_fields_take_keywords_only():
    with pytest.raises(TypeError):
        World("mini", {}, "mini", "mini", "mini", "", "", None, True)        # the positional form
    from methods.registry import MethodInfo
    with pytest.raises(TypeError):
        MethodInfo("methods.svd:SVDMethod", "x", None, 25, "svd", True)   # the positional form
