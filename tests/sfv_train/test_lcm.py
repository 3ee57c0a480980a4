"""`sfv-train --method lcm` (AnimateLCM consistency distillation, sfv_train.lcm): a tiny run exports a UNet
the `lcm` method samples; resume == uninterrupted; the target against a hand computation with a linear
"UNet"; the training levels are the sampler's; presets, --help and bad input."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from bench.cli import train_main
from methods.sampling import animatelcm_sigmas
from sfv_train.lcm import consistency_loss, consistency_target, draw_guidance, lcm_sigmas, loss_weights
from train_runs import TINY

LCM = [*TINY, "--method", "lcm", "--batch-size", "2", "--lr-g", "1e-4"]


def _same_tensors(a: Path, b: Path):
    ta, tb = load_file(str(a)), load_file(str(b))
    assert ta.keys() == tb.keys()
    for k in ta:
        assert torch.equal(ta[k], tb[k]), k


@pytest.fixture(scope="module")
def lcm_run(train_data, tmp_path_factory):
    """2 steps of batch 2, checkpoints at 1 and 2, a preview at 2."""
    out = tmp_path_factory.mktemp("lcm") / "run"
    assert train_main(["--data", str(train_data), *LCM, "--out", str(out), "--max-steps", "2",
                       "--preview-every", "2"]) == 0
    return out


# ------------------------------------------------------------------------------------ runs

def test_lcm_run_exports_a_unet_the_lcm_method_samples(lcm_run):
    from methods import get_method
    from methods.models.stacks import load_pipeline

    ckpt = lcm_run / "checkpoints" / "step-000002"
    assert sorted(json.loads((ckpt / "state.json").read_text())["files"]) == \
        ["ema.safetensors", "generator.safetensors", "optimizer_g.pt"]
    info = json.loads((lcm_run / "export" / "sfv_train.json").read_text())
    assert (info["method"], info["weights"], info["levels"], info["train_steps"]) == ("lcm", "raw", 40, 2)
    assert "sample_lcm" in info["sampling"] and info["config"]["optimizer"] == "adamw"
    assert (lcm_run / "previews" / "step-000002.mp4").is_file()
    metrics = [json.loads(s) for s in (lcm_run / "logs" / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == [1, 2] and all(np.isfinite(m["loss"]) for m in metrics)
    # the export is the online student (raw), which training moved away from the teacher
    export = lcm_run / "export" / "unet" / "diffusion_pytorch_model.safetensors"
    _same_tensors(export, ckpt / "generator.safetensors")
    teacher = load_pipeline("tiny", "cpu", torch.float32).unet.state_dict()
    student = load_file(str(export))
    assert any(not torch.equal(student[k], teacher[k]) for k in teacher)
    # `--method-option lcm.unet=OUT/export`: the lcm method loads the export folder and samples 2 steps
    m = get_method("lcm:2", unet=str(lcm_run / "export")).load("tiny", "cpu", torch.float32)
    assert all(torch.equal(m.pipe.unet.state_dict()[k], v) for k, v in student.items())
    image = np.random.default_rng(0).integers(0, 255, (2, 64, 64, 3), dtype=np.uint8)
    video = m.generate(image, [3, 4], num_frames=6, fps=7)
    assert video.shape == (2, 6, 64, 64, 3) and video.dtype == np.uint8
    lat = m.generate_latents(image, [3, 4], num_frames=6, fps=7)
    assert lat.shape == (2, 6, 4, 8, 8) and torch.isfinite(lat).all()


@pytest.mark.slow
def test_lcm_export_generates_through_sfv_bench_run(lcm_run, tmp_path):
    from bench.cli import main as bench_main

    out, unet = tmp_path / "bench", str(lcm_run / "export" / "unet")
    assert bench_main(["run", "--world", "tiny", "--methods", "lcm:2", "--lcm-unet", unet, "-n", "2",
                       "--out", str(out), "--no-previews"]) == 0
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert [(r["method"], r["steps"]) for r in rows] == [("lcm", 2)]
    assert rows[0]["adapter"]["options"]["unet"] == unet and rows[0]["n_fake"] == 2 and np.isfinite(rows[0]["fvd"])


@pytest.mark.slow
def test_lcm_resume_equals_uninterrupted(lcm_run, train_data, tmp_path, capsys):
    """4 straight steps == the fixture's 2 steps + `--resume OUT --max-steps 4`, bit for bit."""
    straight = tmp_path / "straight"
    assert train_main(["--data", str(train_data), *LCM, "--out", str(straight), "--max-steps", "4"]) == 0
    run = tmp_path / "resumed"
    shutil.copytree(lcm_run, run)
    capsys.readouterr()
    assert train_main(["--resume", str(run), "--max-steps", "4"]) == 0
    assert "resumed from" in capsys.readouterr().out
    for name in ("generator", "ema"):
        _same_tensors(straight / "checkpoints" / "step-000004" / f"{name}.safetensors",
                      run / "checkpoints" / "step-000004" / f"{name}.safetensors")
    _same_tensors(straight / "export" / "unet" / "diffusion_pytorch_model.safetensors",
                  run / "export" / "unet" / "diffusion_pytorch_model.safetensors")
    a, b = (torch.load(p / "checkpoints" / "step-000004" / "optimizer_g.pt", weights_only=True)["state"]
            for p in (straight, run))
    assert a.keys() == b.keys() and all(torch.equal(a[k]["exp_avg_sq"], b[k]["exp_avg_sq"]) for k in a)


# ------------------------------------------------------------------------------------ units

class LinearUNet:
    """v = a x_in[:4] + b x_in[4:] + e mean(emb) + k t + q sum(time ids): a closed form per channel."""

    def __init__(self, a, b, e, k, q):
        self.a, self.b, self.e, self.k, self.q = a, b, e, k, q

    def __call__(self, x_in, t, encoder_hidden_states, added_time_ids, return_dict=False):
        col = (-1, 1, 1, 1, 1)
        v = (self.a * x_in[:, :, :4] + self.b * x_in[:, :, 4:]
             + self.e * encoder_hidden_states.mean(dim=(1, 2)).view(col) + self.k * t.view(col)
             + self.q * added_time_ids.sum(1).view(col))
        return (v,)


def test_target_is_the_guided_teacher_euler_step_then_the_target_consistency_function():
    torch.manual_seed(0)
    B, T = 3, 4
    cond = {"image_embeds": torch.randn(B, 1, 8), "cond_latent": torch.randn(B, 4, 2, 2),
            "added_time_ids": torch.tensor([[6.0, 127.0, 0.02]] * B)}
    x0, eps = torch.randn(B, T, 4, 2, 2), torch.randn(B, T, 4, 2, 2)
    sigmas = lcm_sigmas()
    n = torch.tensor([0, 17, 39])                     # 39: the last level, the target is x_{n+1} itself
    g = draw_guidance(torch.Generator().manual_seed(1), B, T, (1.0, 1.25, 1.5), (2.0, 2.25, 2.5))
    x = x0 + sigmas[n].view(-1, 1, 1, 1, 1) * eps
    teacher, target = LinearUNet(0.9, 0.3, 0.5, 0.1, 0.01), LinearUNet(0.7, -0.2, 0.4, -0.05, 0.02)
    x_next, tgt = consistency_target(teacher, target, x, n, sigmas, cond, g)

    # by hand, float64: c_in = 1/sqrt(s^2+1), c_skip = 1/(s^2+1), c_out = -s/sqrt(s^2+1), t = ln(s)/4
    xd, gd = x.double(), g.double()
    lat = cond["cond_latent"].double()[:, None]
    emb = cond["image_embeds"].double().mean(dim=(1, 2)).view(-1, 1, 1, 1, 1)
    ids = cond["added_time_ids"].double().sum(1).view(-1, 1, 1, 1, 1)
    for i in range(B):
        s, s1 = float(sigmas[n[i]]), float(sigmas[n[i] + 1])
        c_in, c_skip, c_out, t = (s * s + 1) ** -0.5, 1 / (s * s + 1), -s / (s * s + 1) ** 0.5, np.log(s) / 4
        v_u = teacher.a * c_in * xd[i] + teacher.k * t + teacher.q * ids[i]
        v_c = v_u + teacher.b * lat[i] + teacher.e * emb[i]
        v = v_u + gd[i] * (v_c - v_u)
        d = c_skip * xd[i] + c_out * v
        xn = xd[i] + (xd[i] - d) / s * (s1 - s)
        torch.testing.assert_close(x_next[i].double(), xn, rtol=1e-5, atol=1e-4)
        if s1 == 0:
            want = xn                                       # f(x, 0) = x: c_skip(0) = 1, c_out(0) = 0
        else:
            c_in, c_skip, t = (s1 * s1 + 1) ** -0.5, 1 / (s1 * s1 + 1), np.log(s1) / 4
            c_out = -s1 * c_in
            v2 = target.a * c_in * xn + target.b * lat[i] + target.e * emb[i] + target.k * t + target.q * ids[i]
            want = c_skip * xn + c_out * v2
        torch.testing.assert_close(tgt[i].double(), want, rtol=1e-5, atol=1e-4)
    assert torch.equal(tgt[2], x_next[2])


def test_training_levels_are_the_samplers_and_weights_follow_the_reference():
    s = lcm_sigmas()
    assert len(s) == 41 and s[40] == 0 and torch.all(s[:-1] > s[1:])
    assert torch.equal(s, animatelcm_sigmas(40))            # N = 40: the sampler steps through every level
    for steps in (1, 2, 4, 8):                               # fewer steps: a subset of the training levels
        assert set(animatelcm_sigmas(steps).tolist()) <= set(s.tolist())
    w = loss_weights(s)
    assert len(w) == 40
    assert w[39].item() == pytest.approx(500 ** 0.1, rel=1e-5)          # (1 / (0.002 - 0))^0.1
    assert w[0].item() == pytest.approx((700 - float(s[1])) ** -0.1, rel=1e-5)


def test_loss_is_the_weighted_elementwise_pseudo_huber_and_guidance_is_per_frame():
    torch.manual_seed(0)
    pred, tgt, w = torch.randn(2, 3, 4, 2, 2), torch.randn(2, 3, 4, 2, 2), torch.tensor([1.5, 0.5])
    ref = torch.mean(w.view(-1, 1, 1, 1, 1) * (torch.sqrt((pred - tgt) ** 2 + 0.001 ** 2) - 0.001))
    torch.testing.assert_close(consistency_loss(pred, tgt, w), ref)
    torch.testing.assert_close(consistency_loss(pred, tgt, w, "mse"), (w.view(-1, 1) * (pred - tgt).square()
                                                                       .flatten(1)).mean(1).mean())
    g = draw_guidance(torch.Generator().manual_seed(0), 64, 5, (1.0, 1.25, 1.5), (2.0, 2.25, 2.5))
    assert g.shape == (64, 5, 1, 1, 1)
    assert set(g[:, 0].flatten().tolist()) == {1.0, 1.25, 1.5} and set(g[:, -1].flatten().tolist()) == {2.0, 2.25, 2.5}
    torch.testing.assert_close(g[:, 2].flatten(), (g[:, 0] + g[:, -1]).flatten() / 2)


# ------------------------------------------------------------------------------------ config / CLI

def test_lcm_presets_and_help():
    from bench.cli import build_train_parser
    from sfv_train.config import TrainConfig

    c = TrainConfig(data="d", out="o", method="lcm").resolved()
    assert (c.optimizer, c.lr_g, c.momentum, c.beta, c.weight_decay, c.grad_accum, c.ema, c.export_weights) == \
        ("adamw", 1e-6, 0.9, 0.999, 1e-3, 1, 0.95, "raw")
    assert (c.recon, c.recon_reduction, c.recon_weight, c.huber_c, c.max_grad_norm) == \
        ("pseudo-huber", "element", 1.0, 0.001, 0.0)
    s = TrainConfig(data="d", out="o", method="sfv").resolved()
    assert (s.optimizer, s.lr_g, s.momentum, s.weight_decay, s.grad_accum, s.export_weights, s.huber_c) == \
        ("sm3", 1e-5, 0.5, 0.0, 4, "ema", None)
    text = build_train_parser().format_help()
    assert "{sfv,ufogen,ladd,lcm}" in text and "AnimateLCM" in text and "--lcm-guidance-first" in text
    assert "lcm: recon=pseudo-huber" in text


@pytest.mark.parametrize("extra, needle", [
    (["--lcm-guidance-first", "1,x"], "--lcm-guidance-first takes comma-separated guidance scales"),
    (["--lcm-guidance-last", "-2"], "--lcm-guidance-last takes comma-separated guidance scales"),
    (["--recon", "diffusion"], "--method lcm takes --recon pseudo-huber or mse"),
    (["--huber-c", "-1"], "--huber-c must be >= 0"),
])
def test_bad_lcm_input_is_one_line(extra, needle, train_data, tmp_path, capsys):
    capsys.readouterr()
    rc = train_main(["--data", str(train_data), *LCM, "--out", str(tmp_path / "o"), *extra])
    err = capsys.readouterr().err
    assert rc == 2 and len(err.strip().splitlines()) == 1 and err.startswith("sfv-train: error:"), err
    assert needle in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()
