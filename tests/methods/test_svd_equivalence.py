"""`svd:N` must reproduce diffusers' StableVideoDiffusionPipeline on the same stack, inputs and seed."""
from __future__ import annotations

import numpy as np
import PIL.Image
import pytest
import torch

from methods import get_method
from methods.models.configs import SVD_SCHEDULER_CONFIG
from methods.models.stacks import load_pipeline
from methods.models.edm import karras_sigmas


def make_image(h, w, seed):
    """A structured RGB test image (gradients + seeded blocks), uint8 (h, w, 3)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.stack([255 * xx / (w - 1), 255 * yy / (h - 1), 128 + 60 * np.sin(xx / 5.0 + yy / 7.0)], -1)
    blocks = rng.integers(-60, 60, (h // 8, w // 8, 3)).repeat(8, 0).repeat(8, 1)
    return np.clip(img + blocks, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def pipe():
    return load_pipeline("tiny")


@pytest.fixture(scope="module")
def svd3():
    return get_method("svd:3").load("tiny")


def _pipeline_frames(pipe, images, seeds, output_type, **kw):
    gens = [torch.Generator("cpu").manual_seed(s) for s in seeds]
    out = pipe([PIL.Image.fromarray(im) for im in images] if len(images) > 1 else PIL.Image.fromarray(images[0]),
               generator=gens if len(seeds) > 1 else gens[0], output_type=output_type, **kw).frames
    if output_type == "pil":
        return np.stack([np.stack([np.asarray(f) for f in video]) for video in out])
    return out


def test_karras_sigmas_equal_svd_scheduler():
    from diffusers import EulerDiscreteScheduler

    sched = EulerDiscreteScheduler.from_config(SVD_SCHEDULER_CONFIG)
    for n in (1, 2, 4, 16, 25):
        sched.set_timesteps(n)
        assert torch.equal(karras_sigmas(n), sched.sigmas), n
        assert torch.equal(0.25 * karras_sigmas(n)[:-1].log(), sched.timesteps), n
    # docs/reference.md#svd-sampler: 4 Karras steps are 700, 70.5, 2.27, 0.002, then 0
    np.testing.assert_allclose(karras_sigmas(4).numpy(), [700, 70.54, 2.269, 0.002, 0], rtol=1e-3)
    assert float(sched.init_noise_sigma) == pytest.approx((700 ** 2 + 1) ** 0.5)


def test_svd_equals_pipeline_bitwise_uint8_and_latents(pipe, svd3):
    """Non-default sizes (48x64, not square), fps, motion bucket, noise aug and decode chunk."""
    img = make_image(48, 64, seed=1)[None]
    cond = dict(num_frames=14, fps=6, motion_bucket_id=90, noise_aug_strength=0.05)
    ours = svd3.generate(img, [1234], decode_chunk_size=5, **cond)
    ref = _pipeline_frames(pipe, img, [1234], "pil", height=48, width=64, num_inference_steps=3,
                           decode_chunk_size=5, **cond)
    assert ours.shape == ref.shape == (1, 14, 48, 64, 3) and ours.dtype == np.uint8
    assert np.array_equal(ours, ref)  # bitwise: same float32 arithmetic, same op order
    assert ours.std() > 1.0  # a non-trivial video, not a constant that would match trivially

    lat = svd3.generate_latents(img, [1234], **cond)
    ref_lat = _pipeline_frames(pipe, img, [1234], "latent", height=48, width=64, num_inference_steps=3, **cond)
    assert ref_lat.shape == lat.shape == (1, 14, 4, 6, 8)
    torch.testing.assert_close(lat, ref_lat, rtol=0, atol=1e-5)
    assert torch.equal(lat, ref_lat)


def test_svd_batch_equals_pipeline_with_generator_list(pipe):
    """B = 2 with one generator per sample, default conditions, 2 steps: the same batched calls."""
    m = get_method("svd:2").load("tiny")
    imgs = np.stack([make_image(64, 64, seed=2), make_image(64, 64, seed=3)])
    ours = m.generate(imgs, [5, 6])
    ref = _pipeline_frames(pipe, imgs, [5, 6], "pil", height=64, width=64, num_frames=14,
                           num_inference_steps=2, decode_chunk_size=14)
    assert ours.shape == (2, 14, 64, 64, 3)
    assert np.array_equal(ours, ref)
    assert m.unet_call_log == [4, 4]  # 2 steps, batch 2 videos x (cond + uncond)
    assert not np.array_equal(ours[0], ours[1])


@pytest.mark.slow
def test_default_geometry_320x240_stretched_to_1024x576_equals_pipeline(pipe):
    """The protocol's default path at the paper's sizes: a 320x240 frame, CLIP computed from it (the
    anti-alias resize 320x240 -> 224 really filters), the frame stretched by PIL Lanczos to 1024x576 and
    encoded, the UNet at 128x72 latents. Compared bitwise as latents: the VAE decode after them does not
    depend on the geometry and is compared with the pipeline's frames above (at 1024x576 it would be
    two thirds of this test's time)."""
    from sfv_core.protocol import Protocol

    frame = make_image(240, 320, seed=4)
    c = Protocol(num_frames=2).conditions()
    assert (c.width, c.height, c.resize) == (1024, 576, "stretch")
    m = get_method("svd:1").load("tiny")
    ours = m.generate_latents([frame], [9], c)
    ref = _pipeline_frames(pipe, [frame], [9], "latent", height=576, width=1024, num_frames=2,
                           num_inference_steps=1, decode_chunk_size=c.decode_chunk_size)
    assert ours.shape == ref.shape == (1, 2, 4, 72, 128)
    assert ours.std() > 0.1 and torch.equal(ours, ref)
