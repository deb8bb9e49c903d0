"""The ``wfm-sim`` command line, generated from the commands' frozen config dataclasses.

A command is a config class: its fields are the flags (``steps`` -> ``--steps``), their
annotations the types, their defaults the defaults, and the docstring under each field the
help. Nested config fields are flattened (a ``ScoreConfig`` inside the score command gives its
flags too; a field two nested configs share, with one default, is one flag that sets both),
``progress: bool = True`` becomes ``--quiet``, a field without a default is
required. So a flag's default has one source, and a command takes only its own flags.

Field metadata (:func:`wfm_sim.config.arg`) adds what a type cannot say: a positional
argument, choices, a lower bound, a metavar, a name list.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import json
import textwrap
import types
import typing
from functools import lru_cache


# ----------------------------------------------------------------------- value types

def _bounded(cast, lo: float, strict: bool = False):
    """A finite ``cast`` number ``> lo`` (strict) or ``>= lo``, else a one-line error."""
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


def name_list(text: str) -> tuple[str, ...]:
    """Comma-separated names, none empty."""
    names = tuple(n.strip() for n in text.split(","))
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


# ------------------------------------------------------------------ from dataclasses

@lru_cache(maxsize=None)
def field_docs(cls: type) -> dict[str, str]:
    """The docstring under each field of dataclass ``cls`` (and of its bases): ``{name: text}``."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        try:
            tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
        except (OSError, TypeError):
            continue
        body = tree.body[0].body
        for node, nxt in zip(body, body[1:]):
            if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and isinstance(nxt, ast.Expr)
                    and isinstance(nxt.value, ast.Constant) and isinstance(nxt.value.value, str)):
                docs[node.target.id] = " ".join(nxt.value.value.split())
    return docs


def _unwrap(tp):
    """``X | None`` -> ``(X, True)``."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return args[0], len(args) < len(typing.get_args(tp))
    return tp, False


def _number(tp, meta):
    lo = meta.get("min")
    if lo is None:
        return tp
    return _bounded(tp, lo, meta.get("strict", False))


def _is_config(tp) -> bool:
    return dataclasses.is_dataclass(tp) and isinstance(tp, type)


def add_config(parser: argparse.ArgumentParser, cls: type, skip: tuple[str, ...] = ()) -> None:
    """Add a flag (or argument) for every field of ``cls`` and of its nested config fields."""
    hints, docs = typing.get_type_hints(cls), field_docs(cls)
    for f in dataclasses.fields(cls):
        meta = dict(f.metadata)
        if f.name in skip or meta.get("hidden"):
            continue
        tp, optional = _unwrap(hints[f.name])
        if _is_config(tp):
            add_config(parser, tp, skip)
            continue
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        default = None if required else (f.default if f.default is not dataclasses.MISSING else f.default_factory())
        seen = parser.__dict__.setdefault("config_defaults", {})
        if f.name in seen:  # two nested configs share a field: one flag sets both, so their defaults must agree
            if seen[f.name] != (required, default):
                raise TypeError(f"{cls.__name__}.{f.name} is a flag of another config of this command with another "
                                f"default ({seen[f.name][1]!r} vs {default!r}): rename one or give them one default")
            continue
        seen[f.name] = (required, default)
        kw: dict = {"help": docs.get(f.name, "").replace("``", "").replace("%", "%%")}
        name = meta.get("flag") or "--" + f.name.replace("_", "-")
        if tp is bool:
            if f.name == "progress":
                parser.add_argument("--quiet", dest="progress", action="store_false", help="no progress bar")
            elif default:  # on by default: --name / --no-name
                parser.add_argument(name, dest=f.name, action=argparse.BooleanOptionalAction, default=True,
                                    help=kw["help"])
            else:
                parser.add_argument(name, dest=f.name, action="store_true", help=kw["help"])
            continue
        origin = typing.get_origin(tp)
        if origin is tuple or tp in (list, tuple):
            item = (typing.get_args(tp) or (str,))[0]
            if meta.get("names"):
                kw["type"] = name_list
            else:
                kw["nargs"] = "+"
                kw["type"] = _number(item, meta) if item in (int, float) else item
        elif tp is dict:
            kw["type"] = json_object
        elif tp in (int, float):
            kw["type"] = _number(tp, meta)
        else:
            kw["type"] = str
        if meta.get("choices"):
            kw["choices"] = list(meta["choices"])
        if meta.get("metavar"):
            kw["metavar"] = meta["metavar"]
        if default is not None and not isinstance(default, (tuple, list)) or default:
            kw["help"] += f" (default: {','.join(map(str, default)) if isinstance(default, tuple) else default})"
        if meta.get("positional"):
            parser.add_argument(f.name, **kw)
        else:
            parser.add_argument(name, dest=f.name, required=required, default=default, **kw)


def build_config(cls: type, ns: argparse.Namespace, **fixed):
    """Construct ``cls`` (and its nested configs) from parsed flags; ``fixed`` values win."""
    hints, kwargs = typing.get_type_hints(cls), {}
    for f in dataclasses.fields(cls):
        tp, _ = _unwrap(hints[f.name])
        if f.name in fixed:
            kwargs[f.name] = fixed[f.name]
        elif _is_config(tp) and not f.metadata.get("hidden"):
            kwargs[f.name] = build_config(tp, ns)
        elif hasattr(ns, f.name):
            v = getattr(ns, f.name)
            kwargs[f.name] = tuple(v) if isinstance(v, list) else v
    return cls(**kwargs)


def command(sub, name: str, cls: type, run, help: str, example: str, description: str | None = None,
            skip: tuple[str, ...] = (), **fixed) -> argparse.ArgumentParser:
    """A subcommand whose flags are ``cls``'s fields; running it builds ``cls`` and calls ``run(cfg)``."""
    doc = " ".join(cls.__doc__.split()) if cls.__module__ == "wfm_sim.commands" and cls.__doc__ else None
    p = sub.add_parser(name, help=help, description=f"{description or doc or help}\n\nexample:\n  {example}",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config(p, cls, skip + tuple(fixed))
    p.set_defaults(func=lambda ns: run(build_config(cls, ns, **fixed)))
    return p
