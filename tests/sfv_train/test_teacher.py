"""LADD's teacher data (sfv_train.data.prepare_teacher) on the tiny stack: made in the run's half precision
(bf16 autocast) within a stated tolerance of float32, batched like one by one, cached per precision,
resumable, shared out evenly over processes, its estimated time logged before it starts."""
from __future__ import annotations

import logging

import pytest
import torch

from sfv_core.fsutil import load_safetensors
from sfv_core.protocol import GenerationConditions
from sfv_train.data import ClipSettings, find_videos, my_share, prepare_teacher

# bf16 autocast (CLIP, VAE encode and UNet, as the run autocasts) against float32, svd:2 with CFG on the
# tiny stack at 64x64, CPU: relative L2 error of the latents, measured 4.3 % (bf16 keeps 8 bits of
# mantissa, ~0.4 % per rounding, carried through the UNet and two Euler steps from sigma 700); two
# different videos' teacher latents differ by 130 %
BF16_TOLERANCE = 0.08


def _latents(files):
    return torch.stack([load_safetensors(f)["latents"] for f in files])


@pytest.fixture(scope="module")
def teacher(train_data, tmp_path_factory):
    """prepare_teacher's arguments (tiny stack, the 4 training videos, svd:2) and a cache root."""
    from methods.models.stacks import tiny_stack_dir

    pairs = [(it, None) for it in find_videos(train_data)]
    settings = ClipSettings(GenerationConditions.of(None, width=64, height=64, num_frames=6, fps=7), seed=0)
    return dict(stack_dir=tiny_stack_dir(), pairs=pairs, settings=settings, steps=2, max_guidance=3.0,
                device="cpu"), tmp_path_factory.mktemp("teacher-cache")


def _said(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "sfv_train.data"]


def test_bf16_teacher_within_tolerance_of_float32_batched_as_one_by_one(teacher, caplog):
    caplog.set_level(logging.INFO, logger="sfv_train.data")
    args, cache = teacher
    fp32_one = _latents(prepare_teacher(**args, cache_root=cache, batch=1))
    lines = _said(caplog)
    assert len(lines) == 1 and "for 4 of 4 videos, float32, batches of 1" in lines[0] and "min (" in lines[0], lines
    fp32_batched = _latents(prepare_teacher(**args, cache_root=cache / "b", batch=3))
    # float32 rounding of batched matmuls, carried through the sampler: measured 1.7e-5 relative L2
    assert float((fp32_batched - fp32_one).norm() / fp32_one.norm()) < 1e-4
    bf16 = prepare_teacher(**args, cache_root=cache, half=torch.bfloat16, batch=3)
    lines = _said(caplog)
    assert "bfloat16" in lines[-1] and len({f.parent for f in bf16}) == 1
    assert bf16[0].parent != prepare_teacher(**args, cache_root=cache)[0].parent  # per precision
    err = (_latents(bf16) - fp32_one).norm() / fp32_one.norm()
    print(f"bf16 vs float32 teacher latents: relative L2 error {float(err):.4f}")
    assert 0 < err < BF16_TOLERANCE
    assert err < 0.1 * (fp32_one[0] - fp32_one[1]).norm() / fp32_one[1].norm()    # two videos: 130 % apart


def test_cached_teacher_resumes_where_it_stopped(teacher, caplog):
    args, cache = teacher
    files = prepare_teacher(**args, cache_root=cache / "r", batch=2)
    stamps = [f.stat().st_mtime_ns for f in files]
    files[2].unlink()                                            # an interrupted run had not made this one
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="sfv_train.data"):
        again = prepare_teacher(**args, cache_root=cache / "r", batch=2)
    lines = _said(caplog)
    assert again == files and "for 1 of 4 videos" in lines[0]
    assert [f.stat().st_mtime_ns for i, f in enumerate(files) if i != 2] == stamps[:2] + stamps[3:]


def test_work_not_cached_is_shared_out_evenly():
    """After a partial cache, every process gets an equal share of what is left (not of all the videos)."""
    missing = [5, 6, 7, 8]                                       # videos 0-4 were cached by process 0
    assert [my_share(missing, r, 2) for r in (0, 1)] == [[5, 7], [6, 8]]
    assert sorted(sum((my_share(list(range(7)), r, 3) for r in range(3)), [])) == list(range(7))
