"""`sfv-bench run`'s typed options: the command line generated from RunConfig, one way in for a UNet, and
Settings built the same from a RunConfig (code) or the parser's namespace (the command line)."""
from __future__ import annotations

import dataclasses

import pytest

from bench.cli import build_parser
from bench.run_config import UNET_METHODS, RunConfig
from sfv_core.errors import UserError
from sfv_core.protocol import WORLDS
from sfv_core.typed_config import choices


def _settings(*argv):
    from bench.settings import Settings

    return Settings(build_parser().parse_args(["run", "--world", "tiny", "--device", "cpu", *argv]))


def test_every_run_option_is_on_the_command_line_with_its_help():
    from bench.cli import _subparser

    actions = {a.dest: a for a in _subparser(build_parser(), "run")._actions}
    for f in dataclasses.fields(RunConfig):
        assert f.name in actions and actions[f.name].help.startswith(f.metadata["help"][:40]), f.name
    assert "-n" in actions["num_videos"].option_strings and actions["save_size"].choices == ("score", "gen")
    assert set(choices(RunConfig, "world")) == {name for name, w in WORLDS.items() if w.dataset is not None}


@pytest.mark.parametrize("method", UNET_METHODS)
def test_a_unet_flag_is_the_method_option(method, tmp_path):
    """--NAME-unet DIR is NAME.unet=DIR through the one option parser; given both ways, the flag wins."""
    flag = _settings("--methods", "dummy:1", f"--{method}-unet", str(tmp_path / "a"))
    option = _settings("--methods", "dummy:1", "--method-option", f"{method}.unet={tmp_path / 'a'}")
    assert flag.options == option.options and flag.options[method]["unet"] == str(tmp_path / "a")
    both = _settings("--methods", "dummy:1", "--method-option", f"{method}.unet={tmp_path / 'b'}",
                     f"--{method}-unet", str(tmp_path / "a"))
    assert both.options[method]["unet"] == str(tmp_path / "a")


def test_settings_from_code_equal_the_command_lines():
    from bench.settings import Settings

    typed = Settings(RunConfig(world="tiny", device="cpu", methods=["dummy:2"], num_videos=4, balanced=False))
    parsed = _settings("--methods", "dummy:2", "-n", "4", "--balanced", "off")
    assert (typed.protocol, typed.specs, typed.options, typed.batch_size, typed.detector) == \
        (parsed.protocol, parsed.specs, parsed.options, parsed.batch_size, parsed.detector)
    assert _settings("--balanced").protocol.balanced is True


def test_a_namespace_with_a_bad_value_is_refused_naming_the_option():
    from argparse import Namespace

    from bench.settings import Settings

    with pytest.raises(UserError, match="world = 'huge': --world takes 'mini' or 'tiny'"):
        Settings(Namespace(world="huge"))


def test_a_run_config_built_in_code_is_validated_as_the_command_line_is():
    """`Settings(RunConfig(...))` (how sfv_lab scores) checks types and choices like `sfv-bench run` does."""
    from bench.run_config import RunConfig
    from bench.settings import Settings
    from sfv_core.errors import UserError

    with pytest.raises(UserError, match="num_videos"):
        Settings(RunConfig(world="tiny", num_videos="many"))
    with pytest.raises(UserError, match="save_size"):
        Settings(RunConfig(world="tiny", save_size="huge"))


def test_a_number_written_as_a_string_is_read_alike_for_a_number_and_a_choice_among_numbers():
    """A config file's `fold = "2"` is read as `width = "64"` is: as the number; a word is still refused."""
    from sfv_core.typed_config import validate
    from sfv_train.config import TrainConfig

    cfg = validate(TrainConfig, {"fold": "2", "width": "64"})
    assert (cfg.fold, cfg.width) == (2, 64)
    with pytest.raises(UserError, match="fold = 'two': --fold takes 1, 2 or 3"):
        validate(TrainConfig, {"fold": "two"})
