"""Argument types for the ``wfm-sim`` command: numbers checked where they are parsed, and usage
errors as one line."""

from __future__ import annotations

import argparse


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


class Parser(argparse.ArgumentParser):
    """argparse, with a usage error as one line: ``wfm-sim collect: error: argument --episodes: ...``."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")
