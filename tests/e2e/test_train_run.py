"""sfv-train end to end on the tiny stack and a small synthetic UCF-101: tiny runs of sfv / ufogen /
ladd, the training signal, resume == uninterrupted, the export loaded by the benchmark, bad input."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from sfv_core.errors import UserError
from bench.cli import train_main as main

TINY = ["--stack", "tiny", "--width", "64", "--height", "64", "--num-frames", "6", "--grad-accum", "1",
        "--no-progress", "--report-to", "none", "--teacher-steps", "2"]


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    """2 classes x 3 groups x 1 clip, 30 frames at 25 fps: fold 1 trains on 4 videos."""
    from sfv_core.data.synthetic import make_synthetic
    return make_synthetic(tmp_path_factory.mktemp("train-data"), seed=0, classes=2, groups=3, clips=1, frames=30)


def _metrics(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "logs" / "metrics.jsonl").read_text().splitlines()]


def _tensors(path: Path) -> dict:
    from safetensors.torch import load_file
    return load_file(str(path))


def _assert_same_tensors(a: dict, b: dict):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


# -------------------------------------------------------------------------------- tiny runs

STEPS, EVERY = 8, 4        # each tiny run: steps, and the checkpoint / preview interval
RUNS = {  # method -> extra options: each method also exercises one R1 form
    "sfv": ["--r1", "exact", "--report-to", "tensorboard", "--preview-every", str(EVERY)],
    "ufogen": ["--r1", "lazy", "--r1-every", "4", "--optimizer", "adamw", "--gradient-checkpointing", "off"],
    "ladd": ["--r1", "approx", "--gradient-checkpointing", "off", "--teacher-batch", "1"],   # bit-equal below
}


@pytest.fixture(scope="module")
def tiny_runs(data_root, tmp_path_factory):
    outs = {}
    for method, extra in RUNS.items():
        out = tmp_path_factory.mktemp(f"run-{method}")
        rc = main(["--data", str(data_root), "--out", str(out), "--method", method, "--max-steps", str(STEPS),
                   "--log-every", "1", "--checkpoint-every", str(EVERY), *TINY, *extra])
        assert rc == 0
        outs[method] = out
    return outs


@pytest.mark.slow
@pytest.mark.parametrize("method", list(RUNS))
def test_tiny_run_finishes_with_finite_losses(tiny_runs, method):
    out = tiny_runs[method]
    rows = _metrics(out)
    assert [r["step"] for r in rows] == list(range(1, STEPS + 1))
    for r in rows:
        assert all(np.isfinite(v) for v in r.values()), r
    rec = [r["g_rec"] for r in rows]
    assert (max(rec) == 0) == (method == "ladd")                 # LADD has no reconstruction loss
    r1_steps = [r["step"] for r in rows if "r1" in r]
    every = range(1, STEPS + 1)
    assert r1_steps == ([s for s in every if (s - 1) % 4 == 0] if method == "ufogen" else list(every))
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == [f"step-{EVERY:06d}", f"step-{STEPS:06d}"]
    info = json.loads((out / "export" / "sfv_train.json").read_text())
    assert info["method"] == method and info["steps"] == 1 and info["sigma"] == 700.0 and info["train_steps"] == STEPS
    cfg = json.loads((out / "config.json").read_text())
    preset = {"sfv": ("lognormal-discrete", "pseudo-huber"), "ufogen": ("next-level", "diffusion"),
              "ladd": ("lognormal", "none")}[method]
    assert (cfg["d_noise"], cfg["recon"]) == preset
    if method == "sfv":
        assert sorted(p.name for p in (out / "previews").iterdir()) == [f"step-{EVERY:06d}.mp4", f"step-{STEPS:06d}.mp4"]
        assert list((out / "logs" / "sfv-train").rglob("events.out.tfevents.*"))
        assert not [p for p in (out / "logs" / "sfv-train").iterdir() if p.is_dir()]   # one events folder
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
        events = EventAccumulator(str(out / "logs" / "sfv-train"))
        events.Reload()
        tags = set(events.Tags()["scalars"])
        assert {"loss/g", "loss/d", "loss/r1", "grad_norm/g", "grad_norm/d", "lr/g", "lr/d", "time/step_s"} <= tags
        assert [e.step for e in events.Scalars("lr/g")] == list(range(1, STEPS + 1))
        previews = events.Images("preview")          # animated GIFs, written without moviepy
        assert [e.step for e in previews] == [EVERY, STEPS]
        import io

        from PIL import Image

        from sfv_core.data.videoio import read_video
        gif = Image.open(io.BytesIO(previews[-1].encoded_image_string))
        mp4 = read_video(out / "previews" / f"step-{STEPS:06d}.mp4")
        assert gif.format == "GIF" and (gif.n_frames, gif.height, gif.width) == mp4.shape[:3]


@pytest.mark.slow
def test_ladd_trains_on_cached_teacher_latents(tiny_runs):
    """LADD's real data are svd:2 latents (methods.svd) made once and cached, from the cached condition."""
    from methods import get_method
    from methods.models.stacks import resolve_stack
    from sfv_core.seeds import sample_seed as video_seed

    from sfv_core.fsutil import cache_dir
    files = sorted(cache_dir("teacher").rglob("*.safetensors"))
    assert len(files) >= 4
    cfg = json.loads((tiny_runs["ladd"] / "config.json").read_text())
    # regenerate the first video's teacher latents with the svd method itself
    from sfv_core.data.transforms import resize_frames
    from sfv_core.data.videoio import read_video
    from sfv_train.data import find_videos
    item = find_videos(cfg["data"])[0]
    image = resize_frames(read_video(item.path, [0]), 64, 64)          # the trainer's default: stretch
    m = get_method("svd:2").load(resolve_stack("tiny"), "cpu", torch.float32)
    ref = m.generate_latents(image, [video_seed(0, item.rel)], num_frames=6, fps=7)[0]
    cached = [_tensors(f)["latents"] for f in files if Path(item.rel).stem in f.name]
    assert len(cached) == 1 and torch.equal(cached[0], ref.float())


@pytest.mark.slow
def test_export_loads_in_benchmark_adapter_and_matches_trainer(tiny_runs, data_root):
    """The exported folder, loaded by the benchmark's `sfv` adapter, generates what the EMA generator does."""
    from methods import get_method
    from methods.models.conditioning import encode_condition
    from methods.models.stacks import load_pipeline, load_unet
    from methods.models.edm import Denoiser

    export = tiny_runs["sfv"] / "export" / "unet"
    ema = _tensors(tiny_runs["sfv"] / "checkpoints" / f"step-{STEPS:06d}" / "ema.safetensors")
    unet = load_unet(export)
    _assert_same_tensors(unet.state_dict(), ema)
    m = get_method("sfv:1", unet=str(export)).load("tiny", "cpu", torch.float32)
    image = np.random.default_rng(0).integers(0, 255, (1, 64, 64, 3), dtype=np.uint8)
    lat = m.generate_latents(image, [7], num_frames=6, fps=7)
    # the same draw order by hand: noise augmentation first, then the latent noise
    pipe = load_pipeline("tiny", "cpu", torch.float32)
    gen = [torch.Generator("cpu").manual_seed(7)]
    cond = encode_condition(pipe, image, gen, "cpu", num_frames=1, fps=7, motion_bucket_id=127, noise_aug_strength=0.02)
    noise = torch.randn((1, 6, 4, 8, 8), generator=gen[0])
    with torch.no_grad():
        ours = Denoiser(unet.eval(), cond.image_embeddings, cond.image_latents[:, 0],
                        cond.added_time_ids)(noise * 700.0, torch.full((1,), 700.0))
    torch.testing.assert_close(lat.float(), ours, rtol=1e-5, atol=1e-4)


@pytest.mark.slow
def test_export_generates_through_sfv_bench_run(tiny_runs, tmp_path):
    from bench.cli import main as bench_main
    out = tmp_path / "bench"
    rc = bench_main(["run", "--world", "tiny", "--world", "tiny", "--methods", "sfv:1", "--sfv-unet", str(tiny_runs["sfv"] / "export" / "unet"),
                     "-n", "2", "--out", str(out), "--no-previews"])
    assert rc == 0
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert [r["method"] for r in rows] == ["sfv"]
    assert rows[0]["adapter"]["options"]["unet"] == str(tiny_runs["sfv"] / "export" / "unet")
    assert np.isfinite(rows[0]["fvd"]) and rows[0]["n_fake"] == 2


# -------------------------------------------------------------------------------- training signal

@pytest.mark.slow
def test_training_signal_on_a_fixed_batch(data_root, tmp_path):
    """One video (a plain folder): reconstruction falls, D's accuracy leaves 0.5 and its loss falls.

    Low D noise (P_mean -3) lets D tell real from fake quickly (the paper's Table 3 observation). The
    reconstruction is the paper-literal one (whole-video pseudo-Huber, lambda 0.1): the preset's weak
    per-element term (lambda 0.01) is not meant to pull one memorised video back within 30 steps."""
    from sfv_train import losses
    from sfv_train.config import TrainConfig
    from methods.models.edm import Denoiser
    from sfv_train.noise import generator_sigmas
    from sfv_train.trainer import Trainer

    folder = tmp_path / "one"
    folder.mkdir()
    shutil.copy(next((Path(data_root) / "UCF-101").rglob("*_g02_c01.avi")), folder / "clip.avi")
    cfg = TrainConfig(data=str(folder), out=str(tmp_path / "out"), stack="tiny", width=64, height=64, num_frames=6,
                      grad_accum=1, max_steps=30, r1="none", report_to="none", progress=False, optimizer="adamw",
                      lr_g=1e-4, lr_d=2e-3, p_mean=-3.0, p_std=0.5, gradient_checkpointing=False,
                      recon_reduction="video", recon_weight=0.1)
    t = Trainer(cfg)
    t.setup()
    assert len(t.data) == 1
    b = {k: v.expand(3, *v.shape[1:]) for k, v in t.data.batch([0], t.device).items()}
    g = torch.Generator().manual_seed(123)
    eps = torch.randn(b["latents"].shape, generator=g)
    sig = generator_sigmas()[1:]

    @torch.no_grad()
    def recon():
        x0 = b["latents"]
        xh = Denoiser(t.G, b["image_embeds"], b["cond_latent"], b["added_time_ids"])(
            x0 + sig.float().view(-1, 1, 1, 1, 1) * eps, sig)
        return float(losses.pseudo_huber(xh, x0, losses.huber_c_auto(x0)))

    before = recon()
    backbone0 = {k: v.clone() for k, v in t.D.backbone.state_dict().items()}
    temporal0 = [p.detach().clone() for p in t.D.temporal.parameters()]
    hist = [t.train_step() for _ in range(30)]
    after = recon()
    _assert_same_tensors(t.D.backbone.state_dict(), backbone0)          # frozen: nothing reached it
    assert all(not torch.equal(p, p0) for p, p0 in zip(t.D.temporal.parameters(), temporal0))
    assert after < 0.85 * before
    bal = np.mean([(h["acc_real"] + h["acc_fake"]) / 2 for h in hist[-10:]])
    assert bal > 0.6
    # D starts at chance (hinge 2) and falls (with --d-norm videos it falls within a few steps: 1.99 -> 1.57
    # by step 5 here)
    assert np.mean([h["d_loss"] for h in hist[-10:]]) < 1.8 < hist[0]["d_loss"]


@pytest.mark.slow
def test_tiny_stack_defaults_to_the_synthetic_dataset(synthetic_root, tmp_path):
    """No --data with --stack tiny: the tiny world's synthetic dataset (made when absent)."""
    out = tmp_path / "run"
    assert main(["--out", str(out), *TINY, "--max-steps", "1", "--r1", "none", "--optimizer", "adamw"]) == 0
    assert json.loads((out / "config.json").read_text())["data"] == str(Path(synthetic_root).absolute())


# -------------------------------------------------------------------------------- resume

@pytest.mark.slow
@pytest.mark.parametrize("method", ["sfv", "ufogen", "ladd"])      # lcm: tests/sfv_train/test_lcm.py
def test_resume_equals_uninterrupted(data_root, tmp_path, method):
    """4 steps straight == 2 steps + --resume to 4 (accumulation 2, lazy R1 on the first step after the
    resume, a preview before it)."""
    common = ["--data", str(data_root), *TINY, "--method", method, "--grad-accum", "2", "--r1", "lazy", "--r1-every", "2",
              "--checkpoint-every", "2", "--log-every", "1", "--gradient-checkpointing", "off"]
    a, b = tmp_path / "a", tmp_path / "b"
    assert main([*common, "--out", str(a), "--max-steps", "4"]) == 0
    assert main([*common, "--out", str(b), "--max-steps", "2", "--preview-every", "2"]) == 0
    assert (b / "previews" / "step-000002.mp4").is_file()
    assert main([*common, "--out", str(b), "--max-steps", "4", "--resume"]) == 0
    from safetensors.torch import load_file
    exp_a = load_file(str(a / "export" / "unet" / "diffusion_pytorch_model.safetensors"))
    exp_b = load_file(str(b / "export" / "unet" / "diffusion_pytorch_model.safetensors"))
    _assert_same_tensors(exp_a, exp_b)
    for name in ("generator", "heads"):
        _assert_same_tensors(_tensors(a / "checkpoints" / "step-000004" / f"{name}.safetensors"),
                             _tensors(b / "checkpoints" / "step-000004" / f"{name}.safetensors"))
    opt_a = torch.load(a / "checkpoints" / "step-000004" / "optimizer_g.pt", weights_only=True)
    opt_b = torch.load(b / "checkpoints" / "step-000004" / "optimizer_g.pt", weights_only=True)
    for k, st in opt_a["state"].items():
        for name, v in st.items():
            assert torch.equal(torch.as_tensor(v), torch.as_tensor(opt_b["state"][k][name]))
    ma = {r["step"]: r for r in _metrics(a)}
    mb = {r["step"]: r for r in _metrics(b)}
    assert [ma[s] for s in (3, 4)] == [mb[s] for s in (3, 4)]
    if method == "sfv":
        assert "r1" in mb[3] and "r1" not in mb[4]
    # the exported G is not the initial UNet: training changed it
    from methods.models.stacks import resolve_stack
    init = load_file(str(resolve_stack("tiny") / "unet" / "diffusion_pytorch_model.safetensors"))
    assert any(not torch.equal(init[k], exp_a[k]) for k in init)


# -------------------------------------------------------------------------------- bad input

def _snapshot(folder: Path) -> dict:
    """Every file of a run folder but its lock (which names the last process that held it)."""
    from sfv_core.fsutil import LOCK_NAME

    return {str(p.relative_to(folder)): (p.stat().st_mtime_ns, p.stat().st_size)
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name != LOCK_NAME}


def _one_line_error(capsys, *needles):
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("sfv-train: error:"), err
    for n in needles:
        assert n in err, err
    return err


def test_bad_input_one_line_errors(data_root, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["--data", str(empty), "--out", str(tmp_path / "o1"), *TINY]) == 2
    _one_line_error(capsys, "no videos found")
    assert main(["--data", str(data_root), "--out", str(tmp_path / "o2"), *TINY, "--num-frames", "12"]) == 2
    _one_line_error(capsys, "none of the 4 videos", "12 frames at 7 fps")
    assert not (tmp_path / "o2" / "checkpoints").exists() and not (tmp_path / "o2" / "config.json").exists()
    assert main(["--data", str(data_root), "--out", str(tmp_path / "o3"), "--bogus-option"]) == 2
    _one_line_error(capsys, "unrecognized arguments: --bogus-option")
    assert main(["--data", str(data_root), "--out", str(tmp_path / "o3"), "--method", "dmd"]) == 2
    _one_line_error(capsys, "invalid choice: 'dmd'")
    assert main(["--data", str(data_root), "--out", str(tmp_path / "o4"), *TINY, "--width", "60"]) == 2
    _one_line_error(capsys, "multiples of 8")


@pytest.mark.slow
def test_resume_refusals_leave_checkpoints_untouched(tiny_runs, capsys):
    out = tiny_runs["ufogen"]
    cfg = json.loads((out / "config.json").read_text())
    before = _snapshot(out)
    base = ["--data", cfg["data"], "--out", str(out), "--method", "ufogen", *TINY, *RUNS["ufogen"]]
    assert main([*base, "--max-steps", "30"]) == 2                            # no --resume: refuse
    _one_line_error(capsys, "already holds checkpoints", f"step-{STEPS:06d}", "--resume")
    assert main([*base, "--max-steps", "30", "--resume", "--lambda", "0.5", "--heads", "spatial"]) == 2
    _one_line_error(capsys, "another configuration", "heads", "recon_weight")
    assert main([*base, "--resume", str(out / "checkpoints" / "nope")]) == 2
    _one_line_error(capsys, "not a finished checkpoint")
    assert _snapshot(out) == before


def test_config_presets_and_validation():
    from sfv_train.config import TrainConfig
    c = TrainConfig(data="d", out="o", method="ladd").resolved()
    assert (c.d_noise, c.p_mean, c.p_std, c.recon) == ("lognormal", 1.0, 1.0, "none")
    c = TrainConfig(data="d", out="o", method="sfv", p_mean=-2.0).resolved()      # Table 3 sweep
    assert (c.d_noise, c.p_mean, c.p_std, c.recon) == ("lognormal-discrete", -2.0, -1.0, "pseudo-huber")
    d = TrainConfig(data="d", out="o").resolved()
    assert (d.width, d.height, d.num_frames, d.fps, d.recon_weight, d.ema, d.lr_g, d.lr_d, d.optimizer,
            d.momentum, d.beta, d.grad_accum, d.batch_size, d.max_steps, d.heads) == \
        (768, 448, 14, 7, 0.01, 0.95, 1e-5, 1e-4, "sm3", 0.5, 0.999, 4, 1, 50000, "both")
    assert (d.recon_reduction, d.d_norm) == ("element", "frames")                 # the SF-V study's choices
    with pytest.raises(UserError, match="--p-std must not be 0"):
        TrainConfig(data="d", out="o", p_std=0.0).resolved()
    with pytest.raises(UserError, match="method = .x.: --method takes .sfv., .ufogen., .ladd. or .lcm."):
        TrainConfig(data="d", out="o", method="x").resolved()
