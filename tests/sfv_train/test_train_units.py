"""sfv_train: noise levels, D-noise distributions, EDM generator, losses (closed forms and references)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.stats import norm

from sfv_train import losses
from helpers import tiny_unet
from methods.models.edm import Denoiser, karras_levels
from methods.models.edm import scalings as edm_scalings
from sfv_train.ema import ema_update
from sfv_train.noise import NoiseSampler, discrete_lognormal_probs, generator_sigmas


def denoise(unet, x, sigma, cond_latents, image_embeds, added_time_ids):
    return Denoiser(unet, image_embeds, cond_latents, added_time_ids)(x, sigma)


def test_generator_levels_match_facts_and_diffusers():
    g = generator_sigmas(4)
    # docs/reference.md#one-step-generator: {0.002, 2.269, 70.54, 700}
    assert torch.allclose(g, torch.tensor([0.002, 2.269, 70.54, 700.0], dtype=torch.float64), rtol=3e-4)
    # diffusers' EulerDiscreteScheduler with SVD's config, 4 steps: 700, 70.54, 2.269, 0.002, 0
    from diffusers import EulerDiscreteScheduler

    from methods.models.configs import SVD_SCHEDULER_CONFIG
    sched = EulerDiscreteScheduler.from_config(SVD_SCHEDULER_CONFIG)
    sched.set_timesteps(4)
    assert torch.allclose(g.flip(0).float(), sched.sigmas[:4], rtol=1e-6)


def test_generator_draws_only_upper_three_levels_uniformly():
    ns = NoiseSampler("lognormal-discrete")
    idx, sigma = ns.sample_g(6000, torch.Generator().manual_seed(0))
    counts = torch.bincount(idx, minlength=4)
    assert counts[0] == 0
    assert (counts[1:] - 2000).abs().max() < 200
    assert torch.equal(sigma, generator_sigmas()[idx])


@pytest.mark.parametrize("p_mean,p_std", [(-2.0, -1.0), (-1.0, -1.0), (0.0, 1.0), (1.0, 1.0), (0.5, 0.3)])
def test_discrete_lognormal_equals_normal_cdf_differences(p_mean, p_std):
    p = discrete_lognormal_probs(p_mean, p_std, 1000).numpy()
    s = karras_levels(1000).numpy()
    assert s[0] == pytest.approx(0.002) and s[-1] == pytest.approx(700.0) and len(s) == 1000
    cdf = norm.cdf((np.log(s) - p_mean) / abs(p_std))
    ref = np.concatenate([[0.0], np.diff(cdf)])
    ref /= ref.sum()
    np.testing.assert_allclose(p, ref, rtol=1e-9, atol=1e-15)
    assert p[0] == 0.0


def test_negative_std_is_its_magnitude_and_draws_follow_probs():
    assert torch.equal(discrete_lognormal_probs(-1, -1), discrete_lognormal_probs(-1, 1))
    ns = NoiseSampler("lognormal-discrete", -1.0, -1.0)
    sig = ns.sample_d(torch.ones(20000, dtype=torch.long), torch.Generator().manual_seed(1))
    assert set(sig.tolist()) <= set(karras_levels(1000).tolist())
    expected = float((ns.d_probs * ns.d_levels.log()).sum())
    assert float(sig.log().mean()) == pytest.approx(expected, abs=0.03)
    assert expected == pytest.approx(-1.0, abs=0.05)        # the discretisation keeps the mean near P_mean


def test_next_level_is_ufogen_rule():
    ns = NoiseSampler("next-level")
    g = generator_sigmas()
    sig = ns.sample_d(torch.tensor([1, 2, 3]), torch.Generator())
    assert torch.equal(sig, torch.stack([g[0], g[1], g[2]]))


def test_lognormal_is_ladd_rule():
    ns = NoiseSampler("lognormal", 0.0, 1.0)
    sig = ns.sample_d(torch.ones(20000, dtype=torch.long), torch.Generator().manual_seed(2))
    assert float(sig.log().mean()) == pytest.approx(0.0, abs=0.03)
    assert float(sig.log().std()) == pytest.approx(1.0, abs=0.03)
    wide = NoiseSampler("lognormal", 0.0, 20.0).sample_d(torch.ones(2000, dtype=torch.long), torch.Generator())
    assert float(wide.min()) == pytest.approx(0.002) and float(wide.max()) == pytest.approx(700.0)


def test_edm_scalings_closed_form():
    s = torch.tensor([0.5, 700.0], dtype=torch.float64)
    c_skip, c_out, c_in, c_noise = edm_scalings(s)
    torch.testing.assert_close(c_skip, 1 / (s ** 2 + 1))
    torch.testing.assert_close(c_out, -s / torch.sqrt(s ** 2 + 1))
    torch.testing.assert_close(c_in, 1 / torch.sqrt(s ** 2 + 1))
    torch.testing.assert_close(c_noise, 0.25 * torch.log(s))


@pytest.fixture(scope="module")
def unet_and_cond():
    unet = tiny_unet(0).eval()
    g = torch.Generator().manual_seed(0)
    b, t = 2, 3
    cond = dict(cond_latents=torch.randn(b, 4, 8, 8, generator=g), image_embeds=torch.randn(b, 1, 32, generator=g),
                added_time_ids=torch.tensor([[6.0, 127.0, 0.02]] * b))
    return unet, cond, torch.randn(b, t, 4, 8, 8, generator=g)


@torch.no_grad()
def test_one_step_generator_equals_diffusers_euler_step(unet_and_cond):
    """x0_hat at sigma 700 = diffusers' EulerDiscreteScheduler (SVD config, 1 step, v-prediction)."""
    from diffusers import EulerDiscreteScheduler

    from methods.models.configs import SVD_SCHEDULER_CONFIG
    unet, cond, noise = unet_and_cond
    sched = EulerDiscreteScheduler.from_config(SVD_SCHEDULER_CONFIG)
    sched.set_timesteps(1)
    x = noise * 700.0
    t = sched.timesteps[0]
    inp = torch.cat([sched.scale_model_input(x, t),
                     cond["cond_latents"][:, None].expand(-1, x.shape[1], -1, -1, -1)], dim=2)
    v = unet(inp, t, cond["image_embeds"], cond["added_time_ids"]).sample
    step = sched.step(v, t, x)
    ours = denoise(unet, x, torch.full((2,), 700.0), **cond)
    torch.testing.assert_close(ours, step.pred_original_sample, rtol=1e-5, atol=1e-5)
    # the Euler update x + (x - x0) / s * (0 - s) cancels |x| ~ 2000 in float32: ulp(2048) = 1.2e-4
    torch.testing.assert_close(ours, step.prev_sample, rtol=0, atol=5e-4)


@torch.no_grad()
def test_per_sample_sigmas_equal_methods_denoiser(unet_and_cond):
    """Each sample of a mixed-sigma batch (training) equals the scalar-sigma denoiser (sampling) at its sigma."""
    SVDDenoiser = Denoiser
    unet, cond, noise = unet_and_cond
    sig = torch.tensor([2.269, 70.54])
    x = noise * sig.view(-1, 1, 1, 1, 1)
    ours = denoise(unet, x, sig, **cond)
    t = x.shape[1]
    for i in range(2):
        den = SVDDenoiser(unet, cond["image_embeds"][i:i + 1],
                          cond["cond_latents"][i:i + 1, None].expand(-1, t, -1, -1, -1),
                          cond["added_time_ids"][i:i + 1])
        torch.testing.assert_close(ours[i:i + 1], den(x[i:i + 1], sig[i]), rtol=1e-5, atol=1e-5)


def test_pseudo_huber_hinge_and_accuracy_closed_forms():
    x0 = torch.zeros(2, 1, 1, 1, 3)
    x0_hat = torch.tensor([[1.0, 2.0, 2.0], [0.0, 0.0, 0.0]]).view(2, 1, 1, 1, 3)   # ||d||^2 = 9 and 0
    assert float(losses.pseudo_huber(x0_hat, x0, 4.0)) == pytest.approx(((5 - 4) + 0) / 2)
    assert float(losses.mse(x0_hat, x0)) == pytest.approx(9 / 6)
    assert losses.huber_c_auto(torch.zeros(2, 14, 4, 56, 96)) == pytest.approx(0.00054 * math.sqrt(14 * 4 * 56 * 96))
    real = [torch.tensor([[2.0, 0.0]]), torch.tensor([[0.5]])]
    fake = [torch.tensor([[-2.0, 0.5]]), torch.tensor([[-1.0]])]
    # head 1: real (0 + 1)/2 + fake (0 + 1.5)/2 = 1.25; head 2: 0.5 + 0 = 0.5 -> mean 0.875
    assert float(losses.hinge_d(real, fake)) == pytest.approx(0.875)
    assert float(losses.hinge_g(fake)) == pytest.approx(-((-1.5 / 2) + (-1.0)) / 2)
    assert losses.accuracy(real, True) == pytest.approx(2 / 3)
    assert losses.accuracy(fake, False) == pytest.approx(2 / 3)


def test_r1_exact_and_approx_on_closed_form_score():
    a = torch.tensor(0.7)
    x = torch.randn(3, 5, requires_grad=True)
    score = (a * x.square()).sum(1)                       # grad = 2 a x
    r1 = losses.r1_exact(score, x)
    assert float(r1.detach()) == pytest.approx(float((2 * a * x.detach()).square().sum(1).mean()), rel=1e-6)
    r1.backward()                                          # double backward works
    torch.testing.assert_close(x.grad, 8 * a * a * x.detach() / 3)
    # approx: for a linear score s = w.x, (s(x + eps n) - s(x))^2 / eps^2 = (w.n)^2, mean over n -> ||w||^2
    w = torch.randn(50)
    xs = torch.randn(4000, 50)
    n = torch.randn(4000, 50)
    approx = losses.r1_approx(xs @ w, (xs + 0.01 * n) @ w, 0.01)
    assert float(approx) == pytest.approx(float(w.square().sum()), rel=0.08)


def test_ema_update_rule():
    a, b = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    wa = a.weight.detach().clone()
    ema_update(a, b, 0.95)
    torch.testing.assert_close(a.weight, 0.95 * wa + 0.05 * b.weight.detach())


def test_reconstruction_reductions_and_presets():
    """The reduction is explicit: whole-video (sum / norm) vs per element (mean); UFOGen's term is the
    v-space denoising loss (weight (s^2+1)/s^2, element mean, lambda 1), SF-V's the pseudo-Huber averaged
    over elements with lambda 0.01 (the paper-literal whole-video form with lambda 0.1 stays one flag away)."""
    from sfv_train.config import TrainConfig

    x0 = torch.zeros(2, 1, 1, 2, 2)
    x0_hat = torch.stack([torch.full((1, 1, 2, 2), 1.0), torch.full((1, 1, 2, 2), 2.0)])   # d^2 = 1 and 4
    assert float(losses.mse(x0_hat, x0, "element")) == pytest.approx((1 + 4) / 2)
    assert float(losses.mse(x0_hat, x0, "video")) == pytest.approx((4 * 1 + 4 * 4) / 2)
    sig = torch.tensor([1.0, 2.0], dtype=torch.float64)
    w = losses.diffusion_weight(sig)
    assert w.tolist() == pytest.approx([2.0, 1.25])
    assert float(losses.mse(x0_hat, x0, "element", w)) == pytest.approx((2 * 1 + 1.25 * 4) / 2)
    assert float(losses.pseudo_huber(x0_hat, x0, 0.0, "element")) == pytest.approx((1 + 2) / 2)
    assert float(losses.pseudo_huber(x0_hat, x0, 0.0, "video")) == pytest.approx((2 + 4) / 2)   # ||d|| = 2, 4
    sfv = TrainConfig(data="d", out="o", method="sfv").resolved()
    ufo = TrainConfig(data="d", out="o", method="ufogen").resolved()
    assert (sfv.recon, sfv.recon_reduction, sfv.recon_weight) == ("pseudo-huber", "element", 0.01)
    paper = TrainConfig(data="d", out="o", method="sfv", recon_reduction="video", recon_weight=0.1).resolved()
    assert (paper.recon, paper.recon_reduction, paper.recon_weight) == ("pseudo-huber", "video", 0.1)
    assert (ufo.recon, ufo.recon_reduction, ufo.recon_weight) == ("diffusion", "element", 1.0)
    assert TrainConfig(data="d", out="o", method="ufogen", recon_weight=0.3).resolved().recon_weight == 0.3


def test_clip_settings_hold_the_generation_conditions_and_keep_their_cache_key():
    from sfv_core.protocol import GenerationConditions
    from sfv_train.config import TrainConfig
    from sfv_train.data import ClipSettings

    cfg = TrainConfig()
    s = ClipSettings.of(cfg)
    assert s.conditions == GenerationConditions.of(None, width=cfg.width, height=cfg.height, num_frames=cfg.num_frames,
                                                   fps=cfg.fps, motion_bucket_id=cfg.motion_bucket_id,
                                                   noise_aug_strength=cfg.noise_aug_strength, resize=cfg.resize)
    # the latent caches' key: the same values under the same names as the earlier flat settings
    assert s.cache_key() == {"width": cfg.width, "height": cfg.height, "num_frames": cfg.num_frames, "fps": cfg.fps,
                             "motion_bucket_id": cfg.motion_bucket_id, "noise_aug_strength": cfg.noise_aug_strength,
                             "seed": cfg.seed, "resize": cfg.resize}
    with pytest.raises(ValueError, match="width"):
        ClipSettings(GenerationConditions(), seed=0)
