"""``--config FILE`` of `sfv-bench run` and `sfv-train`: the file's values checked and converted by the same
argparse actions (type, choices) as the command line's, then used as the parser's defaults. Torch-free."""
from __future__ import annotations

import argparse

from sfv_core.errors import UserError
from sfv_core.values import parse_bool, read_config_file


def apply_config(parser: argparse.ArgumentParser, argv: list) -> dict:
    """``--config FILE`` (TOML, YAML or JSON; keys are option names, dashes or underscores): the file's
    values become the parser's defaults, so flags given on the command line override them. Returns
    the file's mapping ({} without --config); an unknown key is a UserError naming the valid ones."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config")
    known, _ = pre.parse_known_args(argv)
    if not known.config:
        return {}
    data = read_config_file(known.config)
    actions = {a.dest: a for a in parser._actions if a.dest not in ("help", "config", "version")}
    defaults = {}
    for key, value in data.items():
        dest = str(key).replace("-", "_")
        if dest not in actions:
            raise UserError(f"config file {known.config}: unknown option {key!r}; valid: "
                            f"{', '.join(sorted(actions))}")
        if value is None:                                 # `key:` with no value in YAML, or null: the default
            continue
        defaults[dest] = _config_value(parser, actions[dest], value, known.config)
    parser.set_defaults(**defaults)
    return data


def _config_value(parser, action, value, path):
    """A config file's value through the option's own argparse type and choices, so a file is checked as
    the command line is, with argparse's messages (``{"num_videos": [4]}``: "invalid int value: '[4]'"): a
    switch takes a boolean (or on/off, true/false, yes/no, 1/0), a repeatable or multi-value option a list
    or one value, any other option one value (null: the option keeps its default)."""
    def fail(message):
        raise UserError(f"config file {path}: {message}")

    name = "/".join(action.option_strings) or action.dest
    if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction)):   # switches: the key is the
        if not isinstance(value, (bool, str, int)):                                      # dest, the value its value
            fail(f"argument {name}: expected a boolean, got {value!r}")
        try:
            return parse_bool(value, f"argument {name}")
        except UserError as e:
            fail(str(e))
    many = isinstance(action, argparse._AppendAction) or action.nargs not in (None, "?")
    items = value if isinstance(value, list) and many else [value]
    out = []
    for item in items:
        if item is None:                                  # a null item of a list: left out
            continue
        if isinstance(item, (dict, list)) and action.type is None:
            fail(f"argument {name}: expected one value, got {item!r}")
        try:       # argparse's own conversion and choices check, as for a typed flag
            out.append(parser._get_values(argparse.Action([], dest=action.dest, nargs=None, type=action.type,
                                                          choices=action.choices), [str(item)]))
        except argparse.ArgumentError as e:
            fail(f"argument {name}: {e.message}")
    return out if many else out[0]
