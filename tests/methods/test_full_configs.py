"""The full-size configurations build, on the meta device, into exactly the components the real hub folders
describe (stabilityai/stable-video-diffusion-img2vid and -xt; copies of their config files in
tests/reference/svd_hub_configs.json): the pipeline `build_pipeline` makes, and the models `sfv-bench latency
--shape paper` builds (``build_models``)."""
from __future__ import annotations

import inspect
import json
from pathlib import Path

import pytest

from methods.models.configs import FULL_CONFIGS, FULL_XT_CONFIGS, build_models, param_count
from methods.models.stacks import build_pipeline

HUB = json.loads((Path(__file__).resolve().parents[1] / "reference" / "svd_hub_configs.json").read_text())
# keys of the hub files that describe the file, not the component
FILE_KEYS = {"architectures", "model_type", "torch_dtype", "transformers_version", "feature_extractor_type",
             "image_processor_type"}


def hub_files(variant: str) -> dict:
    files = json.loads(json.dumps(HUB["img2vid"]))
    if variant == "xt":
        for name, changes in HUB["xt_differs"].items():
            files[name].update(changes)
    return files


def plain(value):
    return json.loads(json.dumps(value))           # tuples -> lists, as the JSON files hold them


def assert_carries(name: str, built: dict, hub: dict, skip=()) -> None:
    wanted = {k: v for k, v in hub.items() if k not in FILE_KEYS and k not in skip}
    got = {k: plain(built.get(k, "<missing>")) for k in wanted}
    assert got == wanted, name


@pytest.fixture(scope="module")
def pipes():
    img2vid = build_pipeline(FULL_CONFIGS, 0, device="meta")
    # the xt folders differ in the UNet only (hub_files): its VAE and image encoder are img2vid's
    xt = build_pipeline(FULL_XT_CONFIGS, 0, vae=img2vid.vae, image_encoder=img2vid.image_encoder, device="meta")
    return {"img2vid": img2vid, "xt": xt}


@pytest.mark.parametrize("variant", ["img2vid", "xt"])
def test_full_pipeline_is_built_from_the_hub_configs(pipes, variant):
    from diffusers import EulerDiscreteScheduler

    pipe, hub = pipes[variant], hub_files(variant)
    assert_carries("unet", dict(pipe.unet.config), hub["unet/config.json"])
    assert_carries("vae", dict(pipe.vae.config), hub["vae/config.json"])
    ie = hub["image_encoder/config.json"]
    assert_carries("image_encoder", pipe.image_encoder.config.to_dict(), ie)
    # ... and equals, in every field, the CLIPVisionConfig transformers reads from the hub file
    from transformers import CLIPVisionConfig
    from_hub = CLIPVisionConfig(**{k: v for k, v in ie.items() if k not in FILE_KEYS}).to_dict()
    built = pipe.image_encoder.config.to_dict()
    assert {k: built.get(k) for k in from_hub if k not in FILE_KEYS} == \
        {k: v for k, v in from_hub.items() if k not in FILE_KEYS}
    assert type(pipe.image_encoder).__name__ == ie["architectures"][0]
    fe = hub["feature_extractor/preprocessor_config.json"]
    assert_carries("feature_extractor", pipe.feature_extractor.to_dict(), fe)
    assert type(pipe.feature_extractor).__name__.startswith(fe["image_processor_type"])  # ...Pil without torchvision
    # the hub's scheduler file carries three keys of older schedulers that EulerDiscreteScheduler does not take
    # (from_pretrained drops them too); every other key must match
    sched = hub["scheduler/scheduler_config.json"]
    takes = set(inspect.signature(EulerDiscreteScheduler.__init__).parameters)
    ignored = {k for k in sched if k not in takes}
    assert ignored == {"clip_sample", "set_alpha_to_one", "skip_prk_steps"}
    assert isinstance(pipe.scheduler, EulerDiscreteScheduler)
    assert_carries("scheduler", dict(pipe.scheduler.config), sched, skip=ignored)


def test_latency_models_match_the_pipeline_and_published_sizes(pipes):
    """`sfv-bench latency --shape paper` builds its models with build_models(FULL_CONFIGS): the same components
    (1.525 B UNet, 97.7 M temporal VAE, 632 M CLIP ViT-H/14 vision tower with projection)."""
    meta = build_models(FULL_CONFIGS, "meta")
    pipe = pipes["img2vid"]
    for name in ("unet", "vae", "image_encoder"):
        assert param_count(meta[name]) == param_count(getattr(pipe, name)), name
    assert dict(meta["unet"].config) == dict(pipe.unet.config)
    assert round(param_count(meta["unet"]) / 1e6) == 1525
    assert round(param_count(meta["vae"]) / 1e5) == 977
    assert round(param_count(meta["image_encoder"]) / 1e6) == 632
