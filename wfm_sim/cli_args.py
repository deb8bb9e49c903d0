"""Argument types for the ``wfm-sim`` command: numbers checked where they are parsed, and usage
errors as one line."""

from __future__ import annotations

import argparse
import json


def _bounded(cast, lo: float, strict: bool = False):
    """An argparse type: a finite ``cast`` number ``> lo`` (strict) or ``>= lo``, else a one-line error."""
    what = f"{'an integer' if cast is int else 'a finite number'} {'>' if strict else '>='} {lo:g}"

    def parse(text: str):
        try:
            v = cast(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if v != v or abs(v) == float("inf") or (v <= lo if strict else v < lo):
            raise argparse.ArgumentTypeError(f"expected {what}, got {text}")
        return v

    parse.__name__ = what  # argparse names the type in its messages
    return parse


positive_int = _bounded(int, 1)
nonneg_int = _bounded(int, 0)
positive_float = _bounded(float, 0, strict=True)
nonneg_float = _bounded(float, 0)


def source_name(text: str) -> str:
    """A shipped source name or ``gym:<EnvId>[?options]`` (the env itself is checked when it is built)."""
    from wfm_sim.envs.sources import SOURCES

    if text.split("?")[0] in SOURCES or (text.startswith("gym:") and len(text) > 4):
        return text
    raise argparse.ArgumentTypeError(f"expected one of {sorted(SOURCES)} or gym:<EnvId>, got {text!r}")


source_name.__name__ = "source"


def name_list(text: str) -> list[str]:
    """Comma-separated names, none empty."""
    names = [n.strip() for n in text.split(",")]
    if not all(names):
        raise argparse.ArgumentTypeError(f"expected comma-separated names, got {text!r}")
    return names


name_list.__name__ = "names"


def json_object(text: str) -> dict:
    """A JSON object, e.g. ``'{"reward_dist_weight": 2}'``."""
    try:
        v = json.loads(text)
    except json.JSONDecodeError as e:
        raise argparse.ArgumentTypeError(f"expected a JSON object, got {text!r} ({e.msg})") from None
    if not isinstance(v, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object, got {text!r}")
    return v


json_object.__name__ = "JSON object"


class Parser(argparse.ArgumentParser):
    """argparse, with a usage error as one line: ``wfm-sim collect: error: argument --episodes: ...``."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")
