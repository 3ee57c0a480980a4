"""sfv-train's typed configuration: one declaration per option (LoopConfig's shared ones, TrainConfig's own),
run-only options marked on their fields, validation of configurations built in code, the resume entry."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from sfv_core.errors import UserError
from sfv_core.protocol import GEN
from sfv_core.typed_config import choices, run_only_fields
from sfv_train.config import METHODS, PRESETS, RUN_ONLY, TrainConfig, resume_config
from sfv_train.loop_config import LoopConfig

# the options a resume may change: sfv-train's and those every trainer shares
RECORDED_RUN_ONLY = {"out", "resume", "max_steps", "checkpoint_every", "checkpoints_total_limit", "log_every",
                     "preview_every", "device", "latent_cache", "report_to", "progress", "export_weights",
                     "fvd_every", "fvd_videos", "fvd_detector", "fvd_data", "fvd_split", "milestone_every",
                     "process_group_timeout", "teacher_batch", "estimate_memory"}
RECORDED_LOOP_RUN_ONLY = {"out", "resume", "max_steps", "checkpoint_every", "checkpoints_total_limit", "log_every",
                          "preview_every", "device", "report_to", "progress"}


def test_run_only_options_are_marked_once_on_their_fields():
    assert RUN_ONLY == RECORDED_RUN_ONLY
    assert run_only_fields(LoopConfig) == RECORDED_LOOP_RUN_ONLY
    from sfv_train.classifier import DetectorConfig     # re-declares log_every / checkpoint_every: still run-only
    assert run_only_fields(DetectorConfig) >= RECORDED_LOOP_RUN_ONLY
    a = DetectorConfig(out="o", log_every=1, checkpoint_every=3, max_steps=5).compared()
    assert a == DetectorConfig(out="p", log_every=7, checkpoint_every=9, max_steps=50).compared()
    assert TrainConfig(seed=1).compared() != TrainConfig(seed=2).compared()


def test_train_config_extends_loop_config_without_repeating_its_options():
    """TrainConfig's loop options are LoopConfig's (one help text each); only sfv-train's defaults differ."""
    assert issubclass(TrainConfig, LoopConfig)
    mine = {f.name: f for f in dataclasses.fields(TrainConfig)}
    for f in dataclasses.fields(LoopConfig):
        assert mine[f.name].metadata is f.metadata or mine[f.name].metadata == f.metadata, f.name
    changed = {f.name: mine[f.name].default for f in dataclasses.fields(LoopConfig)
               if mine[f.name].default != f.default}
    assert changed == {"max_steps": 50000, "mixed_precision": "auto", "log_every": 10, "checkpoint_every": 1000,
                       "preview_every": 1000}


def test_clip_defaults_are_the_protocols_and_presets_cover_the_methods():
    from methods.registry import METHODS as GENERATORS

    c = TrainConfig()
    assert (c.num_frames, c.fps, c.motion_bucket_id, c.noise_aug_strength, c.resize) == \
        (GEN.num_frames, GEN.fps, GEN.motion_bucket_id, GEN.noise_aug_strength, GEN.resize) == (14, 7, 127, 0.02,
                                                                                                 "stretch")
    svd = GENERATORS["svd"]                                    # the LADD teacher is the svd method
    assert (c.teacher_steps, c.teacher_max_guidance) == (svd.default_steps, svd.options["max_guidance"].default) \
        == (25, 3.0)
    assert set(PRESETS) == set(METHODS) == set(choices(TrainConfig, "method"))


@pytest.mark.parametrize("method", METHODS)
def test_presets_hold_values_the_options_take(method):
    from sfv_core.typed_config import validate

    assert validate(TrainConfig, PRESETS[method]).to_dict().items() >= PRESETS[method].items()


@pytest.mark.parametrize("kw, message", [
    ({"heads": "one"}, "heads = 'one': --heads takes 'both', 'spatial' or 'temporal'"),
    ({"fold": 4}, "fold = 4: --fold takes 1, 2 or 3"),
    ({"max_steps": 2.5}, "max_steps = 2.5: --max-steps takes a valid integer"),
    ({"recon_weight": "heavy"}, "recon_weight = 'heavy': --lambda takes a valid number"),
    ({"mixed_precision": "fp8"}, "--mixed-precision takes 'auto', 'no' or 'bf16'"),
    ({"max_steps": True}, "max_steps = True: --max-steps takes a number, not true/false"),
    ({"fold": True}, "fold = True: --fold takes a number, not true/false"),
])
def test_a_configuration_built_in_code_is_validated_as_the_command_line_is(kw, message):
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")):
        TrainConfig(data="d", out="o", **kw).resolved()


def test_code_values_are_converted_like_typed_ones(tmp_path):
    c = TrainConfig(data=tmp_path, out=tmp_path / "o", max_steps="7", gradient_checkpointing="off").resolved()
    assert (c.max_steps, c.gradient_checkpointing, c.out, c.data) == (7, False, str(tmp_path / "o"), str(tmp_path))


def test_every_option_is_on_the_command_line_with_its_help():
    from bench.cli import build_train_parser

    actions = {a.dest: a for a in build_train_parser()._actions}
    for f in dataclasses.fields(TrainConfig):
        assert f.name in actions and actions[f.name].help.startswith(f.metadata["help"][:40]), f.name
    assert actions["heads"].choices == choices(TrainConfig, "heads")
    assert actions["recon_weight"].option_strings == ["--lambda"]


def test_resume_config_is_the_runs_config_with_the_changes(tmp_path):
    from bench.cli import train_config

    run = tmp_path / "run"
    run.mkdir()
    first = TrainConfig(data=str(tmp_path), out=str(run), stack="tiny", heads="spatial").resolved()
    (run / "config.json").write_text(json.dumps(first.to_dict()))
    cfg = resume_config(run, max_steps=9)
    assert (cfg.out, cfg.resume, cfg.max_steps, cfg.heads, cfg.stack) == (str(run), "latest", 9, "spatial", "tiny")
    assert cfg.resolved() == train_config(["--resume", str(run), "--max-steps", "9"]).resolved()   # the CLI's
    with pytest.raises(UserError, match="holds no run"):
        resume_config(Path(tmp_path / "none"))


def test_a_config_file_may_group_options_in_the_help_sections_and_name_them_as_the_flags(tmp_path):
    """Keys: the option names without -- (``lambda``) or the field names (``recon_weight``)."""
    from bench.cli import train_config

    path = tmp_path / "c.toml"
    path.write_text('stack = "tiny"\n[objective]\nheads = "spatial"\nlambda = 0.5\n[optimisation]\nema = 0.9\n')
    cfg = train_config(["--config", str(path), "--out", str(tmp_path / "o"), "--ema", "0.8"])
    assert (cfg.stack, cfg.heads, cfg.recon_weight, cfg.ema) == ("tiny", "spatial", 0.5, 0.8)
    path.write_text('recon_weight = 0.25\n')
    assert train_config(["--config", str(path), "--out", str(tmp_path / "o")]).recon_weight == 0.25
