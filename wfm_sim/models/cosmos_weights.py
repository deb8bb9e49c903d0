"""Reading NVIDIA's released Cosmos-Tokenize1 DV weights into :class:`CosmosVideoTokenizer`.

Loading never executes code from a file: the state dict is read with ``torch.load(...,
weights_only=True)``, and TorchScript archives (the ``.jit`` files NVIDIA publishes) are
refused before anything is read, because loading TorchScript runs the code inside it. The
three DV variants have identical parameter names and shapes, so the variant comes from the
folder name, ``config.json`` or the caller, and they must agree.
"""

from __future__ import annotations

import json
import re
import zipfile
from dataclasses import asdict, fields
from pathlib import Path

import numpy as np
import torch

from wfm_sim.checkpoint import atomic_write_bytes, atomic_write_json
from wfm_sim.metrics import psnr
from wfm_sim.models.cosmos_tokenizer import VARIANTS, CosmosTokenizerConfig, CosmosVideoTokenizer
from wfm_sim.models.world_model import to_video

STATE_DICT_FILES = ("model.pt", "autoencoder.pt")
"""Files holding the whole autoencoder's state dict; or ``encoder.pt`` + ``decoder.pt``."""


class CosmosCheckpointError(ValueError):
    """A Cosmos tokenizer folder or file is missing, unsafe to read, or not the expected variant."""


def _is_torchscript(path: Path) -> bool:
    """TorchScript archives are zip files holding compiled code (``code/``) and ``constants.pkl``."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as z:
        return any("/code/" in n or n.endswith("constants.pkl") for n in z.namelist())


_CONVERT = ("python -c \"import torch; torch.save(torch.jit.load('autoencoder.jit').state_dict(), 'model.pt')\"")


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a PyTorch state-dict file, read with ``weights_only=True``; TorchScript is refused."""
    path = Path(path)
    if not path.is_file():
        raise CosmosCheckpointError(f"{path}: no such file")
    if _is_torchscript(path):
        raise CosmosCheckpointError(
            f"{path} is a TorchScript archive, not a state dict. wfm_sim never loads TorchScript: that runs "
            f"code stored in the file. Convert it once, in an environment you trust: {_CONVERT}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # pickle errors, truncation, foreign formats
        raise CosmosCheckpointError(f"{path} is not a readable PyTorch state dict "
                                    f"(read with weights_only=True): {type(e).__name__}: {e}") from None
    for key in ("state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not obj or not all(isinstance(k, str) and torch.is_tensor(v)
                                                       for k, v in obj.items()):
        raise CosmosCheckpointError(f"{path} holds a {type(obj).__name__}, not a state dict of named tensors")
    return {k.removeprefix("module."): v for k, v in obj.items()}


def _variant_from(folder: Path, variant: str | None, extra: dict) -> str:
    named = sorted({m.upper().replace("X", "x") for m in re.findall(r"DV\d+x\d+x\d+", folder.name, re.I)})
    named = [n for n in named if n in VARIANTS]
    from_config = None
    if "temporal_compression" in extra or "spatial_compression" in extra:
        k, s = extra.get("temporal_compression"), extra.get("spatial_compression")
        from_config = f"DV{k}x{s}x{s}"
    claims = {src: v for src, v in (("variant argument", variant), ("config.json", from_config),
                                    ("folder name", named[0] if len(named) == 1 else None)) if v}
    if not claims:
        raise CosmosCheckpointError(
            f"cannot tell which Cosmos tokenizer {folder} holds: the three DV variants have the same parameter "
            f"names and shapes. Name the folder after it (e.g. Cosmos-Tokenize1-DV4x8x8-360p), pass "
            f"variant= one of {list(VARIANTS)}, or write config.json with temporal_compression and "
            f"spatial_compression")
    if len(set(claims.values())) > 1:
        raise CosmosCheckpointError(f"conflicting Cosmos tokenizer variants for {folder}: " +
                                    ", ".join(f"{src} says {v}" for src, v in claims.items()))
    name = next(iter(claims.values()))
    if name not in VARIANTS:
        raise CosmosCheckpointError(f"{name} is not a released discrete video tokenizer; expected one of "
                                    f"{list(VARIANTS)}")
    return name


def _check_keys(state: dict[str, torch.Tensor], model: CosmosVideoTokenizer, where: str) -> None:
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    name = model.cfg.name
    q = state.get("quant_conv.conv3d.weight")
    if q is not None and q.ndim == 5 and q.shape[0] != len(model.cfg.levels):
        raise CosmosCheckpointError(
            f"{where} maps the encoder to {q.shape[0]} latent channels: a continuous (CV) tokenizer or another "
            f"quantiser, not a discrete {name} with FSQ {list(model.cfg.levels)} ({len(model.cfg.levels)} channels)")
    if any(k.startswith("encoder.") and v.ndim == 4 and k.endswith("weight") and "conv" in k
           for k, v in state.items()):
        raise CosmosCheckpointError(f"{where} has 2-D convolutions: an image tokenizer (CI/DI), not a video "
                                    f"tokenizer {name}")
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(k for k in set(expected) & set(state) if tuple(state[k].shape) != expected[k])
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {missing[:3]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {unexpected[:3]})")
        if wrong:
            k = wrong[0]
            parts.append(f"{len(wrong)} of another shape (e.g. {k}: {tuple(state[k].shape)}, expected {expected[k]})")
        raise CosmosCheckpointError(f"{where} is not a Cosmos-Tokenize1 {name} state dict with the released "
                                    f"architecture: " + "; ".join(parts))


def load_cosmos_tokenizer(folder: str | Path, variant: str | None = None,
                          dtype: torch.dtype = torch.float32) -> CosmosVideoTokenizer:
    """Load a released Cosmos-Tokenize1 discrete video tokenizer from a local folder.

    Expected layout (``folder`` named after the variant, e.g. ``Cosmos-Tokenize1-DV4x8x8-360p``)::

        model.pt          # the autoencoder's state dict (torch.save(module.state_dict(), ...)), or
        encoder.pt        # encoder.jit's state dict   } both, as converted from NVIDIA's
        decoder.pt        # decoder.jit's state dict   } encoder.jit / decoder.jit
        config.json       # optional: {"temporal_compression": 4, "spatial_compression": 8, ...}

    ``config.json`` may also override the architecture's widths (``channels``, ``channels_mult``,
    ``num_res_blocks``, ...) for tokenizers trained with the Cosmos code at other sizes.

    Raises:
        CosmosCheckpointError: missing folder or files, a TorchScript archive, an unreadable
            file, an ambiguous or conflicting variant, or weights of another architecture.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise CosmosCheckpointError(f"{folder}: no such folder (expected a Cosmos-Tokenize1 DV tokenizer folder "
                                    f"holding model.pt)")
    extra: dict = {}
    if (folder / "config.json").is_file():
        try:
            extra = json.loads((folder / "config.json").read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise CosmosCheckpointError(f"{folder / 'config.json'} is not valid JSON: {e}") from None
        if not isinstance(extra, dict):
            raise CosmosCheckpointError(f"{folder / 'config.json'} must hold a JSON object")
    name = _variant_from(folder, variant, extra)
    known = {f.name for f in fields(CosmosTokenizerConfig)} - {"temporal_compression", "spatial_compression"}
    overrides = {k: tuple(v) if isinstance(v, list) else v for k, v in extra.items() if k in known}
    try:
        cfg = CosmosTokenizerConfig.variant(name, **overrides)
    except (TypeError, ValueError) as e:
        raise CosmosCheckpointError(f"{folder / 'config.json'}: {e}") from None

    whole = [folder / f for f in STATE_DICT_FILES if (folder / f).is_file()]
    halves = [folder / f for f in ("encoder.pt", "decoder.pt") if (folder / f).is_file()]
    if whole:
        files = whole[:1]
    elif len(halves) == 2:
        files = halves
    else:
        jit = sorted(p.name for p in folder.glob("*.jit"))
        hint = (f" It holds {jit}: TorchScript archives, which wfm_sim never loads (loading runs code stored in "
                f"them). Convert once, in an environment you trust: {_CONVERT}") if jit else ""
        raise CosmosCheckpointError(f"{folder} holds no model.pt (or encoder.pt + decoder.pt).{hint}")
    state: dict[str, torch.Tensor] = {}
    for f in files:
        state.update(read_state_dict(f))
    with torch.device("meta"):
        skeleton = CosmosVideoTokenizer(cfg)
    _check_keys(state, skeleton, ", ".join(str(f) for f in files))
    model = CosmosVideoTokenizer(cfg)
    model.load_state_dict(state, strict=True)
    return model.to(dtype).eval().requires_grad_(False)


def save_cosmos_tokenizer(model: CosmosVideoTokenizer, folder: str | Path) -> Path:
    """Write ``model.pt`` + ``config.json`` in the layout :func:`load_cosmos_tokenizer` reads."""
    import io

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    atomic_write_bytes(folder / "model.pt", buf.getvalue())
    atomic_write_json(folder / "config.json", asdict(model.cfg))
    return folder


def reconstruct(model: CosmosVideoTokenizer, frames, max_frames: int | None = None) -> dict:
    """Tokenize RGB uint8 frames ``(t, H, W, 3)`` and decode them back.

    Uses the longest prefix of ``1 + k*m`` frames (at most ``max_frames``), with height and width
    cut down to multiples of the spatial compression (centre crop). Returns the tokens
    ``(1+m, h, w)``, the input and reconstructed frames as uint8 and the mean per-frame PSNR
    (the same measure as ``wfm-sim evaluate``).
    """
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"frames must be (t, H, W, 3) uint8 RGB, got {frames.shape} {frames.dtype}")
    k, s = model.cfg.temporal_compression, model.cfg.spatial_compression
    t = len(frames) if max_frames is None else min(len(frames), max_frames)
    t = 1 + (t - 1) // k * k
    h, w = frames.shape[1] // s * s, frames.shape[2] // s * s
    if h == 0 or w == 0:
        raise ValueError(f"frames of {frames.shape[1]}x{frames.shape[2]} are smaller than one {s}x{s} token")
    top, left = (frames.shape[1] - h) // 2, (frames.shape[2] - w) // 2
    clip = torch.from_numpy(np.ascontiguousarray(frames[:t, top : top + h, left : left + w]))
    with torch.no_grad():
        tokens, _, _ = model.encode(to_video(clip[None, :, None]).to(model.quant_conv.conv3d.weight.dtype))
        out = model.decode(tokens).float()
    recon = ((out[0].permute(1, 2, 3, 0) + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)
    return {"tokens": tokens[0].numpy(), "input": clip.numpy(), "reconstruction": recon.numpy(),
            "psnr": psnr(recon, clip).mean().item()}

__all__ = ["STATE_DICT_FILES", "CosmosCheckpointError", "load_cosmos_tokenizer", "read_state_dict", "reconstruct",
           "save_cosmos_tokenizer"]
