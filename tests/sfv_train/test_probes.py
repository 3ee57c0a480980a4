"""sfv_train.probes and their use in the trainer: the generator terms' gradients on x0_hat (GradProbe),
the discriminator's accuracy per head kind / sigma' bucket and |logit| (d_stats), their lines in
metrics.jsonl and TensorBoard tags, and the split G backward (each term w.r.t. its own copy of x0_hat,
then one backward of their sum) == the plain backward of l_adv + lambda l_rec."""
from __future__ import annotations

import copy
import json
import math
import re

import pytest
import torch

from bench.cli import train_main
from methods.models.edm import Denoiser
from sfv_train import losses
from sfv_train.data import sample_indices
from sfv_train.probes import RATIO_CAP, GradProbe, bucket_names, bucket_of, d_stats
from train_runs import TINY

BUCKETS = ["sig0.002-0.1", "sig0.1-1", "sig1-10", "sig10-700"]
KIND_KEYS = {f"acc_{side}_{kind}" for side in ("real", "fake") for kind in ("spatial", "temporal")}
BUCKET_KEY = re.compile(r"^acc_(real|fake)_sig\d")           # acc_real_sig0.1-1 (not acc_real_spatial)
PROBE_KEYS = {"gn_adv", "gn_rec", "gn_ratio", "gn_cos", "logit_abs_real", "logit_abs_fake"} | KIND_KEYS


# ------------------------------------------------------------------------ hand-made tensors

def _probe(*pairs) -> dict:
    p = GradProbe()
    for a, r in pairs:
        p.add(torch.as_tensor(a).clone().requires_grad_(True), torch.as_tensor(r))
    return p.metrics()


def test_grad_probe_norms_ratio_cosine_over_micro_batches():
    # two micro-batches: |adv| = sqrt(3^2 + 4^2) = 5, |rec| = sqrt(4^2 + 3^2) = 5, dot = 12 - 12 = 0
    m = _probe(([[3.0, 0.0]], [[4.0, 0.0]]), ([[0.0, 4.0]], [[0.0, -3.0]]))
    assert m == pytest.approx({"gn_adv": 5.0, "gn_rec": 5.0, "gn_ratio": 1.0, "gn_cos": 0.0})
    # norm over the step = sqrt of the summed squares (not a sum or mean of per-micro-batch norms)
    m = _probe(([1.0, 2.0], [2.0, 4.0]), ([2.0], [4.0]))          # parallel: |a| = 3, |r| = 6
    assert m == pytest.approx({"gn_adv": 3.0, "gn_rec": 6.0, "gn_ratio": 0.5, "gn_cos": 1.0})
    m = _probe(([1.0, -1.0], [-3.0, 3.0]))                          # opposite directions
    assert m == pytest.approx({"gn_adv": math.sqrt(2), "gn_rec": 3 * math.sqrt(2), "gn_ratio": 1 / 3, "gn_cos": -1.0})
    g = torch.Generator().manual_seed(0)
    a = [torch.randn(2, 3, 4, generator=g) for _ in range(3)]
    r = [torch.randn(2, 3, 4, generator=g) for _ in range(3)]
    m = _probe(*zip(a, r))
    ca, cr = torch.cat(a).double().flatten(), torch.cat(r).double().flatten()
    assert m["gn_adv"] == pytest.approx(float(ca.norm()), rel=1e-12)
    assert m["gn_cos"] == pytest.approx(float(torch.nn.functional.cosine_similarity(ca, cr, dim=0)), rel=1e-9)


def test_grad_probe_zero_and_capped_cases():
    assert GradProbe().metrics() == {"gn_adv": 0.0, "gn_rec": 0.0, "gn_ratio": 0.0, "gn_cos": 0.0}
    assert _probe(([0.0, 0.0], [0.0, 0.0]))["gn_ratio"] == 0.0
    assert _probe(([3.0, 4.0], [0.0, 0.0])) == {"gn_adv": 5.0, "gn_rec": 0.0, "gn_ratio": RATIO_CAP, "gn_cos": 0.0}
    assert _probe(([0.0, 0.0], [3.0, 4.0])) == {"gn_adv": 0.0, "gn_rec": 5.0, "gn_ratio": 0.0, "gn_cos": 0.0}
    assert _probe(([1e7], [1.0]))["gn_ratio"] == RATIO_CAP                   # finite, capped
    assert _probe(([1e5], [1.0]))["gn_ratio"] == pytest.approx(1e5)


def test_bucket_names_and_edges():
    assert bucket_names() == BUCKETS
    sig = torch.tensor([0.002, 0.0999, 0.1, 0.99, 1.0, 9.99, 10.0, 700.0], dtype=torch.float32)
    assert bucket_of(sig).tolist() == [0, 0, 1, 1, 2, 2, 3, 3]                  # [lo, hi)


def test_d_stats_per_kind_per_bucket_and_mean_abs_logit():
    """Two micro-batches (2 + 1 videos), a spatial head (3 positions) and a temporal head (2)."""
    t = torch.tensor
    real = [[t([[1.0, -1.0, 2.0], [0.0, 3.0, -2.0]]), t([[1.0, 1.0], [-1.0, 0.5]])],
            [t([[-1.0, 1.0, 1.0]]), t([[2.0, -3.0]])]]
    fake = [[t([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]]), t([[-1.0, 0.0], [1.0, 1.0]])],
            [t([[-1.0, 1.0, -1.0]]), t([[-2.0, -2.0]])]]
    sigma = [t([0.05, 0.5]), t([0.3])]
    got = d_stats(real, fake, ["spatial", "temporal"], sigma)
    # right side: real > 0, fake < 0 (0 is wrong for both). Per video (all 5 logits):
    # real 4/5, 2/5, 3/5; fake 4/5, 0/5, 4/5. Buckets: video 0 -> sig0.002-0.1, videos 1, 2 -> sig0.1-1
    want = {"acc_real_spatial": 5 / 9, "acc_real_temporal": 4 / 6, "acc_fake_spatial": 5 / 9,
            "acc_fake_temporal": 3 / 6, "acc_real_sig0.002-0.1": 0.8, "acc_real_sig0.1-1": (0.4 + 0.6) / 2,
            "acc_fake_sig0.002-0.1": 0.8, "acc_fake_sig0.1-1": (0.0 + 0.8) / 2,
            "logit_abs_real": 20.5 / 15, "logit_abs_fake": 16 / 15}
    assert got == pytest.approx(want, rel=1e-6)                   # equal keys: sig1-10, sig10-700 absent
    # one kind only (heads spatial): its keys alone; every video in one bucket
    got = d_stats([[mb[0]] for mb in real], [[mb[0]] for mb in fake], ["spatial"], [t([20.0, 30.0]), t([700.0])])
    assert got == pytest.approx({"acc_real_spatial": 5 / 9, "acc_fake_spatial": 5 / 9, "acc_real_sig10-700": 5 / 9,
                                 "acc_fake_sig10-700": 5 / 9, "logit_abs_real": 12 / 9, "logit_abs_fake": 9 / 9})


# ------------------------------------------------------------------------ runs: metrics.jsonl

def _lines(run) -> list[dict]:
    return [json.loads(ln) for ln in (run / "logs" / "metrics.jsonl").read_text().splitlines()]


def _check_probe_lines(rows: list[dict]):
    assert [r["step"] for r in rows] == [1, 2]
    for r in rows:
        assert PROBE_KEYS <= r.keys() and all(math.isfinite(v) for v in r.values()), r
        buckets = {k.removeprefix("acc_real_") for k in r if BUCKET_KEY.match(k) and "_real_" in k}
        assert buckets and buckets <= set(BUCKETS), r
        assert buckets == {k.removeprefix("acc_fake_") for k in r if BUCKET_KEY.match(k) and "_fake_" in k}
        assert r["gn_adv"] > 0 and -1 <= r["gn_cos"] <= 1
        for side in ("real", "fake"):      # as many spatial as temporal logits: the overall accuracy is their mean
            assert r[f"acc_{side}"] == pytest.approx((r[f"acc_{side}_spatial"] + r[f"acc_{side}_temporal"]) / 2)
            assert r[f"logit_abs_{side}"] > 0


def test_run_logs_every_probe_with_the_default_lambda(trained_run):
    """train_runs' tiny run (the SF-V preset: lambda 0.01, pseudo-Huber averaged over elements; 1 video per
    step, 1 micro-batch)."""
    cfg = json.loads((trained_run / "config.json").read_text())
    assert (cfg["recon"], cfg["recon_reduction"], cfg["recon_weight"]) == ("pseudo-huber", "element", 0.01)
    n = cfg["num_frames"] * 4 * (cfg["height"] // 8) * (cfg["width"] // 8)      # latent elements per video (1536)
    bound = 0.01 / math.sqrt(n)
    rows = _lines(trained_run)
    _check_probe_lines(rows)
    for r in rows:
        # one video per step: one bucket, sigma''s, holding that video's accuracy = the step's
        (key,) = [k for k in r if BUCKET_KEY.match(k) and "_real_" in k]
        assert key == f"acc_real_{BUCKETS[int(bucket_of(torch.tensor([r['sigma_d']])))]}"
        assert r[key] == pytest.approx(r["acc_real"], rel=1e-6)
        # d/dx0_hat of lambda mean_i (sqrt(d_i^2 + c^2) - c) is (lambda / n) d_i / sqrt(d_i^2 + c^2) per element:
        # norm <= lambda / sqrt(n) (not lambda: the mean divides by n), reached when every |d_i| >> c (c = 0.00054)
        assert 0.99 * bound < r["gn_rec"] <= bound * (1 + 1e-6)
        assert r["gn_ratio"] == pytest.approx(r["gn_adv"] / r["gn_rec"], rel=1e-9)


def test_run_with_lambda_0_and_d_norm_videos_has_no_reconstruction_gradient(train_data, tmp_path):
    out = tmp_path / "run"
    assert train_main(["--data", str(train_data), *TINY, "--out", str(out), "--max-steps", "2", "--lambda", "0",
                       "--d-norm", "videos", "--grad-accum", "2", "--r1", "approx", "--gradient-checkpointing",
                       "off"]) == 0
    rows = _lines(out)
    _check_probe_lines(rows)
    for r in rows:
        assert r["gn_rec"] == 0.0 and r["gn_cos"] == 0.0 and r["gn_ratio"] == RATIO_CAP
        assert r["g_rec"] > 0 and r["g_loss"] == pytest.approx(r["g_adv"])      # computed, weighted 0
        assert "r1" in r


# ------------------------------------------------------------------------ the split backward

@pytest.fixture(scope="module")
def trainers(train_data, tmp_path_factory):
    """d_norm -> a tiny Trainer after setup() (2 videos per micro-batch, 2 micro-batches), made once."""
    from sfv_train.config import TrainConfig
    from sfv_train.trainer import Trainer

    made = {}

    def get(norm: str):
        if norm not in made:
            cfg = TrainConfig(data=str(train_data), out=str(tmp_path_factory.mktemp(f"split-{norm}")), stack="tiny",
                              width=64, height=64, num_frames=6, batch_size=2, grad_accum=2, max_steps=10,
                              r1="none", report_to="none", progress=False, optimizer="adamw",
                              gradient_checkpointing=False, d_norm=norm)
            made[norm] = Trainer(cfg)
            made[norm].setup()
        return made[norm]
    return get


def _reference_g_phase(t) -> tuple[list, dict]:
    """What train_step's G phase computes, the old way: (l_adv + lambda l_rec) / accum backward through G;
    also the two terms' gradients on x0_hat (the probe's reference). Same draws, same order."""
    cfg, accum = t.cfg, t.cfg.grad_accum
    probe, g_loss = {"sq_adv": 0.0, "sq_rec": 0.0, "dot": 0.0}, 0.0
    for p in t.D.head_parameters():
        p.requires_grad_(False)
    t.G.zero_grad(set_to_none=True)
    for a in range(accum):
        idx = sample_indices(len(t.data), cfg.seed, t.step, a, accum, cfg.batch_size, t.rank, t.world)
        b = t.data.batch(idx, t.device)
        x0 = b["latents"]
        g_idx, sigma = t.noise.sample_g(len(idx), t.gen)
        eps = torch.randn(x0.shape, generator=t.gen)
        sigma_d = t.noise.sample_d(g_idx, t.gen)
        eps_d = torch.randn(x0.shape, generator=t.gen)
        x_t = x0 + sigma.float().view(-1, 1, 1, 1, 1) * eps
        x0_hat = Denoiser(t.G, b["image_embeds"], b["cond_latent"], b["added_time_ids"])(x_t, sigma).float()
        fake_in = t._d_input(x0_hat, sigma_d, eps_d)
        logits = (t._disc_pair(t._d_input(x0, sigma_d, eps_d), fake_in, sigma_d, b)[1] if cfg.d_norm == "videos"
                  else t._disc(fake_in, sigma_d, b))
        l_adv, l_rec = losses.hinge_g(logits), t._recon(x0_hat, x0, sigma)
        ga, = torch.autograd.grad(l_adv, x0_hat, retain_graph=True)
        gr, = torch.autograd.grad(cfg.recon_weight * l_rec, x0_hat, retain_graph=True)
        probe["sq_adv"] += float(ga.double().square().sum())
        probe["sq_rec"] += float(gr.double().square().sum())
        probe["dot"] += float((ga.double() * gr.double()).sum())
        loss = l_adv + cfg.recon_weight * l_rec
        (loss / accum).backward()
        g_loss += loss.item() / accum
    grads = [p.grad.clone() if p.grad is not None else torch.zeros_like(p) for p in t.G.parameters()]
    t.G.zero_grad(set_to_none=True)
    na, nr = math.sqrt(probe["sq_adv"]), math.sqrt(probe["sq_rec"])
    return grads, {"gn_adv": na, "gn_rec": nr, "gn_cos": probe["dot"] / (na * nr), "g_loss": g_loss}


@pytest.mark.parametrize("norm", ["frames", "videos"])
def test_split_backward_gives_g_the_plain_gradient(trainers, norm, monkeypatch):
    t = trainers(norm)
    gen_state, d_state = t.gen.get_state(), copy.deepcopy(t.D.state_dict())   # spectral norm's u, v included
    ref, ref_probe = _reference_g_phase(t)
    t.gen.set_state(gen_state)
    t.D.load_state_dict(d_state)
    seen = []
    real_step = t.opt_g.step
    monkeypatch.setattr(t.opt_g, "step", lambda: (seen.append([p.grad.clone() if p.grad is not None else
                                                               torch.zeros_like(p) for p in t.G.parameters()]),
                                                  real_step())[1])
    m = t.train_step()
    (got,) = seen
    flat_ref, flat_got = (torch.cat([g.double().flatten() for g in gs]) for gs in (ref, got))   # float32 sums drift
    assert float(flat_ref.norm()) > 0
    assert float((flat_got - flat_ref).norm() / flat_ref.norm()) < 1e-6
    assert m["gn_adv"] == pytest.approx(ref_probe["gn_adv"], rel=1e-5)
    assert m["gn_rec"] == pytest.approx(ref_probe["gn_rec"], rel=1e-5)
    assert m["gn_cos"] == pytest.approx(ref_probe["gn_cos"], rel=1e-4, abs=1e-6)
    assert m["g_loss"] == pytest.approx(ref_probe["g_loss"], rel=1e-6)
    assert m["grad_norm_g"] == pytest.approx(float(flat_ref.norm()), rel=1e-5)


def test_metrics_reach_the_tracker_under_grouped_tags(trainers):
    t = trainers("frames")
    m = t.train_step()
    tags = t.tracked(m, 0.5)
    assert len(tags) == len(m) + 3                                           # lr/g, lr/d, time/step_s: no clash
    for key, tag in {"gn_adv": "grad_x0/adv", "gn_rec": "grad_x0/rec", "gn_ratio": "grad_x0/ratio",
                     "gn_cos": "grad_x0/cos", "acc_real_spatial": "accuracy/real_spatial",
                     "acc_fake_temporal": "accuracy/fake_temporal", "logit_abs_real": "logit_abs/real",
                     "logit_abs_fake": "logit_abs/fake", "acc_real": "accuracy/real", "grad_norm_g": "grad_norm/g",
                     "g_loss": "loss/g", "sigma_d": "noise/sigma_d"}.items():
        assert tags[tag] == m[key], key
    for key in filter(BUCKET_KEY.match, m):
        assert tags["accuracy/" + key.removeprefix("acc_")] == m[key]


def test_adversarial_gradient_reaches_g_through_the_frozen_backbone(trainers):
    """d hinge_g(D(x0_hat)) / d G is non-zero and depends on the heads; the backbone gets no gradient."""
    t = trainers("frames")
    b = t.data.batch([0, 1], t.device)
    g = torch.Generator().manual_seed(5)
    x0 = b["latents"]
    sigma, sigma_d = torch.tensor([70.54, 2.269], dtype=torch.float64), torch.tensor([0.5, 0.05])
    x_t = x0 + sigma.float().view(-1, 1, 1, 1, 1) * torch.randn(x0.shape, generator=g)
    eps_d = torch.randn(x0.shape, generator=g)
    params = list(t.G.parameters())

    def grads():
        t.G.zero_grad(set_to_none=True)
        x0_hat = Denoiser(t.G, b["image_embeds"], b["cond_latent"], b["added_time_ids"])(x_t, sigma).float()
        losses.hinge_g(t._disc(t._d_input(x0_hat, sigma_d, eps_d), sigma_d, b)).backward()
        assert all(p.grad is None for p in t.D.backbone.parameters())
        assert all(p.grad is None for p in t.D.head_parameters())           # frozen in the G phase
        return torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).flatten() for p in params])

    heads = copy.deepcopy(t.D.head_state_dict())
    t.D.eval()                             # no power iteration: the same heads give the same numbers
    try:
        for p in t.D.head_parameters():
            p.requires_grad_(False)
        assert not any(p.requires_grad for p in t.D.backbone.parameters())
        first = grads()
        assert float(first.norm()) > 0 and torch.equal(grads(), first)
        with torch.no_grad():
            for p in t.D.head_parameters():
                p.add_(0.5 * torch.randn(p.shape, generator=g))
        other = grads()
        assert float(other.norm()) > 0 and not torch.allclose(other, first, rtol=1e-3, atol=0)
    finally:
        t.D.train()
        t.D.load_head_state_dict(heads)
        t.G.zero_grad(set_to_none=True)
