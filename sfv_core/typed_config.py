"""Typed configuration: the options of `sfv-bench run` and `sfv-train` are dataclass fields (type,
default, ``Literal`` choices, help), the command line is generated from them, and every value, from the
command line, a ``--config FILE`` or code, is validated by pydantic against those same type hints.

Why pydantic (2) and not transformers' ``HfArgumentParser``: HfArgumentParser only turns dataclasses into
argparse options; its ``parse_dict`` / ``parse_yaml_file`` hand a file's values to the constructor
unchecked (a list where an int belongs passes, ``"false"`` stays a true string), and importing it loads
all of transformers (~3 s before any ``--help``). pydantic validates a mapping against a plain
dataclass's own hints (ints, floats, bool words, ``Literal`` choices, unknown keys) and names the field
that is wrong, whatever the values came from. tyro is not a dependency. The argparse side stays the
standard library, generated here from the same fields, so a choice or a type is declared once.

Torch-free: the command line imports this.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import os
import types
import typing

from .errors import UserError
from .values import parse_bool, read_config_file


def option(default=None, help: str = "", group: str = "options", *, run_only: bool = False,
           default_factory=None, **cli):
    """A configuration field: ``default``, ``help`` (shown by --help), ``group`` (its --help section),
    ``run_only`` (the option does not change trained weights: a resumed run may change it), and what the
    command line needs beyond the type: ``flag`` (default --field-name), ``aliases``, ``metavar``,
    ``nargs``/``const``, ``negate`` (a store_false switch named by ``flag``)."""
    meta = {"help": help, "group": group, "run_only": run_only, **cli}
    if default_factory is not None:
        return dataclasses.field(default_factory=default_factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def run_only_fields(cls) -> frozenset:
    """The fields of ``cls`` (or of a base class, where a subclass re-declares one) declared ``run_only``:
    options that may differ between a run and its resume."""
    return frozenset(f.name for base in cls.__mro__ if dataclasses.is_dataclass(base)
                     for f in dataclasses.fields(base) if f.metadata.get("run_only"))


def choices(cls, name: str) -> tuple:
    """The allowed values of field ``name`` (its ``Literal``), e.g. ``choices(TrainConfig, "heads")``."""
    return _literal(_hints(cls)[name]) or ()


# ----------------------------------------------------------------------------------------- command line

def add_options(parser, cls, show_defaults: bool = False, group_order=()) -> None:
    """One argparse option per field of ``cls`` that has a help text: type and choices from its hints
    (``X | None`` -> X, ``Literal[...]`` -> choices, ``list[str]`` -> a repeatable option, ``bool`` -> a
    switch taking an optional on/off), grouped by the field's ``group`` (``group_order`` first)."""
    groups = {name: parser.add_argument_group(name) for name in group_order}
    for f in dataclasses.fields(cls):
        meta = f.metadata
        if not meta.get("help"):
            continue
        target = parser
        if meta["group"] != "options":
            target = groups.get(meta["group"]) or groups.setdefault(meta["group"],
                                                                    parser.add_argument_group(meta["group"]))
        flags = [*meta.get("aliases", ()), meta.get("flag", "--" + f.name.replace("_", "-"))]
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        helptext = meta["help"]
        if show_defaults and not (default is None or default is False or default in ("", [])) \
                and not meta.get("negate"):
            helptext += f" (default: {default})"
        kw = {"dest": f.name, "help": helptext.replace("%", "%%"), "default": default}
        if meta.get("negate"):
            target.add_argument(*flags, action="store_false", **kw)
            continue
        kw.update(_argparse_type(_hints(cls)[f.name]))
        kw.update({k: meta[k] for k in ("metavar", "nargs", "const") if k in meta})
        target.add_argument(*flags, **kw)


def _argparse_type(hint) -> dict:
    base = _without_none(hint)
    literal = _literal(base)
    if literal:
        return {"type": type(literal[0]), "choices": literal}
    if typing.get_origin(base) is list:
        return {"type": str, "action": "append"}
    if base is bool:
        return {"type": _bool_arg, "nargs": "?", "const": True, "metavar": "on|off"}
    return {"type": base}


def _bool_arg(text: str) -> bool:
    try:
        return parse_bool(text)
    except UserError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


# ------------------------------------------------------------------------------------------- validation

def validate(cls, values: dict, source: str = ""):
    """``cls(**values)`` with every value checked against the field's type hint by pydantic (lax: ``"4"``
    and ``4.0`` are ints, ``"off"`` is False; ``2.5`` or ``[4]`` for an int, a value outside a ``Literal``,
    an unknown key: a UserError naming the option, what it got and what it takes)."""
    import pydantic

    where = f"{source}: " if source else ""
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(values) - set(names))
    if unknown:
        raise UserError(f"{where}unknown option {unknown[0]!r}; valid: {', '.join(sorted(names))}")
    for name, value in values.items():      # pydantic's lax mode reads true as 1: a switch is not a number
        if isinstance(value, bool) and _number_field(cls, name):
            raise UserError(f"{where}{name} = {value!r}: {_flag(cls, name)} takes a number, not true/false")
    values = {k: _numeric_choice(cls, k, os.fspath(v) if isinstance(v, os.PathLike) else v) for k, v in values.items()}
    try:
        return _adapter(cls).validate_python(values)
    except pydantic.ValidationError as e:
        raise UserError(_one_line(e.errors()[0], cls, source)) from None


@functools.cache
def _adapter(cls):
    import pydantic

    return pydantic.TypeAdapter(cls)


def _one_line(error: dict, cls, source: str) -> str:
    key = str(error["loc"][0]) if error["loc"] else "?"
    where = f"{source}: " if source else ""
    message = error["msg"].replace("Input should be", "takes", 1)
    return f"{where}{key} = {error['input']!r}: {_flag(cls, key)} {message}"


def _numeric_choice(cls, name: str, value):
    """``"2"`` for a choice among ints is 2, as lax mode reads ``"64"`` for an int (pydantic leaves a string
    unconverted for ``Literal[1, 2, 3]``)."""
    if isinstance(value, str) and any(type(v) is int for v in _literal(_without_none(_hints(cls)[name])) or ()):
        with contextlib.suppress(ValueError):
            return int(value)
    return value


def _number_field(cls, name: str) -> bool:
    hint = _without_none(_hints(cls)[name])
    return hint in (int, float) or any(type(v) is int for v in _literal(hint) or ())


def _flag(cls, name: str) -> str:
    field = next((f for f in dataclasses.fields(cls) if f.name == name), None)
    meta = field.metadata if field else {}
    return meta.get("flag", "--" + name.replace("_", "-"))


# ----------------------------------------------------------------------------------------- config files

def config_file_values(cls, path) -> dict:
    """The options a ``--config FILE`` (TOML, YAML or JSON; keys: option names, dashes or underscores) sets,
    each validated as the command line's are (a UserError naming the file and the key); a null value
    keeps the option's default; a repeatable option takes a list or one value. Options may sit in sections
    named as --help's groups (TOML ``[objective]``, a YAML mapping ``objective:``)."""
    data = read_config_file(path)
    source = f"config file {path}"
    names = {f.name: f.name for f in dataclasses.fields(cls)}
    names.update({_flag(cls, f.name)[2:].replace("-", "_"): f.name for f in dataclasses.fields(cls)
                  if not f.metadata.get("negate")})                   # --lambda: key lambda or recon_weight
    sections = {f.metadata.get("group") for f in dataclasses.fields(cls)} - set(names)
    items = []
    for key, value in data.items():
        items += value.items() if isinstance(value, dict) and key in sections else [(key, value)]
    given = {}
    for key, value in items:
        name = names.get(str(key).replace("-", "_"))
        if name is None:
            raise UserError(f"{source}: unknown option {key!r}; valid: {', '.join(sorted(names))}")
        if value is None:
            continue
        if typing.get_origin(_without_none(_hints(cls)[name])) is list and not isinstance(value, list):
            value = [value]
        given[name] = value
    checked = validate(cls, given, source)
    return {name: getattr(checked, name) for name in given}


def apply_config_file(parser, cls, argv) -> dict:
    """``--config FILE`` among ``argv``: its values become ``parser``'s defaults (so a flag on the command line
    overrides them); returns them ({} without --config)."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config")
    known, _ = pre.parse_known_args(argv)
    if not known.config:
        return {}
    values = config_file_values(cls, known.config)
    parser.set_defaults(**values)
    return values


# ------------------------------------------------------------------------------------------ type hints

@functools.cache
def _hints(cls) -> dict:
    return typing.get_type_hints(cls)


def _without_none(hint):
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    return args[0] if typing.get_origin(hint) in (typing.Union, types.UnionType) and len(args) == 1 else hint


def _literal(hint) -> tuple | None:
    hint = _without_none(hint)
    return typing.get_args(hint) if typing.get_origin(hint) is typing.Literal else None
