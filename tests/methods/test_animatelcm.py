"""AnimateLCM-SVD-xt's sampler (docs/reference.md#animatelcm-sampler): sigma lists, UNet timesteps, step rule, adapter."""
from __future__ import annotations

import numpy as np
import PIL.Image
import pytest
import torch
from diffusers import CMStochasticIterativeScheduler
from diffusers.utils.torch_utils import randn_tensor

from methods import get_method
from reference.animatelcm_scheduler import AnimateLCMScheduler
from methods.models.edm import Denoiser
from methods.sampling import animatelcm_levels, animatelcm_sigmas, sample_lcm
from methods.models.stacks import load_pipeline


def animatelcm_timesteps(n):
    """UNet timesteps of AnimateLCM's sampler: 0.25 ln sigma of the float64 levels (float64, N)."""
    return torch.from_numpy(0.25 * np.log(animatelcm_levels(n)))

# docs/reference.md#animatelcm-sampler, as written there
FACTS_SIGMAS = {
    1: ["700"],
    2: ["700", "13.678"],
    4: ["700", "128.56", "13.678", "0.4969"],
    8: ["700", "315.74", "128.56", "45.851", "13.678", "3.1666", "0.4969", "0.0398"],
}


@pytest.mark.parametrize("n", [1, 2, 4, 8])
def test_sigmas_and_timesteps_match_facts(n):
    sig = animatelcm_sigmas(n)
    assert sig.dtype == torch.float32 and len(sig) == n + 1 and sig[-1] == 0
    for ours, text in zip(sig[:-1].tolist(), FACTS_SIGMAS[n]):
        decimals = len(text.split(".")[1]) if "." in text else 0
        assert round(ours, decimals) == float(text), (n, ours, text)  # equal to the digits published there
    facts = np.array([float(t) for t in FACTS_SIGMAS[n]])
    np.testing.assert_allclose(animatelcm_timesteps(n).numpy(), 0.25 * np.log(facts), atol=2e-3)
    np.testing.assert_allclose(animatelcm_timesteps(n).numpy(), 0.25 * np.log(sig[:-1].double().numpy()),
                               rtol=1e-6)


@pytest.mark.parametrize("n", [1, 2, 4, 8])
def test_scheduler_subclass_schedule_and_why_it_is_needed(n):
    ours = AnimateLCMScheduler()
    ours.set_timesteps(n)
    assert torch.equal(ours.sigmas, animatelcm_sigmas(n))
    assert torch.equal(ours.timesteps, animatelcm_timesteps(n))
    assert ours.init_noise_sigma == (700.0 ** 2 + 1) ** 0.5
    # diffusers' CMStochasticIterativeScheduler with the same levels: 1000x timesteps, final sigma_min
    plain = CMStochasticIterativeScheduler(num_train_timesteps=40, sigma_min=0.002, sigma_max=700.0, sigma_data=1.0)
    plain.set_timesteps(n)
    assert torch.allclose(plain.timesteps, 1000 * ours.timesteps)
    assert plain.sigmas[-1].item() == pytest.approx(0.002) and ours.sigmas[-1] == 0
    c_skip, c_out = plain.get_scalings_for_boundary_condition(torch.tensor(13.678))
    assert c_out > 0  # epsilon-style sign; AnimateLCM's (v-prediction) c_out is negative
    assert ours.get_scalings_for_boundary_condition(torch.tensor(13.678))[1] < 0


def _toy_unet(sample, t, encoder_hidden_states=None, added_time_ids=None, return_dict=False):
    """A hand-made 'UNet': v = tanh(x_in) * (0.5 + 0.1 t) + 0.05 * image_latent (float32 t, like the UNet)."""
    x_in, image_latent = sample[:, :, :4], sample[:, :, 4:]
    t = torch.as_tensor(t).float()
    return (torch.tanh(x_in) * (0.5 + 0.1 * t) + 0.05 * image_latent,)


def _toy_denoiser(b=2, t=3):
    lat = torch.linspace(-1, 1, b * t * 4 * 2 * 3).reshape(b, t, 4, 2, 3)
    return Denoiser(_toy_unet, torch.zeros(b, 1, 8), lat, torch.zeros(b, 3)), lat


@pytest.mark.parametrize("n", [1, 2, 4, 8])
def test_sample_lcm_equals_scheduler_subclass_loop(n):
    den, lat = _toy_denoiser()
    noise = randn_tensor(lat.shape, generator=[torch.Generator().manual_seed(s) for s in (1, 2)])
    ours = sample_lcm(den, noise, animatelcm_sigmas(n), [torch.Generator().manual_seed(s) for s in (10, 11)])

    sched = AnimateLCMScheduler()
    sched.set_timesteps(n)
    gens = [torch.Generator().manual_seed(s) for s in (10, 11)]
    x = noise * sched.init_noise_sigma
    for t in sched.timesteps:
        x_in = sched.scale_model_input(x, t)
        v = _toy_unet(torch.cat([x_in, lat], 2), t)[0]
        x = sched.step(v, t, x, generator=gens).prev_sample
    # same rule; float32 rounding differs (c_skip * x vs x / (s^2 + 1), float64 vs float32 timesteps)
    torch.testing.assert_close(ours, x, rtol=1e-5, atol=1e-5)
    assert ours.abs().max() > 0.1


def test_step_rule_on_hand_made_denoiser():
    """x_0 = sqrt(700^2+1) n; x_{i+1} = D(x_i; s_i) + s_{i+1} z_i, z_i fresh per-sample draws."""
    calls = []

    class Den:
        dtype, device = torch.float32, torch.device("cpu")

        def __call__(self, x, s):
            calls.append(float(s))
            return 0.5 * x.float() / (1.0 + float(s))

    sig = animatelcm_sigmas(4)
    noise = torch.randn(2, 3, 4, 2, 2, generator=torch.Generator().manual_seed(0))
    out = sample_lcm(Den(), noise, sig, [torch.Generator().manual_seed(s) for s in (3, 4)])
    gens = [torch.Generator().manual_seed(s) for s in (3, 4)]
    x = noise * (700.0 ** 2 + 1) ** 0.5
    for i in range(4):
        x0 = 0.5 * x / (1.0 + float(sig[i]))
        z = torch.cat([torch.randn(1, 3, 4, 2, 2, generator=g) for g in gens])
        x = x0 + float(sig[i + 1]) * z
    torch.testing.assert_close(out, x, rtol=1e-6, atol=1e-6)
    assert calls == pytest.approx(sig[:-1].tolist())
    # one step: no fresh noise at all (the generators are not consumed)
    g = [torch.Generator().manual_seed(3)]
    one = sample_lcm(Den(), noise[:1], animatelcm_sigmas(1), g)
    torch.testing.assert_close(one, 0.5 * noise[:1] * (700.0 ** 2 + 1) ** 0.5 / 701.0)
    assert torch.equal(torch.randn(3, generator=g[0]), torch.randn(3, generator=torch.Generator().manual_seed(3)))


@pytest.fixture(scope="module")
def pipe():
    return load_pipeline("tiny")


def test_adapter_equals_reference_loop_on_tiny_stack(pipe):
    """animatelcm:2 on the tiny UNet == a loop over diffusers' own pipeline helpers + the subclass."""
    h = w = 64
    frames = 6
    img = np.random.default_rng(0).integers(0, 256, (1, h, w, 3), dtype=np.uint8)
    m = get_method("animatelcm:2", gen_frames=frames).load("tiny")
    ours = m.generate_latents(img, [42], num_frames=frames)
    assert m.unet_call_log == [1, 1]  # no CFG: 2 calls of batch 1
    assert m.unet_calls_per_video() == {"calls": 2, "batch": 1}

    g = torch.Generator("cpu").manual_seed(42)
    pil = PIL.Image.fromarray(img[0])
    emb = pipe._encode_image(pil, "cpu", 1, False)
    image = pipe.video_processor.preprocess(pil, height=h, width=w)
    image = image + 0.02 * randn_tensor(image.shape, generator=g, dtype=image.dtype)
    lat = pipe._encode_vae_image(image, "cpu", 1, False).to(emb.dtype).unsqueeze(1).repeat(1, frames, 1, 1, 1)
    ids = pipe._get_add_time_ids(6, 127, 0.02, emb.dtype, 1, 1, False)
    sched = AnimateLCMScheduler()
    sched.set_timesteps(2)
    x = randn_tensor((1, frames, 4, h // 8, w // 8), generator=g) * sched.init_noise_sigma
    with torch.no_grad():
        for t in sched.timesteps:
            x_in = torch.cat([sched.scale_model_input(x, t), lat], 2)
            v = pipe.unet(x_in, t, encoder_hidden_states=emb, added_time_ids=ids, return_dict=False)[0]
            x = sched.step(v, t, x, generator=g).prev_sample
    torch.testing.assert_close(ours, x, rtol=1e-5, atol=1e-5)  # observed: ~1 float32 ulp


def test_gen_frames_returns_first_frames_and_state_dict_unet(tmp_path, pipe):
    """25-frame model scored on 14 frames: generating T_gen and keeping the first T == slicing the full
    video; the UNet also loads from a .safetensors state dict (AnimateLCM's release format)."""
    from safetensors.torch import save_file

    img = np.random.default_rng(1).integers(0, 256, (1, 32, 32, 3), dtype=np.uint8)
    full = get_method("animatelcm:1", gen_frames=0).load("tiny").generate(img, [3], num_frames=5, decode_chunk_size=3)
    path = tmp_path / "AnimateLCM-SVD-xt.safetensors"
    save_file({k: v.contiguous() for k, v in pipe.unet.state_dict().items()}, str(path))
    m = get_method("animatelcm:1", gen_frames=5, unet=str(path)).load("tiny")
    assert m.unet_source == str(path)
    first = m.generate(img, [3], num_frames=3, decode_chunk_size=3)
    assert first.shape == (1, 3, 32, 32, 3)
    assert np.array_equal(first, full[:, :3])


def test_default_is_the_official_decode_25_frames_in_chunks_of_8_then_first_14(pipe):
    """The official batch_inference.py decodes all 25 latents with decode_chunk_size=8 and keeps
    frames; decoding only the first 14 latents in one chunk gives other pixels (the temporal decoder
    mixes frames within a chunk), kept as decode_frames=kept."""
    from methods.models.conditioning import decode_latents, frames_to_uint8

    img = np.random.default_rng(2).integers(0, 256, (1, 32, 32, 3), dtype=np.uint8)
    m = get_method("animatelcm:1").load("tiny")
    assert (m.options["gen_frames"], m.options["decode_chunk_size"], m.options["decode_frames"]) == (25, 8, "all")
    video = m.generate(img, [5], num_frames=14, decode_chunk_size=14)
    lat = m.generate_latents(img, [5], num_frames=14)
    assert lat.shape[1] == 25
    assert np.array_equal(video, frames_to_uint8(decode_latents(pipe.vae, lat, 8)[:, :14]))
    kept = get_method("animatelcm:1", decode_frames="kept").load("tiny").generate(img, [5], num_frames=14,
                                                                                    decode_chunk_size=14)
    assert np.array_equal(kept, frames_to_uint8(decode_latents(pipe.vae, lat[:, :14], 14)))
    assert not np.array_equal(kept, video)


def test_weights_default_to_release_1_1_and_are_recorded(tmp_path, pipe):
    """A repo folder holding both releases: 1.1 by default (the paper's AnimateLCM-xt1.1), 1.0 on request;
    the file and its sha256 are part of what a results record says about the method."""
    from safetensors.torch import save_file

    from sfv_core.fsutil import sha256_file

    repo = tmp_path / "AnimateLCM-SVD-xt"
    repo.mkdir()
    sd = {k: v.contiguous() for k, v in pipe.unet.state_dict().items()}
    save_file(sd, str(repo / "AnimateLCM-SVD-xt.safetensors"))
    save_file({k: v + 1e-3 for k, v in sd.items()}, str(repo / "AnimateLCM-SVD-xt-1.1.safetensors"))
    for name, weights in ((None, "AnimateLCM-SVD-xt-1.1.safetensors"), ("AnimateLCM-SVD-xt.safetensors",) * 2):
        m = get_method("animatelcm:2", unet=str(repo), **({"weights_name": name} if name else {}))
        m.check("tiny")
        d = m.describe()
        assert d["unet_file"] == str(repo / weights) and d["unet_sha256"] == sha256_file(repo / weights)
