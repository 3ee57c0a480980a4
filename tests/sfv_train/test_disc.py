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
