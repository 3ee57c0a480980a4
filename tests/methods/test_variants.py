"""Weight variants: stacks saved with ``variant="fp16"`` (alone, or beside the plain files) load, and the
pre-flight ``check()`` passes exactly what ``load`` loads (and refuses what it would fail on)."""
from __future__ import annotations

import shutil

import pytest
import torch

from bench.cli import main
from methods.models.configs import TINY_CONFIGS
from methods.models.stacks import build_pipeline, save_stack, tiny_stack_dir
from methods.registry import get_method
from sfv_core.errors import UserError


@pytest.fixture(scope="module")
def stacks(tmp_path_factory):
    """plain: the tiny stack; fp16: another seed's weights saved as fp16 files only; both: the two in one folder."""
    root = tmp_path_factory.mktemp("variants")
    other = build_pipeline(TINY_CONFIGS, seed=1)
    save_stack(other, root / "fp16", dtype=torch.float16, variant="fp16")
    shutil.copytree(tiny_stack_dir(), root / "both")
    save_stack(other, root / "both", dtype=torch.float16, variant="fp16")
    fp16 = {k: v.float() for k, v in other.unet.state_dict().items()}
    return {"plain": tiny_stack_dir(), "fp16": root / "fp16", "both": root / "both", "fp16_unet": fp16}


def _same(unet, state) -> bool:
    return all(torch.equal(v, state[k]) for k, v in unet.state_dict().items())


def _checked_then_loaded(stack, variant=None):
    m = get_method("onestep:1")
    m.check(stack, variant=variant)
    return m, m.load(stack, "cpu", torch.float32, variant=variant).pipe


def test_a_stack_of_fp16_files_only_is_found_checked_and_loaded(stacks, tmp_path, monkeypatch):
    import huggingface_hub.constants as c

    m, pipe = _checked_then_loaded(stacks["fp16"])
    assert _same(pipe.unet, stacks["fp16_unet"]) and m.describe()["variant"] == "fp16"
    # the same files as an offline HF cache holds them after `from_pretrained(repo, variant="fp16")`
    repo = tmp_path / "models--stabilityai--stable-video-diffusion-img2vid"
    shutil.copytree(stacks["fp16"], repo / "snapshots" / ("1" * 40))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("1" * 40)
    monkeypatch.setattr(c, "HF_HUB_CACHE", str(tmp_path))
    for variant in (None, "fp16"):
        _, pipe = _checked_then_loaded("svd", variant)
        assert _same(pipe.unet, stacks["fp16_unet"])


def test_a_folder_holding_both_loads_the_plain_files_unless_fp16_is_asked(stacks):
    plain, pipe = _checked_then_loaded(stacks["both"])
    assert not _same(pipe.unet, stacks["fp16_unet"])
    assert _same(pipe.unet, get_method("onestep:1").load(stacks["plain"]).pipe.unet.state_dict())
    half, pipe = _checked_then_loaded(stacks["both"], "fp16")
    assert _same(pipe.unet, stacks["fp16_unet"])
    for key in ("unet_sha256", "stack_sha256"):       # samples of one are never taken for the other's
        assert plain.describe()[key] != half.describe()[key]


def test_what_the_check_refuses_the_load_refuses_too(stacks, tmp_path):
    mixed = tmp_path / "mixed"                        # UNet: fp16 files only; VAE and image encoder: plain only
    shutil.copytree(stacks["plain"], mixed)
    for p in (mixed / "unet").glob("*.safetensors"):
        p.unlink()
    shutil.copy(stacks["fp16"] / "unet" / "diffusion_pytorch_model.fp16.safetensors", mixed / "unet")
    for stack, variant, message in ((stacks["plain"], "fp16", "has no fp16 weights"),
                                    (mixed, None, "unet/diffusion_pytorch_model.safetensors is missing")):
        with pytest.raises(UserError, match=message):
            get_method("onestep:1").check(stack, variant=variant)
        with pytest.raises(UserError, match=message):
            get_method("onestep:1").load(stack, "cpu", torch.float32, variant=variant)


def test_run_takes_variant(tmp_path, synthetic_root, capsys):
    assert main(["run", "--world", "tiny", "--methods", "onestep:1", "-n", "2", "--variant", "fp16",
                 "--out", str(tmp_path / "r"), "--no-previews"]) == 2
    err = capsys.readouterr().err
    assert "has no fp16 weights" in err and "drop --variant fp16" in err and len(err.strip().splitlines()) == 1


def test_latency_loads_the_variant_asked_for(stacks):
    from bench.latency.models import load_models

    models, _ = load_models(str(stacks["both"]), None, "cpu", variant="fp16")
    assert _same(models["unet"], stacks["fp16_unet"])
