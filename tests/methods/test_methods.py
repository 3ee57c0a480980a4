"""Method interface: registry and specs, exact UNet call counts, one-step closed form, timing, NaN path."""
from __future__ import annotations

import subprocess
import sys
import time

import numpy as np
import PIL.Image
import pytest
import torch

from sfv_core.errors import UserError
from methods import METHODS, NonFiniteOutput, get_method, list_methods, parse_method_options, parse_specs
from methods.registry import cli_ls

# ---------------------------------------------------------------- registry (no torch needed) ---


def test_parse_specs_keys_and_defaults():
    specs = parse_specs("svd:25,svd:16, animatelcm:4 ,sfv:1")
    assert [(s.name, s.steps, s.key) for s in specs] == [
        ("svd", 25, "svd:25"), ("svd", 16, "svd:16"), ("animatelcm", 4, "animatelcm:4"), ("sfv", 1, "sfv:1")]
    assert [s.key for s in parse_specs("svd,animatelcm,sfv,ufogen,ladd,onestep,SVD:8")] == [
        "svd:25", "animatelcm:4", "sfv:1", "ufogen:1", "ladd:1", "onestep:1", "svd:8"]


@pytest.mark.parametrize("text, needles", [
    ("foo:3", ["unknown method 'foo'", "animatelcm, dummy, i2v, ladd, lcm, onestep, real, sfv, static, svd, ufogen"]),
    ("svd:25,sdv:4", ["unknown method 'sdv'", "valid methods: animatelcm"]),
    ("animatelcm:3", ["animatelcm cannot run 3 steps", "1, 2, 4, 8"]),
    ("sfv:2", ["valid steps for sfv: 1"]),
    ("svd:0", ["bad step count '0'", "any >= 1"]),
    ("svd:x", ["bad step count 'x'"]),
    ("svd:4,svd:4", ["svd:4 is listed twice"]),
    (" , ", ["no method given", "svd"]),
])
def test_bad_specs_are_one_line_errors_listing_what_is_valid(text, needles):
    with pytest.raises(UserError) as e:
        parse_specs(text)
    for needle in needles:
        assert needle in str(e.value)
    assert "\n" not in str(e.value)


def test_options_are_checked_and_typed():
    assert parse_method_options(["svd.max_guidance=2.5", "sfv.unet=/ckpt", "dummy.nan=true", "dummy.batch=2"]) == {
        "svd": {"max_guidance": 2.5}, "sfv": {"unet": "/ckpt"}, "dummy": {"nan": True, "batch": 2}}
    with pytest.raises(UserError, match="valid options: max_guidance, min_guidance, unet"):
        get_method("svd:2", guidance=2)
    with pytest.raises(UserError, match="NAME.KEY=VALUE"):
        parse_method_options(["svd=3"])
    with pytest.raises(UserError, match="not a valid float"):
        parse_method_options(["svd.max_guidance=high"])
    assert get_method("svd:2", max_guidance=1.0).unet_calls_per_video() == {"calls": 2, "batch": 1}


def test_registry_imports_no_torch_and_ls_lists_everything(capsys):
    code = ("import sys, methods, methods.registry as r; r.parse_specs('svd:25,sfv'); r.list_methods(); "
            "m = r.get_method('dummy:3'); assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
    assert cli_ls(None) == 0
    out = capsys.readouterr().out
    for row in list_methods():
        assert row["name"] in out
        for key in row["options"]:
            assert f"{row['name']}.{key} =" in out
    assert "1, 2, 4, 8" in out and "any >= 1" in out
    assert set(METHODS) == {"svd", "animatelcm", "onestep", "sfv", "ufogen", "ladd", "dummy", "static", "real", "lcm",
                            "i2v"}


# ---------------------------------------------------------------- dummy ---------------------------


def test_dummy_is_deterministic_and_reports_configured_calls():
    img = np.random.default_rng(0).integers(0, 256, (2, 16, 24, 3), dtype=np.uint8)
    m = get_method("dummy:7", batch=2).load()
    a = m.generate(img, [1, 2], num_frames=5)
    assert a.shape == (2, 5, 16, 24, 3) and a.dtype == np.uint8
    assert np.array_equal(a, m.generate(img, [1, 2], num_frames=5))
    assert np.array_equal(a[:, 0], img) and not np.array_equal(a[0], a[1])
    assert m.unet_calls_per_video() == {"calls": 7, "batch": 2} and m.cfg
    assert m.unet_call_log == [4] * 7 and len(m.last_unet_times()) == 2
    with pytest.raises(NonFiniteOutput, match=r"dummy: NaN/inf .* 2 of 2 video\(s\): #0 \(seed 1\), #1 \(seed 2\)"):
        get_method("dummy", nan=True).load().generate(img, [1, 2], num_frames=3)


# ---------------------------------------------------------------- SVD family on the tiny stack -----

@pytest.fixture(scope="module")
def img():
    return np.random.default_rng(3).integers(0, 256, (1, 32, 32, 3), dtype=np.uint8)


def _count_unet(monkeypatch, m):
    """Count calls by wrapping the UNet's forward (independent of the method's own log)."""
    seen = []
    forward = m.pipe.unet.forward

    def counting(sample, *a, **k):
        seen.append(sample.shape[0])
        return forward(sample, *a, **k)

    monkeypatch.setattr(m.pipe.unet, "forward", counting)
    return seen


@pytest.mark.parametrize("spec, calls, batch", [("svd:1", 1, 2), ("svd:3", 3, 2), ("onestep", 1, 1),
                                                 ("animatelcm:4", 4, 1), ("sfv", 1, 1)])
def test_unet_calls_per_video_are_exact(spec, calls, batch, img, monkeypatch):
    m = get_method(spec, **({"gen_frames": 0} if spec.startswith("animatelcm") else {})).load("tiny")
    seen = _count_unet(monkeypatch, m)
    video = m.generate(img, [0], num_frames=3)
    assert video.shape == (1, 3, 32, 32, 3)
    assert m.unet_calls_per_video() == {"calls": calls, "batch": batch}
    assert seen == m.unet_call_log == [batch] * calls
    seen.clear()
    m.generate(np.concatenate([img, img]), [0, 1], num_frames=3)
    assert seen == m.unet_call_log == [2 * batch] * calls  # two videos share every call


def test_onestep_equals_closed_form_at_sigma_700(img):
    """x0 = c_skip x + c_out F(c_in x; 0.25 ln 700), x = 700 n, conditioning from diffusers' own helpers."""
    from diffusers.utils.torch_utils import randn_tensor

    m = get_method("onestep").load("tiny")
    ours = m.generate_latents(img, [11], num_frames=4, fps=7, motion_bucket_id=127, noise_aug_strength=0.02)
    pipe = m.pipe
    g = torch.Generator("cpu").manual_seed(11)
    pil = PIL.Image.fromarray(img[0])
    with torch.no_grad():
        emb = pipe._encode_image(pil, "cpu", 1, False)
        image = pipe.video_processor.preprocess(pil, height=32, width=32)
        image = image + 0.02 * randn_tensor(image.shape, generator=g, dtype=image.dtype)
        lat = pipe._encode_vae_image(image, "cpu", 1, False).unsqueeze(1).repeat(1, 4, 1, 1, 1)
        ids = pipe._get_add_time_ids(6, 127, 0.02, emb.dtype, 1, 1, False)
        x = 700.0 * randn_tensor((1, 4, 4, 4, 4), generator=g).double()
        s = 700.0
        c_skip, c_out, c_in = 1 / (s ** 2 + 1), -s / (s ** 2 + 1) ** 0.5, 1 / (s ** 2 + 1) ** 0.5
        f = pipe.unet(torch.cat([(c_in * x).float(), lat], 2), torch.tensor(0.25 * np.log(s)),
                      encoder_hidden_states=emb, added_time_ids=ids, return_dict=False)[0]
    expected = c_skip * x + c_out * f.double()
    torch.testing.assert_close(ours.double(), expected, rtol=1e-5, atol=1e-5)
    assert ours.dtype == torch.float32 and ours.std() > 0.05


def test_batch_does_not_change_a_video_beyond_rounding(img):
    imgs = np.concatenate([img, img[:, ::-1]])
    for spec in ("onestep", "svd:2"):
        m = get_method(spec).load("tiny")
        both = m.generate(imgs, [4, 5], num_frames=3).astype(int)
        alone = [m.generate(imgs[i:i + 1], [s], num_frames=3)[0].astype(int) for i, s in enumerate([4, 5])]
        for i in range(2):
            assert np.abs(both[i] - alone[i]).max() <= 2, spec  # batch-size-dependent kernel rounding only
        assert not np.array_equal(both[0], both[1])


def test_decoding_several_videos_per_vae_call_equals_one_at_a_time():
    """decode_videos > 1 (the mini world's 2) decodes each video as its own: equal up to float rounding,
    chunks included (14 frames in chunks of 8 and 6), and the kept frames alone when keep < T."""
    from methods.models.conditioning import decode_latents, frames_to_uint8
    from methods.models.stacks import load_pipeline

    vae = load_pipeline("tiny").vae
    z = torch.randn(5, 14, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    one = decode_latents(vae, z, 8)
    for videos in (2, 5, 16):
        many = decode_latents(vae, z, 8, videos=videos)
        torch.testing.assert_close(many, one, rtol=0, atol=1e-4)
        assert np.abs(frames_to_uint8(many).astype(int) - frames_to_uint8(one)).max() <= 1
    torch.testing.assert_close(decode_latents(vae, z, 8, keep=9, videos=3), one[:, :9], rtol=0, atol=1e-4)


def test_unet_time_per_video_and_warmup(img):
    m = get_method("svd:2").load("tiny")
    m.warmup(32, 32, num_frames=3)
    assert m.unet_call_log == [] and m.last_unet_times() == []
    t0 = time.perf_counter()
    m.generate(np.concatenate([img, img]), [0, 1], num_frames=3)
    wall = time.perf_counter() - t0
    times = m.last_unet_times()
    assert len(times) == 2 and times[0] == times[1] > 0
    assert sum(times) < wall  # UNet time only: conditioning and decoding are outside


def test_the_timing_pass_runs_the_unet_at_batch_1_and_decodes_nothing(img, monkeypatch):
    from bench.generate import time_method
    from sfv_core.protocol import GenerationConditions

    m = get_method("svd:2").load("tiny")
    decodes, batches = [], []
    monkeypatch.setattr(m.pipe.vae, "decode", lambda *a, **k: decodes.append(1))
    generate_latents = m.generate_latents
    monkeypatch.setattr(m, "generate_latents", lambda images, *a, **k: batches.append(len(images))
                        or generate_latents(images, *a, **k))
    torch.set_num_threads(2)
    try:
        out = time_method(m, [img[0], img[0]], seeds=[0, 1], conditions=GenerationConditions(num_frames=3),
                          device="cpu", threads=1)
        assert torch.get_num_threads() == 2                          # the timing pass's 1 thread is undone
    finally:
        torch.set_num_threads(1)
    assert decodes == [] and batches == [1, 1, 1]                    # a warm-up video, then the two timed
    assert out["n"] == 2 and out["threads"] == 1 and out["median_s"] > 0


def test_unet_timer_counts_time_inside_calls_only():
    from methods.models.timing import UNetTimer

    def slow_unet(sample, *a, **k):
        time.sleep(0.02)
        return (sample,)

    timer = UNetTimer(slow_unet)
    x = torch.zeros(3, 2)
    timer(x)
    time.sleep(0.3)  # outside the UNet: not counted
    timer(x[:1])
    total = timer.total_seconds()
    assert timer.calls == [3, 1]
    assert 0.04 <= total < 0.3
    timer.reset()
    assert timer.calls == [] and timer.total_seconds() == 0


def test_nan_in_a_real_method_raises_non_finite_output(img, monkeypatch):
    m = get_method("svd:1").load("tiny")
    forward = m.pipe.unet.forward

    def poisoned(sample, *a, **k):
        out = forward(sample, *a, **k)[0]
        out[-1].fill_(float("nan"))  # the last video of the batch (cond half of CFG)
        return (out,)

    monkeypatch.setattr(m.pipe.unet, "forward", poisoned)
    with pytest.raises(NonFiniteOutput, match=r"method svd: NaN/inf in the latents of 1 of 2 video\(s\): #1 \(seed 8\)"):
        m.generate(np.concatenate([img, img]), [7, 8], num_frames=2)


def test_onestep_family_needs_a_checkpoint_off_the_tiny_stack(img, tmp_path):
    import shutil

    from methods.models.stacks import tiny_stack_dir

    stack = tmp_path / "my-svd"
    shutil.copytree(tiny_stack_dir(), stack)  # a "real" stack folder (not named tiny)
    with pytest.raises(UserError, match=r"method sfv needs its UNet checkpoint: pass --sfv-unet DIR \(or the option sfv.unet=DIR\)"):
        get_method("sfv").load(stack)
    with pytest.raises(UserError, match="does not exist"):
        get_method("ladd", unet=str(tmp_path / "missing")).load(stack)
    # an sfv-train export (diffusers UNet folder under unet/) -- here the stack's own weights
    m = get_method("onestep").load(stack)
    m.pipe.unet.save_pretrained(tmp_path / "export" / "unet")
    sfv = get_method("sfv", unet=str(tmp_path / "export")).load(stack)
    assert sfv.unet_source == str(tmp_path / "export") and sfv.describe()["unet"] == str(tmp_path / "export")
    assert np.array_equal(sfv.generate(img, [2], num_frames=2), m.generate(img, [2], num_frames=2))


def test_an_adapter_reads_its_facts_from_its_registry_entry():
    for name, info in METHODS.items():
        if not info.target:
            continue
        m = get_method(name)
        assert m.info is info and m.default_stack == info.default_stack and m.cfg == info.uses_cfg()
    assert get_method("svd").cfg and not get_method("svd", max_guidance=1.0).cfg     # the rule over the options
    assert get_method("dummy", batch=2).cfg and not get_method("dummy").cfg
    known = ("svd", "animatelcm", "lcm", "onestep", "sfv", "ufogen", "ladd", "static", "real", "dummy")
    assert {n for n in known if METHODS[n].unet_required} == {"sfv", "ufogen", "ladd", "lcm"}
    assert {r["name"]: r["cfg"] for r in list_methods() if r["name"] in known} == {n: n == "svd" for n in known}


def test_lcm_needs_its_checkpoint_off_the_tiny_stack_and_animatelcm_does_not(tmp_path):
    import shutil

    from methods.models.stacks import tiny_stack_dir

    stack = tmp_path / "my-svd"
    shutil.copytree(tiny_stack_dir(), stack)
    with pytest.raises(UserError, match="method lcm needs its UNet checkpoint"):
        get_method("lcm")._unet_source(stack, None)
    assert get_method("animatelcm", unet="stack")._unet_source(stack, None) is None
    assert get_method("onestep")._unet_source(stack, None) is None


def test_generate_rejects_bad_inputs(img):
    m = get_method("onestep").load("tiny")
    with pytest.raises(ValueError, match="uint8"):
        m.generate(img.astype(np.float32), [0])
    with pytest.raises(ValueError, match="1 images but 2 seeds"):
        m.generate(img, [0, 1])
    with pytest.raises(ValueError, match="multiple of 8"):
        m.generate(img[:, :30, :30], [0])


def test_bfloat16_runs_and_stays_close_to_float32(img):
    """The reduced-precision path (what a GPU run uses) keeps dtypes consistent end to end."""
    for spec in ("svd:1", "onestep"):
        ref = get_method(spec).load("tiny").generate(img, [0], num_frames=2).astype(int)
        m = get_method(spec).load("tiny", dtype="bf16")
        assert m.pipe.unet.dtype == torch.bfloat16 and m.describe()["dtype"] == "bfloat16"
        out = m.generate(img, [0], num_frames=2).astype(int)
        assert np.abs(out - ref).mean() < 4, spec  # bf16 rounding only (observed ~1.3 levels)
