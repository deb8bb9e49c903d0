"""Checkpoint files: ``config.json`` + ``model.safetensors``, written atomically, read without pickle.

Loading never executes code from a file: configs are JSON mapped onto known dataclasses, and
weights come from safetensors (a header plus raw tensor bytes). Corrupt, truncated and foreign
files raise :class:`CheckpointError` naming the file and what was expected.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
import types
import typing
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file


class CheckpointError(ValueError):
    """A checkpoint file is missing, corrupt, truncated or not one of ours."""


def _umask_mode() -> int:
    """The mode a plain ``open()`` would give a new file (mkstemp's own is 0600)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that a reader sees the old file or the new one, never half."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, _umask_mode())
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(Path(path), (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def save_tensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
    """Atomic safetensors write (temp file in the same folder, then rename)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.fchmod(fd, _umask_mode())
    os.close(fd)
    try:
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, tmp, metadata=metadata)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_tensors(path: Path) -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"missing weights file {path} (expected model.safetensors beside config.json)")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{path} is not a readable safetensors file (corrupt or truncated?): {e}") from e


def content_hash(folder: Path) -> str:
    """The first 16 hex digits of the SHA-256 of a checkpoint folder's config.json and model.safetensors."""
    import hashlib

    h = hashlib.sha256()
    for name in ("config.json", "model.safetensors"):
        with open(Path(folder) / name, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()[:16]


def run_settings(cfg: Any, run_file: Path, what: str, free: tuple[str, ...] = ()) -> dict:
    """A run config's settings (JSON-ready, without ``progress``), refused with the names of the
    differing ones when ``run_file`` holds another run's; ``free`` settings may change between
    runs (a budget that grows). Write the result to ``run_file`` once every other check passed."""
    from dataclasses import asdict

    mine = json.loads(json.dumps(asdict(cfg)))
    mine.pop("progress", None)
    if run_file.is_file():
        saved = {**field_defaults(cfg), **json.loads(run_file.read_text())}
        diff = sorted(k for k in mine if k not in free and saved.get(k) != mine[k])
        if diff:
            raise ValueError(f"{run_file.parent} holds a {what} with other settings ({', '.join(diff)}); "
                             "use another --out")
    return mine


def field_defaults(cfg: Any) -> dict:
    """The JSON form of a config dataclass's field defaults: what a run file written before a
    setting existed had, so that adding a setting does not refuse older runs."""
    out = {}
    for f in dataclasses.fields(cfg):
        if f.default is not dataclasses.MISSING:
            out[f.name] = json.loads(json.dumps(to_dict(f.default)))
    return out


def read_json(path: Path, fmt: str) -> dict:
    """Read a config written by us; ``fmt`` is the expected ``"format"`` tag."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"missing {path}: a checkpoint folder holds config.json and model.safetensors")
    try:
        obj = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path} is not valid JSON (corrupt or truncated?): {e}") from e
    if not isinstance(obj, dict) or obj.get("format") != fmt:
        found = obj.get("format") if isinstance(obj, dict) else type(obj).__name__
        raise CheckpointError(f"{path} is not a {fmt} config (its 'format' is {found!r}); expected format={fmt!r}")
    return obj


STORAGES = ("fp32", "bf16", "int8")
SCALE_SUFFIX = ".__int8_scale"


def pack_state(state: dict[str, torch.Tensor], storage: str) -> dict[str, torch.Tensor]:
    """Cast weights for storage: fp32, bf16, or int8 weight-only quantisation of every matrix /
    conv kernel / embedding with >= 1024 entries (symmetric, one fp32 scale per output channel)
    with the remaining small float tensors (norms, biases) in bf16. Non-float tensors stay as is."""
    if storage not in STORAGES:
        raise ValueError(f"storage must be one of {STORAGES}, got {storage!r}")
    out = {}
    for k, v in state.items():
        v = v.detach().cpu()
        if not v.is_floating_point() or storage == "fp32":
            out[k] = v
        elif storage == "bf16":
            out[k] = v.to(torch.bfloat16)
        elif v.ndim >= 2 and v.numel() >= 1024:
            flat = v.float().reshape(v.shape[0], -1)
            scale = flat.abs().amax(dim=1).clamp_min(1e-12) / 127.0
            out[k] = torch.round(flat / scale[:, None]).clamp(-127, 127).to(torch.int8).reshape(v.shape)
            out[k + SCALE_SUFFIX] = scale
        else:
            out[k] = v.to(torch.bfloat16)
    return out


def unpack_state(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Inverse of :func:`pack_state` (int8 entries are dequantised to fp32)."""
    out = {}
    for k, v in tensors.items():
        if k.endswith(SCALE_SUFFIX):
            continue
        scale = tensors.get(k + SCALE_SUFFIX)
        if scale is not None:
            v = (v.float().reshape(v.shape[0], -1) * scale[:, None]).reshape(v.shape)
        out[k] = v.float() if v.is_floating_point() else v
    return out


def to_dict(cfg: Any) -> Any:
    """Dataclass tree -> JSON-ready dict (tuples become lists)."""
    if dataclasses.is_dataclass(cfg):
        return {f.name: to_dict(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)}
    if isinstance(cfg, (tuple, list)):
        return [to_dict(x) for x in cfg]
    return cfg


def from_dict(cls: type, data: Any, where: str = "config") -> Any:
    """Build dataclass ``cls`` from ``data``, recursing into nested dataclass fields.

    Unknown keys raise (a foreign or newer file); missing keys take the field's default.
    """
    if not isinstance(data, dict):
        raise CheckpointError(f"{where}: expected an object for {cls.__name__}, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - names
    if unknown:
        raise CheckpointError(f"{where}: unknown keys {sorted(unknown)} for {cls.__name__}; expected a subset of {sorted(names)}")
    kwargs = {}
    for name, value in data.items():
        kwargs[name] = _coerce(hints[name], value, f"{where}.{name}")
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{where}: invalid {cls.__name__}: {e}") from e


def _coerce(tp: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None:
            return None
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        configs = [a for a in args if dataclasses.is_dataclass(a)]
        if len(configs) > 1 and isinstance(value, dict):  # several config kinds: the "kind" key says which
            kinds = {a: next((f.default for f in dataclasses.fields(a) if f.name == "kind"), None) for a in configs}
            chosen = [a for a in configs if kinds[a] == value.get("kind", kinds[configs[0]])]
            if not chosen:
                raise CheckpointError(f"{where}: unknown kind {value.get('kind')!r}; expected one of "
                                      f"{sorted(str(k) for k in kinds.values())}")
            return from_dict(chosen[0], value, where)
        return _coerce(args[0], value, where)
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, where)
    if origin is tuple and isinstance(value, list):
        args = typing.get_args(tp)
        inner = args[0] if args else Any
        return tuple(_coerce(inner, v, where) for v in value)
    return value
