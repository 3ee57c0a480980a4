"""The generic image-to-video method: its spec, the protocol mapping, the prompt, equality with the pipelines'
own ``__call__`` (tiny random-init Wan 2.1, LTX-Video and CogVideoX pipelines saved and loaded offline), and
one-step and multi-step rows made by `sfv-bench run`."""
from __future__ import annotations

import importlib.util
import json
import types
from pathlib import Path

import numpy as np
import pytest
import torch

from methods.i2v_clock import CallClock
from methods.i2v_spec import class_words, frame_indices, prompt_for
from methods.registry import get_method, parse_spec, parse_specs
from sfv_core.errors import UserError

# -- tiny random-init pipelines, built from configuration and saved with save_pretrained: text encoders and
# tokenizers are made here (a T5 tokenizer over a 30-piece Unigram vocabulary through the tokenizers backend:
# no hub, no sentencepiece); one layer, a few channels, 16-32 px, 2-3 latent frames: a call takes ~0.1-0.3 s.
SEED = 0
PIECES = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)] + [(c, -1.0) for c in "abcdefghijklmnopqrstuvwxyz▁"]


def _tokenizer():
    from transformers import T5Tokenizer

    return T5Tokenizer(vocab=PIECES, extra_ids=0)


def _t5(umt5: bool = False):
    from transformers import T5Config, T5EncoderModel, UMT5Config, UMT5EncoderModel

    kw = dict(vocab_size=len(PIECES), d_model=32, d_kv=8, d_ff=32, num_layers=1, num_heads=2)
    return UMT5EncoderModel(UMT5Config(**kw)) if umt5 else T5EncoderModel(T5Config(**kw))


def wan():
    from diffusers import (AutoencoderKLWan, FlowMatchEulerDiscreteScheduler, WanImageToVideoPipeline,
                           WanTransformer3DModel)
    from transformers import CLIPVisionConfig, CLIPVisionModel
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    vae = AutoencoderKLWan(base_dim=3, z_dim=4, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
                           temperal_downsample=[False, True, True], latents_mean=[0.0] * 4, latents_std=[1.0] * 4)
    transformer = WanTransformer3DModel(patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=8,
                                        in_channels=12, out_channels=4, text_dim=32, freq_dim=16, ffn_dim=16,
                                        num_layers=1, image_dim=8, added_kv_proj_dim=16, rope_max_seq_len=32)
    clip = CLIPVisionModel(CLIPVisionConfig(hidden_size=8, projection_dim=8, num_hidden_layers=1,
                                                          num_attention_heads=2, image_size=16, patch_size=4,
                                                          intermediate_size=16))
    return WanImageToVideoPipeline(tokenizer=_tokenizer(), text_encoder=_t5(umt5=True), vae=vae,
                                   scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),
                                   image_processor=CLIPImageProcessorPil(crop_size=16, size={"shortest_edge": 16}),
                                   image_encoder=clip, transformer=transformer)


def ltx():
    from diffusers import (AutoencoderKLLTXVideo, FlowMatchEulerDiscreteScheduler, LTXImageToVideoPipeline,
                           LTXVideoTransformer3DModel)

    transformer = LTXVideoTransformer3DModel(in_channels=8, out_channels=8, patch_size=1, patch_size_t=1,
                                             num_attention_heads=2, attention_head_dim=8, cross_attention_dim=16,
                                             num_layers=1, caption_channels=32)
    vae = AutoencoderKLLTXVideo(latent_channels=8, block_out_channels=(8, 8, 8, 8),
                                decoder_block_out_channels=(8, 8, 8, 8), layers_per_block=(1, 1, 1, 1, 1),
                                decoder_layers_per_block=(1, 1, 1, 1, 1),
                                spatio_temporal_scaling=(True, True, False, False),
                                decoder_spatio_temporal_scaling=(True, True, False, False),
                                decoder_inject_noise=(False,) * 5, upsample_residual=(False,) * 4,
                                upsample_factor=(1,) * 4, patch_size=1, patch_size_t=1)
    return LTXImageToVideoPipeline(scheduler=FlowMatchEulerDiscreteScheduler(), vae=vae, text_encoder=_t5(),
                                   tokenizer=_tokenizer(), transformer=transformer)


def cogvideox():
    from diffusers import (AutoencoderKLCogVideoX, CogVideoXDDIMScheduler, CogVideoXImageToVideoPipeline,
                           CogVideoXTransformer3DModel)

    transformer = CogVideoXTransformer3DModel(num_attention_heads=2, attention_head_dim=16, in_channels=8,
                                              out_channels=4, time_embed_dim=4, text_embed_dim=32, num_layers=1,
                                              sample_width=2, sample_height=2, sample_frames=9, patch_size=2,
                                              temporal_compression_ratio=4, max_text_seq_length=16,
                                              use_rotary_positional_embeddings=True,
                                              use_learned_positional_embeddings=True)
    vae = AutoencoderKLCogVideoX(down_block_types=("CogVideoXDownBlock3D",) * 4,
                                 up_block_types=("CogVideoXUpBlock3D",) * 4, block_out_channels=(8, 8, 8, 8),
                                 latent_channels=4, layers_per_block=1, norm_num_groups=2,
                                 temporal_compression_ratio=4)
    return CogVideoXImageToVideoPipeline(tokenizer=_tokenizer(), text_encoder=_t5(), vae=vae,
                                         transformer=transformer, scheduler=CogVideoXDDIMScheduler())


# name -> (builder, the call settings the tiny model takes: size, frames, max_sequence_length)
PIPELINES = {"wan": (wan, dict(height=16, width=16, num_frames=9, max_sequence_length=16)),
             "ltx": (ltx, dict(height=32, width=32, num_frames=9, max_sequence_length=16)),
             "cogvideox": (cogvideox, dict(height=16, width=16, num_frames=9, max_sequence_length=16))}


def save(name: str, folder: Path) -> Path:
    """The tiny ``name`` pipeline (seeded), written with ``save_pretrained`` (safetensors) to ``folder``."""
    torch.manual_seed(SEED)
    PIPELINES[name][0]().save_pretrained(folder)
    return Path(folder)


@pytest.fixture()
def _no_ftfy(monkeypatch):
    # diffusers' Wan prompt cleaning calls ftfy.fix_text (an optional package not installed here): identity
    import diffusers.pipelines.wan.pipeline_wan_i2v as wan_module

    if not hasattr(wan_module, "ftfy"):
        monkeypatch.setattr(wan_module, "ftfy", types.SimpleNamespace(fix_text=lambda text: text), raising=False)


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """The three tiny pipelines, saved once per module (HF_HUB_OFFLINE is set for every test: conftest.py)."""
    root = tmp_path_factory.mktemp("i2v")
    return {name: save(name, root / name) for name in PIPELINES}


def test_spec_keys_and_row_options():
    s = parse_spec("i2v:/models/wan:4:guidance=1:transformer=/ckpt/student")
    assert (s.name, s.steps, s.key) == ("i2v", 4, "i2v:/models/wan:4:guidance=1:transformer=/ckpt/student")
    assert dict(s.options) == {"pipeline": "/models/wan", "guidance": "1", "transformer": "/ckpt/student"}
    assert parse_spec("i2v:Wan-AI/Wan2.1-I2V-14B-480P-Diffusers").key == "i2v:Wan-AI/Wan2.1-I2V-14B-480P-Diffusers:50"
    assert parse_spec("i2v:8").key == "i2v:8"                       # the pipeline from i2v.pipeline=...
    assert parse_spec("i2v:8:pipeline=/m/ltx").key == "i2v:8:pipeline=/m/ltx"
    teacher, student = parse_specs("i2v:/m/wan:50,i2v:/m/wan:4:transformer=/s")
    assert teacher.key != student.key
    m = get_method(student, guidance="5", prompt="{label}")         # the row's options over the method's
    assert m.options["transformer"] == "/s" and m.options["pipeline"] == "/m/wan" and m.options["prompt"] == "{label}"
    for bad, needle in [("i2v:/m:x", "bad step count"), ("i2v:/m:0", "bad step count"),
                        ("i2v:/m:4:colour=red", "unknown option 'colour'"), ("i2v:/m:4:fps=fast", "not a valid int"),
                        ("i2v:/m:4:junk", "expected i2v:SOURCE")]:
        with pytest.raises(UserError, match=needle):
            parse_spec(bad)


def test_protocol_frames_at_16_and_24_fps():
    assert frame_indices(81, 16, 14, 7) == [0, 2, 5, 7, 9, 11, 14, 16, 18, 21, 23, 25, 27, 30]
    assert frame_indices(161, 24, 14, 7) == [0, 3, 7, 10, 14, 17, 21, 24, 27, 31, 34, 38, 41, 45]
    assert frame_indices(49, 8, 14, 7) == [0, 1, 2, 3, 5, 6, 7, 8, 9, 10, 11, 13, 14, 15]
    assert frame_indices(14, 7, 14, 7) == list(range(14)) == frame_indices(25, 16, 14, 7, "first")
    with pytest.raises(UserError, match="set i2v.frames"):
        frame_indices(17, 16, 14, 7)


def test_prompt_template():
    assert class_words("ApplyEyeMakeup") == "apply eye makeup" and class_words("YoYo") == "yo yo"
    assert prompt_for("PlayingGuitar") == "a video of playing guitar"
    assert prompt_for("PlayingGuitar", "{label}: a person {words}") == "PlayingGuitar: a person playing guitar"
    with pytest.raises(UserError, match="may use"):
        prompt_for("X", "{class}")


# name -> (spec options, denoiser calls x batch per video at 2 steps with guidance 3: Wan calls cond and
# uncond apart, LTX and CogVideoX in one batch-2 call)
CASES = {"wan": ("height=16:width=16:frames=9", [1, 1, 1, 1]),
         "ltx": ("height=32:width=32:frames=9", [2, 2]),
         "cogvideox": ("height=16:width=16:frames=9", [2, 2])}


@pytest.mark.parametrize("name", sorted(CASES))
def test_frames_equal_the_pipelines_own_call(name, folders, _no_ftfy):
    """Two videos (two seeds, two classes) equal, bit for bit, the pipeline's own __call__ with that seed:
    the method calls that same __call__, so equal is exact (uint8 by diffusers' round(255 x))."""
    from diffusers import DiffusionPipeline
    from PIL import Image

    options, calls = CASES[name]
    kw = PIPELINES[name][1]
    m = get_method(f"i2v:{folders[name]}:2:{options}:fps=7:guidance=3:max_sequence_length=16")
    m.check()
    assert m.cfg                                      # guidance 3 > 1: CFG (Wan: two calls, the others: batch 2)
    assert m.unet_calls_per_video() == {"calls": len(calls), "batch": calls[0]}
    m.load(device="cpu", dtype="fp32")
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (2, kw["height"], kw["width"], 3), dtype=np.uint8)
    seeds, labels = [11, 12], ["ApplyEyeMakeup", "YoYo"]
    got = m.generate(images, seeds, num_frames=9, fps=7, labels=labels)     # 9 frames at 7 fps: all of them
    assert got.shape == (2, 9, kw["height"], kw["width"], 3) and got.dtype == np.uint8
    assert m.unet_call_log == calls * 2 and len(m.last_unet_times()) == 2 and min(m.last_unet_times()) > 0
    parts = m.last_part_times()
    assert {"text_encoder", "vae_encode", "vae_decode"} <= set(parts) and min(parts.values()) > 0
    assert ("image_encoder" in parts) == (name == "wan")                 # Wan 2.1's CLIP image encoder
    pipe = DiffusionPipeline.from_pretrained(folders[name], local_files_only=True, use_safetensors=True)
    if name == "ltx":
        kw = {**kw, "frame_rate": 7}                                  # fps=N also sets LTX's frame_rate
    for image, seed, label, video in zip(images, seeds, labels, got):
        ref = pipe(image=Image.fromarray(image), prompt=prompt_for(label), num_inference_steps=2, guidance_scale=3.0,
                   generator=torch.Generator("cpu").manual_seed(seed), output_type="np", **kw).frames[0]
        np.testing.assert_array_equal(video, (np.asarray(ref) * 255).round().astype(np.uint8))
    key, what, replay = m.unet_pass()
    assert what["inputs"]["hidden_states"][0] == calls[0] and replay() is not None
    desc = m.describe()
    assert desc["pipeline_class"] == type(pipe).__name__ and len(desc["stack_sha256"]) == 64
    loaded = m.pipe
    assert isinstance(vars(loaded.transformer)["forward"], CallClock)
    m.unload()                                                            # the clocks come off
    assert "forward" not in vars(loaded.transformer) and "decode" not in vars(loaded.vae)


def test_teacher_from_the_offline_cache_and_a_student_transformer(folders, tmp_path, monkeypatch):
    """The teacher by repo id from the offline HF cache, a distilled student as a transformer folder: one table."""
    import shutil

    import huggingface_hub.constants as c
    from diffusers import DiffusionPipeline

    repo = tmp_path / "hub" / "models--tiny-org--ltx-i2v"
    shutil.copytree(folders["ltx"], repo / "snapshots" / ("2" * 40))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("2" * 40)
    monkeypatch.setattr(c, "HF_HUB_CACHE", str(tmp_path / "hub"))
    pipe = DiffusionPipeline.from_pretrained(folders["ltx"], local_files_only=True)
    with torch.no_grad():
        for p in pipe.transformer.parameters():
            p.mul_(0.5)
    pipe.transformer.save_pretrained(tmp_path / "student" / "transformer")
    opts = "height=32:width=32:frames=9:fps=7:max_sequence_length=16:guidance=1"
    image = np.full((1, 32, 32, 3), 90, np.uint8)
    specs = (f"i2v:tiny-org/ltx-i2v:1:{opts}", f"i2v:{folders['ltx']}:1:{opts}",
             f"i2v:{folders['ltx']}:1:{opts}:transformer={tmp_path / 'student'}")
    rows = [get_method(spec).load() for spec in specs]
    cached, teacher, student = (m.generate(image, [3], num_frames=9, fps=7) for m in rows)
    assert all(m.unet_call_log == [1] for m in rows)                      # guidance 1: no CFG, one call
    assert np.array_equal(cached, teacher) and not np.array_equal(teacher, student)
    ids = [m.describe()["stack_sha256"] for m in rows]
    assert ids[0] == ids[1] != ids[2]                    # the student's samples are never taken for the teacher's


def test_bad_pipeline_folders(tmp_path, folders):
    with pytest.raises(UserError, match="needs a pipeline"):
        get_method("i2v:4").check()
    with pytest.raises(UserError, match="does not exist"):
        get_method(f"i2v:{tmp_path / 'nope'}:4").check()
    with pytest.raises(UserError, match="no model_index.json"):
        get_method(f"i2v:{tmp_path}:4").check()
    if importlib.util.find_spec("ftfy") is None:            # a one-line error, not diffusers' NameError mid-run
        with pytest.raises(UserError, match="pip install ftfy"):
            get_method(f"i2v:{folders['wan']}:4").check()
    if importlib.util.find_spec("peft") is None:            # LoRA loading is diffusers' and needs peft
        with pytest.raises(UserError, match="pip install peft"):
            get_method(f"i2v:{folders['ltx']}:4:lora={tmp_path}").check()
    with pytest.raises(UserError, match="guidance='strong' is not a number"):
        get_method(f"i2v:{folders['ltx']}:4", guidance="strong").check()
    (tmp_path / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline"}))
    with pytest.raises(UserError, match="not a diffusers image-to-video pipeline"):
        get_method(f"i2v:{tmp_path}:4").check()


@pytest.mark.slow
def test_one_step_and_multi_step_rows(folders, synthetic_root, tmp_path):
    """`sfv-bench run` on the tiny world: the same ids, seeds, FVD, table, resume and sharding as every method."""
    from bench.cli import main

    ltx = f"i2v:{folders['ltx']}"
    opts = "height=32:width=32:frames=17:fps=8:max_sequence_length=16"      # 14 frames at 7 fps of a 17-frame clip
    specs = f"{ltx}:1:{opts}:guidance=1,{ltx}:3:{opts}"
    args = ["run", "--world", "tiny", "--methods", specs, "-n", "4", "--out", str(tmp_path / "r"),
            "--timing-videos", "1", "--no-previews"]
    assert main(args) == 0
    rows = [json.loads(line) for line in (tmp_path / "r" / "results.jsonl").read_text().splitlines()]
    assert [(r["steps"], r["unet_calls"], r["unet_batch"], r["cfg"]) for r in rows] == [(1, 1, 1, False),
                                                                                       (3, 3, 2, True)]  # LTX: CFG 3
    for r in rows:
        assert r["status"] == "ok" and r["n_fake"] == 4 and r["fvd"] > 0
        assert {"text_encoder", "vae_encode", "vae_decode"} <= set(r["latency"]["parts"])
        assert r["latency"]["pass_s"] > 0
        mapping = r["adapter"]["protocol_mapping"]
        assert mapping["frames_scored_14_at_7fps"] == [0, 1, 2, 3, 5, 6, 7, 8, 9, 10, 11, 13, 14, 15]
        assert r["adapter"]["options"]["prompt"] == "a video of {words}"
        assert r["stack"] == r["adapter"]["stack"] == str(folders["ltx"])   # its own pipeline, not the run's SVD stack
    table = (tmp_path / "r" / "table.md").read_text()
    assert f"{ltx}:1:" in table and f"{ltx}:3:" in table
    sample = next((tmp_path / "r" / "samples").rglob("*.npz"))
    stamp = sample.stat().st_mtime_ns
    assert main(args) == 0 and sample.stat().st_mtime_ns == stamp          # resumed: nothing regenerated
    # sharded over two processes: the same bits, the same FVD
    from sfv_core.data.videoio import read_video

    assert main([*args[:8], str(tmp_path / "r2"), *args[9:], "--procs", "2"]) == 0
    made = sorted((tmp_path / "r" / "samples").rglob("*.npz"))
    assert len(made) == 8
    for npz in made:
        assert np.array_equal(read_video(npz), read_video(tmp_path / "r2" / npz.relative_to(tmp_path / "r")))
    sharded = [json.loads(line) for line in (tmp_path / "r2" / "results.jsonl").read_text().splitlines()]
    assert [r["fvd"] for r in sharded] == [r["fvd"] for r in rows] and sharded[0]["processes"] == 2
    # resume keeps a row's samples while what made them is equal (bench.generate.prepare_dir): a fresh method
    # of the same spec describes the same identity as the one stored
    from bench.generate import spec_dirname

    for r in rows:
        stored = json.loads((tmp_path / "r" / "samples" / spec_dirname(r["spec"]) / "method.json").read_text())
        m = get_method(r["spec"])
        m.check()
        desc = m.describe()
        assert stored == {"spec": r["spec"], "options": desc["options"],
                          **{k: desc.get(k) for k in ("stack", "unet", "stack_sha256", "unet_sha256")}}


class _Recorder:
    """A method as the harness sees it: records the classes it is given, reports part times when asked."""

    def __init__(self, takes_labels: bool, parts: bool):
        self.takes_labels, self.seen = takes_labels, []
        if parts:
            self.last_part_times = lambda: {"text_encoder": 0.5, "vae_decode": 0.25}

    def generate(self, images, seeds, conditions=None, labels=None):
        self.seen.append(labels)
        return np.zeros((len(images), 14, 8, 8, 3), np.uint8)

    timed_part = generate

    def unet_calls_per_video(self):
        return {"calls": 1, "batch": 1}

    def last_unet_times(self):
        return [0.125]


def test_harness_gives_each_video_its_class_and_records_part_times(tmp_path):
    from bench.generate import generate_method, time_method
    from sfv_core.protocol import Protocol

    refs = [types.SimpleNamespace(sample_id=f"{c}/v_{c}_g01_c01", label=c) for c in ("YoYo", "Archery", "Rowing")]
    image = np.zeros((8, 8, 3), np.uint8)
    for takes, want in ((True, [["YoYo", "Archery"], ["Rowing"]]), (False, [None, None])):
        m = _Recorder(takes, parts=takes)
        generate_method(m, refs, {r.sample_id: 0 for r in refs}, tmp_path / str(takes), Protocol(),
                        lambda r: image, batch_size=2, save_size="gen")
        assert m.seen == want
        lat = time_method(m, [image] * 2, seeds=[0, 1], conditions=None, device="cpu", threads=1)
        assert lat["median_s"] == 0.125
        if takes:
            assert lat["parts"]["text_encoder"]["median_s"] == 0.5 and lat["parts"]["vae_decode"]["n"] == 2
        else:
            assert "parts" not in lat                      # the SVD family's latency.json stays as it was


def test_spec_source_may_hold_an_equals_sign():
    """A checkpoint folder such as /ckpt/step=1000 is a SOURCE, not a KEY=VALUE part."""
    (spec,) = parse_specs("i2v:/ckpt/step=1000:4:guidance=1")
    assert spec.steps == 4 and dict(spec.options) == {"pipeline": "/ckpt/step=1000", "guidance": "1"}


def test_guidance_rules():
    """Embedded guidance (HunyuanVideo) makes no CFG calls; `sfv-bench ls` says an i2v row guides unless a
    guidance of 1 or less is asked."""
    from methods.i2v_spec import calls_per_video, uses_cfg
    from methods.registry import METHODS

    assert uses_cfg("WanImageToVideoPipeline", 5.0) and not uses_cfg("WanImageToVideoPipeline", 1.0)
    assert not uses_cfg("HunyuanVideoImageToVideoPipeline", 6.0)
    assert calls_per_video("HunyuanVideoImageToVideoPipeline", 4, 6.0) == {"calls": 4, "batch": 1}
    assert METHODS["i2v"].uses_cfg() and not METHODS["i2v"].uses_cfg({"guidance": "1"})


def test_recorded_native_geometry(folders, _no_ftfy):
    """LTX-Video's rate is its __call__'s frame_rate default (25); CogVideoX's size, which its __call__ leaves
    open, is its transformer's sample size times the VAE's spatial factor."""
    ltx = get_method(f"i2v:{folders['ltx']}:2")
    ltx.check()
    assert ltx.describe()["protocol_mapping"]["native"]["fps"] == 25.0
    cog = get_method(f"i2v:{folders['cogvideox']}:2")
    cog.check()
    native = cog.describe()["protocol_mapping"]["native"]
    assert isinstance(native["height"], int) and isinstance(native["width"], int) and native["height"] > 0
