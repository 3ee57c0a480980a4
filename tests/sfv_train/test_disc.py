"""sfv_train discriminator: frozen encoder == the UNet's own forward, heads, gradients, exact R1."""
from __future__ import annotations

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from sfv_train import losses
from sfv_train.disc import Discriminator
from helpers import TINY_UNET_CONFIG, tiny_unet

# a 4-block variant (the real SVD layout: 3 downsampling blocks + 1 that keeps the resolution)
FOUR_BLOCKS = dict(TINY_UNET_CONFIG, block_out_channels=(32, 32, 64, 64), num_attention_heads=(1, 1, 2, 2),
                   down_block_types=("CrossAttnDownBlockSpatioTemporal",) * 3 + ("DownBlockSpatioTemporal",),
                   up_block_types=("UpBlockSpatioTemporal",) + ("CrossAttnUpBlockSpatioTemporal",) * 3)


def _unet(config):
    from diffusers import UNetSpatioTemporalConditionModel
    torch.manual_seed(0)
    return UNetSpatioTemporalConditionModel(**config).eval()


def _inputs(b=2, t=3, h=8, w=8, d=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return dict(x=torch.randn(b, t, 4, h, w, generator=g), c_noise=torch.tensor([0.3, -1.1])[:b],
                cond_latents=torch.randn(b, 4, h, w, generator=g), image_embeds=torch.randn(b, 1, d, generator=g),
                added_time_ids=torch.tensor([[6.0, 127.0, 0.02]] * b))


@pytest.mark.parametrize("config,size", [(TINY_UNET_CONFIG, 8), (FOUR_BLOCKS, 16)], ids=["tiny-2blocks", "4blocks"])
@torch.no_grad()
def test_encoder_features_equal_unet_forward(config, size):
    """Hooks on the real UNet's down blocks see exactly the features the frozen encoder returns."""
    unet = _unet(config)
    disc = Discriminator(unet)
    inp = _inputs(h=size, w=size)
    t = inp["x"].shape[1]
    sample = torch.cat([inp["x"], inp["cond_latents"][:, None].expand(-1, t, -1, -1, -1)], dim=2)
    seen = {}
    hooks = [blk.register_forward_hook(lambda m, i, o, k=k: seen.__setitem__(k, o[0]))
             for k, blk in enumerate(unet.down_blocks)]
    unet(sample, inp["c_noise"], inp["image_embeds"], inp["added_time_ids"])
    for h in hooks:
        h.remove()
    feats = disc.backbone(sample, inp["c_noise"], inp["image_embeds"], inp["added_time_ids"])
    assert len(feats) == len(unet.down_blocks) == len(config["block_out_channels"])
    for k, f in enumerate(feats):
        assert torch.equal(f, seen[k]), f"block {k} differs"
    if len(feats) == 4:      # three downsampling blocks, the last keeps the resolution
        assert [f.shape[-1] for f in feats] == [size // 2, size // 4, size // 8, size // 8]
    # the copy is frozen and independent of later changes to the generator
    assert not any(p.requires_grad for p in disc.backbone.parameters())
    unet.conv_in.weight.add_(1.0)
    assert torch.equal(disc.backbone(sample, inp["c_noise"], inp["image_embeds"], inp["added_time_ids"])[0], feats[0])


@pytest.mark.parametrize("heads,count", [("both", 4), ("spatial", 2), ("temporal", 2)])
def test_heads_shapes_and_gradients(heads, count):
    """Logits per head; no gradient reaches the backbone; every head (temporal ones too) gets one."""
    disc = Discriminator(tiny_unet(0), heads=heads)
    disc.train()
    inp = _inputs()
    x = inp.pop("x")
    logits = disc(x, **inp)
    assert len(logits) == count
    b, t = x.shape[:2]
    sizes = {"spatial": [t * 16, t * 16], "temporal": [16 * t, 16 * t]}  # 4x4 features after both blocks
    want = ([s for pair in zip(sizes["spatial"], sizes["temporal"]) for s in pair] if heads == "both" else sizes[heads])
    assert [tuple(lg.shape) for lg in logits] == [(b, s) for s in want]
    losses.hinge_d(logits, [-lg for lg in logits]).backward()
    assert all(p.grad is None for p in disc.backbone.parameters())
    for group in (disc.spatial, disc.temporal):
        for head in group:
            grads = [p.grad for p in head.parameters()]
            assert all(g is not None and torch.isfinite(g).all() and g.abs().sum() > 0 for g in grads)
    assert len(disc.temporal) == (2 if heads in ("both", "temporal") else 0)


def test_frame_index_and_sigma_condition_change_the_logits():
    """Projection conditioning: the same feature at another frame index or sigma' gets another logit."""
    disc = Discriminator(tiny_unet(0))
    inp = _inputs(b=1)
    x = inp.pop("x")
    x = x[:, :1].expand(-1, 3, -1, -1, -1).contiguous()     # identical frames
    with torch.no_grad():
        lg = disc(x, **inp)[0].view(3, 16)                   # spatial head of block 0: (t, h*w)
        assert not torch.allclose(lg[0], lg[1])
        inp2 = dict(inp, c_noise=inp["c_noise"] + 0.5)
        assert not torch.allclose(disc(x, **inp2)[0], disc(x, **inp)[0])


def test_exact_r1_double_backward_under_math_backend_with_checkpointing():
    """Exact R1 (double backward) through the frozen backbone; gradient checkpointing gives the same numbers."""
    results = []
    for ckpt in (False, True):
        disc = Discriminator(tiny_unet(0))
        if ckpt:
            disc.backbone.enable_gradient_checkpointing()
        inp = _inputs(seed=3)
        x = inp.pop("x").requires_grad_(True)
        with sdpa_kernel(SDPBackend.MATH):
            logits = disc(x, **inp)
            r1 = losses.r1_exact(losses.score(logits), x)
            r1.backward()
        # parameters that only shift the score (biases after the last nonlinearity) get no R1 gradient
        grads = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).flatten()
                           for p in disc.head_parameters()])
        assert torch.isfinite(r1) and r1 > 0 and grads.abs().sum() > 0
        assert all(p.grad is None for p in disc.backbone.parameters())
        results.append((r1.detach(), grads))
    torch.testing.assert_close(results[0][0], results[1][0], rtol=1e-5, atol=0)
    torch.testing.assert_close(results[0][1], results[1][1], rtol=1e-4, atol=1e-9)


def test_exact_r1_matches_finite_difference():
    """||grad s||^2 from autograd equals a central finite difference along the gradient direction."""
    torch.manual_seed(0)
    disc = Discriminator(tiny_unet(0)).double()
    disc.eval()     # local batch norm still uses batch statistics; eval only stops the power iteration
    inp = {k: v.double() for k, v in _inputs(b=1, seed=5).items()}
    x = inp.pop("x").requires_grad_(True)
    with sdpa_kernel(SDPBackend.MATH):
        s = losses.score(disc(x, **inp))
        (g,) = torch.autograd.grad(s.sum(), x)
        r1 = float(g.square().sum())
        u = g / g.norm()
        eps = 1e-5
        with torch.no_grad():
            fd = (losses.score(disc(x + eps * u, **inp)) - losses.score(disc(x - eps * u, **inp))) / (2 * eps)
    assert float(fd) ** 2 == pytest.approx(r1, rel=1e-6)


# ------------------------------------------------------------------------ --d-norm: the heads' batch norm

def _group_norm_reference(x, groups, weight, bias, eps=1e-5):
    """Each group (a list of row indices) normalised by the mean / biased variance per channel over all its
    rows and positions, then the affine part."""
    out = torch.empty_like(x)
    dims = [0] + list(range(2, x.ndim))
    view = [1, -1] + [1] * (x.ndim - 2)
    for rows in groups:
        xs = x[rows]
        mean, var = xs.mean(dims, keepdim=True), xs.var(dims, unbiased=False, keepdim=True)
        out[rows] = (xs - mean) / torch.sqrt(var + eps) * weight.view(view) + bias.view(view)
    return out


def _bn(mode, channels=3, seed=0):
    from sfv_train.disc import BatchNormLocal
    bn = BatchNormLocal(channels, mode=mode)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        bn.weight.copy_(1 + torch.randn(channels, generator=g))
        bn.bias.copy_(torch.randn(channels, generator=g))
    return bn


@pytest.mark.parametrize("shape,size", [((12, 3, 2, 2), 6), ((16, 3, 5), 8), ((9, 3, 4), 3), ((7, 3, 2, 3), 7),
                                        ((1, 3, 4), 1)])
def test_frames_mode_is_groups_of_up_to_8_consecutive_rows(shape, size):
    """The shipped rule: the largest group size <= 8 dividing the rows; the video count changes nothing."""
    bn = _bn("frames")
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(1)) * 3 + 1
    want = _group_norm_reference(x, [list(range(i, i + size)) for i in range(0, shape[0], size)], bn.weight, bn.bias)
    with torch.no_grad():
        torch.testing.assert_close(bn(x), want, rtol=1e-5, atol=1e-5)
        assert torch.equal(bn(x, videos=3 if shape[0] % 3 == 0 else 1), bn(x))


@pytest.mark.parametrize("videos,rows,per_group", [(12, 3, 6), (3, 4, 3), (10, 2, 5), (16, 2, 8)])
def test_videos_mode_groups_whole_videos(videos, rows, per_group):
    """videos=b: (b * rows, ...) video-major; a group is all rows of up to 8 whole videos, its statistic the
    mean / variance over all of them."""
    bn = _bn("videos")
    x = torch.randn(videos * rows, 3, 2, 2, generator=torch.Generator().manual_seed(2)) * 2 - 1
    groups = [list(range(v * rows, (v + per_group) * rows)) for v in range(0, videos, per_group)]
    with torch.no_grad():
        got = bn(x, videos=videos)
        torch.testing.assert_close(got, _group_norm_reference(x, groups, bn.weight, bn.bias), rtol=1e-5, atol=1e-5)
        # normalised per group: (got - bias) / weight has mean 0 and variance ~1 per channel over each group
        z = (got - bn.bias.view(1, -1, 1, 1)) / bn.weight.view(1, -1, 1, 1)
        for rows_ in groups:
            torch.testing.assert_close(z[rows_].mean((0, 2, 3)), torch.zeros(3), rtol=0, atol=1e-5)
            torch.testing.assert_close(z[rows_].var((0, 2, 3), unbiased=False), torch.ones(3), rtol=0, atol=1e-3)
        assert torch.equal(bn(x), _bn("frames")(x))          # no video count: rows are the samples


def test_none_mode_is_the_affine_part_only():
    bn = _bn("none")
    x = torch.randn(5, 3, 4, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        assert torch.equal(bn(x, videos=5), x * bn.weight.view(1, -1, 1) + bn.bias.view(1, -1, 1))
        assert torch.equal(bn(x[:2]), bn(x)[:2])                # no statistic across rows


@pytest.mark.parametrize("heads,kinds", [("both", ["spatial", "temporal"] * 2), ("spatial", ["spatial"] * 2),
                                         ("temporal", ["temporal"] * 2)])
def test_head_kinds_follow_the_forward_list(heads, kinds):
    disc = Discriminator(tiny_unet(0), heads=heads)
    assert disc.head_kinds == kinds
    seen = []
    hooks = [h.register_forward_hook(lambda m, i, o, k=kind: seen.append((k, o)))
             for kind, group in (("spatial", disc.spatial), ("temporal", disc.temporal)) for h in group]
    inp = _inputs()
    x = inp.pop("x")
    with torch.no_grad():
        logits = disc(x, **inp)
    for h in hooks:
        h.remove()
    assert [k for k, _ in seen] == disc.head_kinds and len(logits) == len(kinds)
    for lg, (_, o) in zip(logits, seen):
        assert torch.equal(lg, o.reshape(x.shape[0], -1))
    with pytest.raises(ValueError, match="norm must be one of"):
        Discriminator(tiny_unet(0), norm="batch")


def _pair_trainer(norm):
    """A Trainer holding only what _disc / _disc_pair use (no setup). Eval mode: the power iteration of the
    spectral norm stays put between calls (the local batch norm uses batch statistics in both modes)."""
    from sfv_train.trainer import Trainer
    t = Trainer.__new__(Trainer)
    torch.manual_seed(0)
    t.D, t.device, t.bf16 = Discriminator(tiny_unet(0), norm=norm).eval(), torch.device("cpu"), False
    return t


def _pair_inputs(b=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    cond = {"cond_latent": torch.randn(b, 4, 8, 8, generator=g), "image_embeds": torch.randn(b, 1, 32, generator=g),
            "added_time_ids": torch.tensor([[6.0, 127.0, 0.02]] * b)}
    real, fake = torch.randn(b, 3, 4, 8, 8, generator=g), torch.randn(b, 3, 4, 8, 8, generator=g)
    return real, fake, torch.tensor([0.5, 3.0])[:b], cond


@torch.no_grad()
def test_disc_pair_videos_is_one_call_on_the_interleaved_batch():
    t = _pair_trainer("videos")
    real, fake, sigma, cond = _pair_inputs()
    calls = []
    real_forward = t.D.forward
    t.D.forward = lambda x, c_noise, *rest: (calls.append((x, c_noise, rest)), real_forward(x, c_noise, *rest))[1]
    lr, lf = t._disc_pair(real, fake, sigma, cond)
    (x, c_noise, (cond_latents, embeds, time_ids)), = calls
    assert torch.equal(x, torch.stack([real[0], fake[0], real[1], fake[1]]))        # r0 f0 r1 f1
    assert torch.equal(c_noise, 0.25 * torch.tensor([0.5, 0.5, 3.0, 3.0]).log())
    assert torch.equal(embeds, cond["image_embeds"].repeat_interleave(2, 0))
    assert torch.equal(cond_latents, cond["cond_latent"].repeat_interleave(2, 0))
    assert torch.equal(time_ids, cond["added_time_ids"].repeat_interleave(2, 0))
    both = real_forward(x, c_noise, cond_latents, embeds, time_ids)
    assert len(lr) == len(lf) == len(both) == 4
    for a, c, o in zip(lr, lf, both):
        assert a.shape == c.shape == (2, o.shape[1]) and torch.equal(a, o[0::2]) and torch.equal(c, o[1::2])


@pytest.mark.parametrize("norm,shared", [("videos", True), ("frames", False), ("none", False)])
@torch.no_grad()
def test_a_fake_video_moves_the_real_logits_only_with_shared_statistics(norm, shared):
    t = _pair_trainer(norm)
    real, fake, sigma, cond = _pair_inputs()
    lr, lf = t._disc_pair(real, fake, sigma, cond)
    other = fake.clone()
    other[1] += 2.0
    lr2, lf2 = t._disc_pair(real, other, sigma, cond)
    assert not all(torch.equal(a, c) for a, c in zip(lf, lf2))
    if shared:
        assert all(not torch.allclose(a, c, rtol=1e-4, atol=0) for a, c in zip(lr, lr2))
    else:
        assert all(torch.equal(a, c) for a, c in zip(lr, lr2))
        assert all(torch.equal(a, c) for a, c in zip(lr, t._disc(real, sigma, cond)))   # two separate calls


def test_d_norm_option_is_validated_and_compared_on_resume(tmp_path, capsys):
    """--d-norm: videos by default (since the SF-V study); a bad value is one line; a resume keeps the run's
    value (a run written when frames was the default resumes as frames) and may not change it."""
    import json

    from bench.cli import train_main
    from sfv_core.errors import UserError
    from sfv_train.config import D_NORM_CHOICES, TrainConfig, resume_defaults
    from sfv_train.trainer import Trainer

    def cfg(**kw):
        return TrainConfig(data=str(tmp_path), out=str(tmp_path / "run"), stack="tiny", **kw)

    assert D_NORM_CHOICES == ("videos", "frames", "none") and cfg().resolved().d_norm == "frames"
    with pytest.raises(UserError, match=r"d_norm = 'batch': --d-norm takes 'videos', 'frames' or 'none'"):
        cfg(d_norm="batch").resolved()
    assert train_main(["--stack", "tiny", "--out", str(tmp_path / "o"), "--d-norm", "batch"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--d-norm" in err and "batch" in err
    # written before --d-norm, --fvd-data and --fvd-split existed: read as trained (frames)
    old = {k: v for k, v in cfg().resolved().to_dict().items() if k not in ("fvd_data", "fvd_split", "d_norm")}
    (tmp_path / "config.json").write_text(json.dumps(old))
    assert resume_defaults(str(tmp_path), "")["d_norm"] == "frames"          # `--resume RUN` keeps frames
    Trainer(cfg(fvd_data="VAL", fvd_split="train"))._compare_config(tmp_path / "config.json")
    with pytest.raises(UserError, match=r"d_norm \('frames' -> 'videos'\)"):
        Trainer(cfg(d_norm="videos"))._compare_config(tmp_path / "config.json")   # another norm is a change
