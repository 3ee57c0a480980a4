"""Parsing of user-typed values (command line, method options, config files), one rule each."""
from __future__ import annotations

from .errors import UserError

TRUE = ("1", "true", "yes", "on")
FALSE = ("0", "false", "no", "off")


def parse_bool(value, what: str = "value") -> bool:
    """on/off, true/false, yes/no, 1/0 (any case) -> bool; a bool passes through."""
    if isinstance(value, bool):
        return value
    low = str(value).strip().lower()
    if low in TRUE:
        return True
    if low in FALSE:
        return False
    raise UserError(f"{what} takes on/off (or true/false, yes/no, 1/0), got {value!r}")


def parse_size(text: str | None, what: str = "--size"):
    """'WxH' -> (W, H) with positive integers; None passes through."""
    if text is None:
        return None
    try:
        w, h = (int(v) for v in str(text).lower().split("x"))
        if w <= 0 or h <= 0:
            raise ValueError
    except ValueError:
        raise UserError(f"{what} must be WxH with positive integers (e.g. 320x240), got {text!r}") from None
    return w, h


def read_config_file(path) -> dict:
    """A TOML (.toml), YAML (.yaml/.yml) or JSON (.json) file holding one mapping of option -> value."""
    import json
    from pathlib import Path

    path = Path(path)
    if not path.is_file():
        raise UserError(f"config file {path} does not exist")
    text = path.read_text()
    try:
        if path.suffix == ".toml":
            try:
                import tomllib
            except ImportError:              # Python 3.10
                import tomli as tomllib
            data = tomllib.loads(text)
        elif path.suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text)
        elif path.suffix == ".json":
            data = json.loads(text)
        else:
            raise UserError(f"config file {path}: use .toml, .yaml/.yml or .json")
    except UserError:
        raise
    except Exception as e:  # noqa: BLE001 - any parser's error
        raise UserError(f"config file {path} does not parse ({str(e).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise UserError(f"config file {path} must hold a mapping of option names to values")
    return data
