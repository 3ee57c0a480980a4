"""Stacks: the tiny stack goes through save_pretrained/from_pretrained once; real stacks are offline-only."""
from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file

from sfv_core.errors import UserError
from methods.models import stacks
from methods.models.configs import TINY_CONFIGS
from methods.models.stacks import (STACK_REPOS, load_pipeline, load_unet, resolve_stack,
                            tiny_stack_dir, tiny_stack_key)


@pytest.fixture
def empty_hf_cache(tmp_path, monkeypatch):
    import huggingface_hub.constants as c

    cache = tmp_path / "hf-cache"
    cache.mkdir()
    monkeypatch.setattr(c, "HF_HUB_CACHE", str(cache))
    return cache


def test_tiny_stack_saved_once_and_loaded_through_from_pretrained(monkeypatch):
    from diffusers import StableVideoDiffusionPipeline

    folder = tiny_stack_dir()
    assert folder.name == tiny_stack_key(0) and folder.name.startswith("tiny-s0-")
    for sub in ("unet", "vae", "image_encoder", "feature_extractor", "scheduler"):
        assert (folder / sub).is_dir(), sub
    index = json.loads((folder / "model_index.json").read_text())
    assert index["_class_name"] == "StableVideoDiffusionPipeline"
    assert index["feature_extractor"] == ["transformers", "CLIPImageProcessor"]  # the hub's class name

    def no_rebuild(configs, seed):
        raise AssertionError("the tiny stack was rebuilt")

    monkeypatch.setattr(stacks, "build_pipeline", no_rebuild)
    assert tiny_stack_dir() == folder and resolve_stack("tiny") == folder

    seen = []
    original = StableVideoDiffusionPipeline.from_pretrained.__func__

    def spy(cls, path, **kw):
        seen.append((str(path), kw))
        return original(cls, path, **kw)

    monkeypatch.setattr(StableVideoDiffusionPipeline, "from_pretrained", classmethod(spy))
    pipe = load_pipeline("tiny")
    assert seen == [(str(folder), {"dtype": torch.float32, "local_files_only": True, "use_safetensors": True})]
    assert list(pipe.unet.config.block_out_channels) == TINY_CONFIGS["unet"]["block_out_channels"]
    assert pipe.image_encoder.config.projection_dim == pipe.unet.config.cross_attention_dim == 32
    assert pipe.vae_scale_factor == 8
    assert pipe.scheduler.config.sigma_max == 700.0 and pipe.scheduler.config.timestep_type == "continuous"
    saved = load_file(str(folder / "unet" / "diffusion_pytorch_model.safetensors"))
    for k, v in pipe.unet.state_dict().items():
        assert torch.equal(v, saved[k]), k


def test_tiny_stack_build_is_atomic_and_seeded(tmp_path, monkeypatch):
    monkeypatch.setenv("SFV_BENCH_CACHE", str(tmp_path / "cache"))
    real_build = stacks.build_pipeline

    class Interrupted:
        def save_pretrained(self, path, **kw):
            (path / "model_index.json").write_text("{}")
            raise KeyboardInterrupt

    monkeypatch.setattr(stacks, "build_pipeline", lambda configs, seed: Interrupted())
    with pytest.raises(KeyboardInterrupt):
        tiny_stack_dir()
    assert list((tmp_path / "cache" / "stacks").iterdir()) == []  # no partial stack, no temp folder left

    monkeypatch.setattr(stacks, "build_pipeline", real_build)
    again = tiny_stack_dir()
    assert again.parent == tmp_path / "cache" / "stacks"
    monkeypatch.delenv("SFV_BENCH_CACHE")
    first = tiny_stack_dir()
    a = load_file(str(again / "unet" / "diffusion_pytorch_model.safetensors"))
    b = load_file(str(first / "unet" / "diffusion_pytorch_model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)  # same seed, same weights


@pytest.mark.parametrize("name", ["svd", "svd-xt"])
def test_missing_real_stack_is_one_line_error_naming_repo(name, empty_hf_cache):
    with pytest.raises(UserError) as e:
        resolve_stack(name)
    msg = str(e.value)
    assert STACK_REPOS[name] in msg and f"huggingface-cli download {STACK_REPOS[name]}" in msg
    assert str(empty_hf_cache) in msg and "\n" not in msg


def test_real_stack_loads_from_hf_cache_offline(empty_hf_cache):
    """A stack in the HF cache layout (models--org--name/snapshots/<rev>, refs/main) is found offline."""
    repo = empty_hf_cache / "models--stabilityai--stable-video-diffusion-img2vid"
    snap = repo / "snapshots" / ("0" * 40)
    shutil.copytree(tiny_stack_dir(), snap)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0" * 40)
    assert resolve_stack("svd") == snap
    pipe = load_pipeline("svd")
    assert list(pipe.unet.config.block_out_channels) == TINY_CONFIGS["unet"]["block_out_channels"]


def test_bad_stack_folders(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        resolve_stack(str(tmp_path / "nope" / "stack"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no model_index.json"):
        resolve_stack(tmp_path / "empty")


def test_load_unet_sources(tmp_path, empty_hf_cache):
    pipe = load_pipeline("tiny")
    # an sfv-train style export: a folder holding unet/ (config.json + weights)
    pipe.unet.save_pretrained(tmp_path / "ckpt" / "unet")
    unet = load_unet(tmp_path / "ckpt")
    assert all(torch.equal(a, b) for a, b in zip(unet.state_dict().values(), pipe.unet.state_dict().values()))
    # the model folder itself
    assert list(load_unet(tmp_path / "ckpt" / "unet").config.block_out_channels) == [32, 64]
    # missing things name what was expected
    with pytest.raises(UserError, match="nothere"):
        load_unet(tmp_path / "nothere")
    with pytest.raises(UserError, match="wangfuyun/AnimateLCM-SVD-xt"):
        load_unet("wangfuyun/AnimateLCM-SVD-xt", stack="tiny")
    # a state dict that does not fit the stack's UNet
    from safetensors.torch import save_file

    save_file({"conv_in.weight": torch.zeros(1)}, str(tmp_path / "bad.safetensors"))
    with pytest.raises(UserError, match="do not fit"):
        load_unet(tmp_path / "bad.safetensors", stack="tiny")
