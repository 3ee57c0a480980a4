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
