"""The one exception type for bad input."""
from __future__ import annotations


class UserError(Exception):
    """Bad input from the user: the CLI prints the message as one line and exits 2."""
