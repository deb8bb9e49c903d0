"""Config fields with command-line metadata, for the library's frozen config dataclasses.

A config is plain data; :func:`arg` only attaches what its command line needs (kept here, below
every layer, so that a model or training config can say it without importing the CLI).
"""

from __future__ import annotations

import dataclasses


def arg(default=dataclasses.MISSING, *, positional: bool = False, choices=None, min=None, strict: bool = False,
        metavar: str | None = None, names: bool = False, flag: str | None = None, default_factory=dataclasses.MISSING,
        hidden: bool = False):
    """A config field with command-line metadata.

    Args:
        positional: an argument, not a ``--flag``.
        choices: allowed values.
        min: lower bound of a number (``strict``: exclusive).
        metavar: the value's name in the help.
        names: a comma-separated list of names (``a,b,c``) for a ``tuple[str, ...]``.
        flag: the flag's name, when not ``--field-name``.
        hidden: not a flag (set by the command's code, not the user).
    """
    meta = {"positional": positional, "choices": choices, "min": min, "strict": strict, "metavar": metavar,
            "names": names, "flag": flag, "hidden": hidden}
    if default_factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)
