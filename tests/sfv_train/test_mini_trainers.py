"""The mini world's trainers on a tiny pool: the VAE (frames, then clips) and the teacher UNet learn
(the loss falls), export folders that load back, and a resume from a checkpoint equals the
uninterrupted run bit for bit."""
from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from sfv_core.errors import UserError
from sfv_train.autoencoder import AutoencoderTrainer, VAEConfig, vae_folder
from sfv_train.diffusion import DiffusionConfig, DiffusionTrainer
from sfv_train.pool import PoolSpec, build_pool

RUN = dict(report_to="none", progress=False, log_every=5, checkpoint_every=5, checkpoints_total_limit=0)


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """24 pool clips: 20 to train on, 4 held out (with their class labels)."""
    spec = PoolSpec(size=24)
    pool = build_pool(spec, tmp_path_factory.mktemp("pool"))
    labels = np.array([slot for slot, _, _ in spec.keys()[:4]])
    return pool[4:], pool[:4], labels


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """A random-init pipeline folder of the mini world's architectures."""
    from diffusers import EulerDiscreteScheduler, StableVideoDiffusionPipeline
    from transformers import CLIPImageProcessor

    from methods.models.configs import MINI_CONFIGS, build_models
    from methods.models.stacks import quiet_hf_logging

    quiet_hf_logging()
    torch.manual_seed(0)
    m = build_models(MINI_CONFIGS)
    fe = dict(MINI_CONFIGS["feature_extractor"])
    fe = CLIPImageProcessor(crop_size={"height": fe.pop("crop_size"), "width": 224},
                            size={"shortest_edge": fe.pop("size")}, **fe)
    folder = tmp_path_factory.mktemp("stack") / "mini"
    StableVideoDiffusionPipeline(vae=m["vae"], image_encoder=m["image_encoder"], unet=m["unet"], feature_extractor=fe,
                                 scheduler=EulerDiscreteScheduler.from_config(MINI_CONFIGS["scheduler"])
                                 ).save_pretrained(folder)
    return folder


def _same_tensors(a: Path, b: Path):
    ta, tb = load_file(str(a)), load_file(str(b))
    assert ta.keys() == tb.keys()
    for k in ta:
        assert torch.equal(ta[k], tb[k]), k


def _same_optimizer(a: Path, b: Path):
    sa, sb = torch.load(a, weights_only=True), torch.load(b, weights_only=True)
    assert sa["param_groups"] == sb["param_groups"]
    for k in sa["state"]:
        for name, v in sa["state"][k].items():
            assert torch.equal(v, sb["state"][k][name]), (k, name)


def _resume_copy(run: Path, dst: Path, step: int) -> Path:
    """What a run killed after checkpoint ``step`` leaves: config.json and that checkpoint."""
    name = f"step-{step:06d}"
    shutil.copytree(run / "checkpoints" / name, dst / "checkpoints" / name)
    shutil.copy(run / "config.json", dst / "config.json")
    return dst


def _metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "logs" / "metrics.jsonl").read_text().splitlines()]


def _falls(values, n=5) -> bool:
    return float(np.mean(values[-n:])) < 0.85 * float(np.mean(values[:n]))


@pytest.fixture(scope="module")
def vae_run(clips, tmp_path_factory):
    pool, held, labels = clips
    out = tmp_path_factory.mktemp("vae") / "frames"
    cfg = VAEConfig(out=str(out), stage="frames", max_steps=20, warmup_steps=4, eval_every=10, **RUN)
    t = AutoencoderTrainer(cfg, pool, held, labels)
    t.run()
    return out, [h["mse"] for h in t.history]


def test_vae_frames_stage_learns_exports_and_resumes_exactly(vae_run, clips, tmp_path, caplog):
    from diffusers import AutoencoderKLTemporalDecoder

    out, mse = vae_run
    assert _falls(mse), mse
    q = json.loads((out / "export" / "quality.json").read_text())
    assert q["stage"] == "frames" and q["steps"] == 20 and q["heldout_clips"] == 4 and q["latent_clips"] == 20
    assert 5 < q["psnr_frames"] < 60 and 5 < q["psnr_clips"] < 60 and q["latent_std"] > 0
    assert len(q["latent_channel_std"]) == 4 and set(q["psnr_frames_per_class"]) == {"0", "1", "2", "3"}
    evals = [m for m in _metrics(out) if "psnr" in m]
    assert [m["step"] for m in evals] == [10, 20] and "psnr_class_3" in evals[0]
    vae = AutoencoderKLTemporalDecoder.from_pretrained(out / "export" / "vae")
    assert vae.config.latent_channels == 4 and vae_folder(out) == out / "export" / "vae"

    pool, held, labels = clips
    run = _resume_copy(out, tmp_path / "resumed", 15)
    with caplog.at_level(logging.INFO):
        AutoencoderTrainer(VAEConfig(out=str(run), resume="latest", stage="frames", max_steps=20, warmup_steps=4,
                                     eval_every=10, **RUN), pool, held, labels).run()
    assert any("resumed from" in line and "(step 15)" in line for line in caplog.messages), caplog.messages
    last = Path("checkpoints") / "step-000020"
    _same_tensors(out / last / "vae.safetensors", run / last / "vae.safetensors")
    _same_optimizer(out / last / "optimizer_vae.pt", run / last / "optimizer_vae.pt")
    _same_tensors(out / "export" / "vae" / "diffusion_pytorch_model.safetensors",
                  run / "export" / "vae" / "diffusion_pytorch_model.safetensors")
    assert (run / "export" / "quality.json").read_text() == (out / "export" / "quality.json").read_text()


def test_vae_clips_stage_starts_from_the_frames_export(vae_run, clips, tmp_path):
    out, _ = vae_run
    pool, held, labels = clips
    cfg = VAEConfig(out=str(tmp_path / "clips"), stage="clips", init=str(out), batch_size=1, max_steps=2,
                    warmup_steps=1, eval_every=10, **RUN)
    t = AutoencoderTrainer(cfg, pool, held)
    assert t.cfg.init == str(out / "export" / "vae") and t.num_frames == 14
    t.setup()                                                        # starts at the frames stage's weights
    start = load_file(str(out / "export" / "vae" / "diffusion_pytorch_model.safetensors"))
    assert all(torch.equal(v, start[k]) for k, v in t.vae.state_dict().items())
    AutoencoderTrainer(cfg, pool, held).run()
    q = json.loads((tmp_path / "clips" / "export" / "quality.json").read_text())
    assert q["stage"] == "clips" and q["steps"] == 2 and "psnr_clips_per_class" not in q


def test_teacher_learns_exports_ema_and_resumes_exactly(vae_run, clips, stack, tmp_path, caplog):
    from diffusers import UNetSpatioTemporalConditionModel

    pool, held, _ = clips
    vae = vae_run[0] / "export" / "vae"

    def cfg(out, **kw):
        return DiffusionConfig(out=str(out), stack=str(stack), vae=str(vae), scaling_factor=1.5, batch_size=4,
                               max_steps=20, warmup_steps=4, eval_every=10, eval_clips=4, **RUN, **kw)

    out = tmp_path / "teacher"
    t = DiffusionTrainer(cfg(out), pool, held)
    t.run()
    assert _falls([h["loss"] for h in t.history]), [h["loss"] for h in t.history]
    evals = [m for m in _metrics(out) if "val" in m]
    assert [m["step"] for m in evals] == [10, 20] and evals[1]["val_ema"] < evals[0]["val_ema"]
    assert any(k.startswith("loss_sigma_") for k in t.history[0])
    unet = UNetSpatioTemporalConditionModel.from_pretrained(out / "export" / "unet")
    ema = load_file(str(out / "checkpoints" / "step-000020" / "ema.safetensors"))
    assert all(torch.equal(v, ema[k]) for k, v in unet.state_dict().items())
    record = json.loads((out / "export" / "sfv_train.json").read_text())
    assert record["weights"] == "ema" and record["scaling_factor"] == 1.5
    lat = load_file(str(out / "latents.safetensors"))
    assert lat["latents"].shape == (20, 14, 4, 8, 8) and lat["image_embeds"].shape == (20, 1, 32)

    run = _resume_copy(out, tmp_path / "resumed", 15)                # no latents.safetensors: encoded again
    caplog.clear()
    with caplog.at_level(logging.INFO):
        DiffusionTrainer(cfg(run, resume="latest"), pool, held).run()
    assert any("encoding 20 pool clips" in line for line in caplog.messages)
    _same_tensors(out / "latents.safetensors", run / "latents.safetensors")
    last = Path("checkpoints") / "step-000020"
    for name in ("unet", "ema"):
        _same_tensors(out / last / f"{name}.safetensors", run / last / f"{name}.safetensors")
    _same_optimizer(out / last / "optimizer_unet.pt", run / last / "optimizer_unet.pt")
    _same_tensors(out / "export" / "unet" / "diffusion_pytorch_model.safetensors",
                  run / "export" / "unet" / "diffusion_pytorch_model.safetensors")
    assert [m for m in _metrics(run) if m["step"] == 20] == [m for m in _metrics(out) if m["step"] == 20]

    caplog.clear()                                                   # the cache is reused when its key matches
    with caplog.at_level(logging.INFO):
        DiffusionTrainer(cfg(run, resume="latest"), pool, held).setup()
    logs = caplog.messages
    assert not any("encoding" in line for line in logs) and any("(step 20)" in line for line in logs), logs


@pytest.mark.parametrize("make, message", [
    (lambda d, c: VAEConfig(out=str(d), stage="video").resolved(), "VAE stage 'video' is not one of frames, clips"),
    (lambda d, c: VAEConfig(out=str(d), init=str(d)).resolved(), "holds no diffusers VAE"),
    (lambda d, c: AutoencoderTrainer(VAEConfig(out=str(d)), c[0].astype(np.float32), c[1]), "must be a uint8 array"),
    (lambda d, c: AutoencoderTrainer(VAEConfig(out=str(d)), c[0], c[1], labels=[0]), "one per held-out clip"),
    (lambda d, c: DiffusionConfig(out=str(d)).resolved(), "needs a stack folder"),
    (lambda d, c: DiffusionConfig(out=str(d), stack="x", cond_dropout=1.0).resolved(), "cond_dropout and ema_decay"),
])
def test_one_line_errors(make, message, clips, tmp_path):
    with pytest.raises(UserError, match=message) as e:
        make(tmp_path, clips)
    assert "\n" not in str(e.value)
