"""``WorldModel``: tokenizer + causal backbone + diffusion decoder behind one config.

Frames at the boundary are uint8 ``(b, t, v, H, W, 3)`` (channels last, as simulators and
zarr store them); inside, the tokenizer sees ``(b*v, 3, t, H, W)`` floats in [-1, 1].

Dimension legend: :mod:`wfm_sim.dims`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import torch
from einops import rearrange
from torch import nn

from wfm_sim import checkpoint as ckpt
from wfm_sim.device import autocast, autocast_dtype, resolve_device
from wfm_sim.models.backbone import Backbone, BackboneConfig
from wfm_sim.models.cosmos_tokenizer import CosmosTokenizerConfig, CosmosVideoTokenizer
from wfm_sim.models.diffusion import DecoderConfig, DiffusionDecoder
from wfm_sim.models.geometry import Geometry, Tokenizer
from wfm_sim.models.rng import RowNoise
from wfm_sim.models.rollout import Rollout
from wfm_sim.models.sampling import SamplingConfig
from wfm_sim.models.tokenizer import TokenizerConfig, VideoTokenizer

FORMAT = "wfm_sim.WorldModel"
FORMAT_VERSION = 2
"""2: the backbone and decoder sections no longer repeat the geometry (version 1 files load)."""
_DERIVED = {"backbone": {"vocab_size": "vocab_size", "grid": "grid", "num_views": "views", "action_dim": "action_dim",
                         "num_actions": "num_actions", "action_group": "frames_per_token"},
            "decoder": {"vocab_size": "vocab_size", "grid": "grid", "image_size": "image_size", "frames": "frames_per_token"}}
"""Keys of format-1 config sections that the geometry now derives: key -> Geometry field."""
PRETRAINED_DIR = Path(__file__).resolve().parent.parent / "pretrained"


def to_video(frames: torch.Tensor) -> torch.Tensor:
    """``(b, t, v, H, W, 3)`` uint8 -> ``(b*v, 3, t, H, W)`` float in [-1, 1], the tokenizer's input."""
    return rearrange(frames, "b t v h w c -> (b v) c t h w").float() / 127.5 - 1


@dataclass(frozen=True)
class ActionSpec:
    """The action space the model was trained with."""

    kind: str = "box"
    """'box' (continuous) or 'discrete'."""
    dim: int = 3
    """Features per action (box)."""
    low: tuple[float, ...] = (-1.0, 0.0, 0.0)
    high: tuple[float, ...] = (1.0, 1.0, 1.0)
    n: int = 0
    """Number of choices (discrete)."""

    def __post_init__(self):
        if self.kind not in ("box", "discrete"):
            raise ValueError(f"ActionSpec.kind must be 'box' or 'discrete', got {self.kind!r}")
        if self.kind == "box" and not (len(self.low) == len(self.high) == self.dim):
            raise ValueError(f"box action needs low/high of length dim={self.dim}, got {self.low}, {self.high}")
        if self.kind == "discrete" and self.n < 2:
            raise ValueError(f"discrete action needs n >= 2, got {self.n}")


@dataclass(frozen=True)
class WorldModelConfig:
    """Everything needed to rebuild a world model, saved as config.json."""

    tokenizer: TokenizerConfig | CosmosTokenizerConfig = field(default_factory=TokenizerConfig)
    """wfm_sim's own tokenizer, or NVIDIA's Cosmos tokenizer (released weights load into it)."""
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    decoder: DecoderConfig | None = field(default_factory=DecoderConfig)
    cameras: tuple[str, ...] = ("CAM_FRONT",)
    """Camera names, one per view, in the backbone's view order."""
    action: ActionSpec = field(default_factory=ActionSpec)
    fps: float = 10.0
    context_frames: int = 2
    """Latent frames of real context an environment reset starts from by default: with a
    tokenizer grouping k frames that is ``1 + k*(context_frames-1)`` video frames
    (:attr:`context_video_frames`)."""
    name: str = ""
    source_env: str = ""
    """Simulator the model was trained on (e.g. 'CarRacing-v3')."""

    def __post_init__(self):
        if isinstance(self.fps, bool) or not isinstance(self.fps, (int, float)) or not math.isfinite(self.fps) \
                or self.fps <= 0:
            raise ValueError(f"WorldModelConfig.fps must be a positive finite number of frames per second, got {self.fps!r}")
        if not 1 <= self.context_frames < self.backbone.max_frames:
            raise ValueError(f"inconsistent WorldModelConfig: context_frames must lie in "
                             f"[1, {self.backbone.max_frames - 1}], got {self.context_frames}")

    @property
    def geometry(self) -> Geometry:
        """The dimensions every part shares, derived from the tokenizer, the cameras and the action space."""
        return Geometry.of(self.tokenizer, self.cameras, self.action)

    @property
    def frames_per_step(self) -> int:
        """Video frames (and actions) per latent frame: the tokenizer's temporal compression k."""
        return self.tokenizer.temporal_downsample

    @property
    def context_video_frames(self) -> int:
        """Video frames of the default context: ``1 + k*(context_frames-1)``."""
        return 1 + self.frames_per_step * (self.context_frames - 1)

    @property
    def max_context_latent_frames(self) -> int:
        """The longest context a reset takes, in latent frames (one latent frame is left to predict)."""
        return self.backbone.max_frames - 1

    def context_latent_frames(self, video_frames: int) -> int:
        """Latent frames of a context of ``video_frames`` frames; raises unless it is ``1 + k*m``
        with ``1 + m`` in ``[1, max_context_latent_frames]``."""
        k, most = self.frames_per_step, self.max_context_latent_frames
        if video_frames < 1 or (video_frames - 1) % k or 1 + (video_frames - 1) // k > most:
            allowed = ", ".join(str(1 + k * m) for m in range(most))
            raise ValueError(f"context must hold {allowed} frames (1 + {k}*m for this model's {k}-frame latent "
                             f"steps, at most {most} latent frames), got {video_frames}" if k > 1 else
                             f"context must hold 1..{most} frames, got {video_frames}")
        return 1 + (video_frames - 1) // k


class WorldModel(nn.Module):
    """The three-part world model. See the README for a diagram."""

    def __init__(self, cfg: WorldModelConfig):
        super().__init__()
        if torch.get_default_device().type != "meta":
            check_fits_in_memory(cfg)
        self.cfg = cfg
        self.tokenizer: Tokenizer = build_tokenizer(cfg.tokenizer)
        geo = cfg.geometry
        self.backbone = Backbone(cfg.backbone, geo)
        self.decoder = DiffusionDecoder(cfg.decoder, geo) if cfg.decoder is not None else None
        self.amp_dtype: torch.dtype | None = None
        self.trained: tuple[str, ...] | None = None
        """Components trained so far (config.json ``trained``); None for models saved without the record."""

    # ------------------------------------------------------------ device
    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def setup(self, device: str | torch.device | None = "auto", precision: str = "auto") -> "WorldModel":
        """Move to ``device`` and choose the autocast dtype once (bf16 on CUDA / bf16-capable CPUs)."""
        dev = resolve_device(device)
        self.to(dev)
        self.amp_dtype = autocast_dtype(dev, precision)
        return self

    @property
    def precision(self) -> str:
        """The precision this model runs in ('bf16' or 'fp32'): what a replica must be set up with
        to compute the same numbers."""
        return "bf16" if self.amp_dtype == torch.bfloat16 else "fp32"

    def autocast(self):
        return autocast(self.device, self.amp_dtype)

    # ------------------------------------------------------- frames <-> tokens
    def _check_frames(self, frames: torch.Tensor) -> None:
        t, v = self.cfg.tokenizer, len(self.cfg.cameras)
        want = f"(b, t, {v}, {t.image_size}, {t.image_size}, 3) uint8"
        if frames.dtype != torch.uint8:
            raise TypeError(f"frames must be {want}, got dtype {frames.dtype}")
        if frames.ndim != 6 or frames.shape[2:] != (v, t.image_size, t.image_size, 3):
            raise ValueError(f"frames must be {want}, got shape {tuple(frames.shape)}")

    @torch.no_grad()
    def encode(self, frames: torch.Tensor) -> torch.Tensor:
        """``(b, t, v, H, W, 3)`` uint8 -> ``(b, l, v, g, g)`` int64 token ids."""
        self._check_frames(frames)
        b = frames.shape[0]
        x = to_video(frames.to(self.device))
        with self.autocast():
            tokens = self.tokenizer.encode(x)[0]
        return rearrange(tokens, "(b v) t h w -> b t v h w", b=b)

    def check_tokens(self, tokens: torch.Tensor) -> None:
        g, vocab = self.cfg.tokenizer.grid, self.cfg.tokenizer.vocab_size
        v = len(self.cfg.cameras)
        if tokens.dtype not in (torch.int32, torch.int64):
            raise TypeError(f"tokens must be int64, got {tokens.dtype}")
        if tokens.shape[-3:] != (v, g, g):
            raise ValueError(f"tokens must end in ({v}, {g}, {g}) (views, grid, grid), got {tuple(tokens.shape)}")
        if tokens.numel() and (int(tokens.min()) < 0 or int(tokens.max()) >= vocab):
            raise ValueError(f"token ids must lie in [0, {vocab}), got [{int(tokens.min())}, {int(tokens.max())}]")

    @torch.no_grad()
    def decode(self, tokens: torch.Tensor, decoder: str = "token", steps: int | None = None,
               prev: torch.Tensor | None = None, noise: RowNoise | None = None) -> torch.Tensor:
        """Decode the LAST latent frame of a token history to pixels, after checking the ids.

        Args:
            tokens: ``(b, l, v, h, w)`` history; tokenizers with a temporal receptive field use it.
            decoder: "token" (the tokenizer's decoder, fast) or "diffusion" (EDM decoder).
            steps: diffusion sampler steps (default: the decoder config's).
            prev: ``(b, v, H, W, 3)`` uint8 previous frame, for a decoder conditioned on it.
            noise: per-row counter-based keys for the diffusion noise (:class:`RowNoise`);
                None draws from torch's global generator.

        Returns:
            ``(b, f, v, H, W, 3)`` uint8 frames of that latent frame (f = 1 for frame 0 or f=1 models).
        """
        self.check_tokens(tokens)
        return self.decode_ids(tokens, decoder, steps, prev, noise)

    @torch.no_grad()
    def decode_ids(self, tokens: torch.Tensor, decoder: str = "token", steps: int | None = None,
                   prev: torch.Tensor | None = None, noise: RowNoise | None = None) -> torch.Tensor:
        """:meth:`decode` without checking the ids (they come from this model's own sampler):
        nothing here waits on the device."""
        if decoder not in ("token", "diffusion"):
            raise ValueError(f"decoder must be 'token' or 'diffusion', got {decoder!r}")
        b, tl, v = tokens.shape[:3]
        if self.cfg.tokenizer.per_frame:
            tokens = tokens[:, -1:]  # per-frame tokenizer: the last frame alone decides
        flat = rearrange(tokens.to(self.device), "b l v h w -> (b v) l h w")
        with self.autocast():
            video = self.tokenizer.decode(flat, check=False).float()  # ((b v), 3, t, H, W)
        f = 1 if flat.shape[1] == 1 else self.cfg.tokenizer.temporal_downsample
        video = video[:, :, -f:]
        if decoder == "diffusion":
            video = self._diffuse(flat[:, -1], video, prev, steps, noise, v)
        frames = ((video.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
        return rearrange(frames, "(b v) c t H W -> b t v H W c", b=b)

    def _diffuse(self, last_tokens, token_video, prev, steps, noise, v):
        """EDM decode of the last latent frame's ``t`` frames jointly, from the previous frame."""
        if self.decoder is None:
            raise ValueError("this model has no diffusion decoder; use decoder='token'")
        prev_f = None
        if self.decoder.cfg.cond_prev_frame:
            if prev is None:
                raise ValueError("this diffusion decoder needs prev: the (b, v, H, W, 3) uint8 previous frame")
            prev_f = to_video(prev.to(self.device)[:, None])[:, :, 0]
        keys = None if noise is None else noise.per_view(v)
        with self.autocast():
            out = self.decoder.sample(last_tokens, token_video, prev_f, steps, keys, frames=token_video.shape[2])
        return out.float()

    # ------------------------------------------------------------ imagination
    def imagine(self, batch: int, mode: str = "sequential", sampling: SamplingConfig = SamplingConfig(),
                parallel_steps: int = 8, decoder: str = "token", decode: bool = False,
                prompt_tokens: int = 0) -> Rollout:
        """A batched imagined rollout of this model (token-only unless ``decode``). See :class:`Rollout`."""
        return Rollout(self, batch, mode, sampling, parallel_steps, decoder, decode=decode, prompt_tokens=prompt_tokens)

    @property
    def action_shape(self) -> tuple[int, ...]:
        """One env step's action as the backbone takes it: ``(f,)`` discrete or ``(f, a)`` box."""
        k = self.cfg.frames_per_step
        return (k,) if self.cfg.action.kind == "discrete" else (k, self.cfg.action.dim)

    def check_action(self, action: torch.Tensor, lead: tuple[int, ...]) -> torch.Tensor:
        """Validate and shape actions to ``lead + (k, a)`` (box) or ``lead + (k,)`` (discrete)."""
        spec, k = self.cfg.action, self.cfg.frames_per_step
        if spec.kind == "discrete":
            want = lead + (k,)
            a = action.reshape(want) if action.numel() == math.prod(want) else None
            if a is None or a.is_floating_point():
                raise ValueError(f"discrete actions must be integers of shape {want}, got {tuple(action.shape)} {action.dtype}")
            if bool(((a < 0) | (a >= spec.n)).any()):
                raise ValueError(f"discrete actions must lie in [0, {spec.n}), got {a.flatten().tolist()[:8]}")
            return a.long()
        want = lead + (k, spec.dim)
        if action.numel() != math.prod(want):
            raise ValueError(f"actions must have shape {want} (action dim {spec.dim}), got {tuple(action.shape)}")
        a = action.reshape(want).float()
        if not bool(torch.isfinite(a).all()):
            raise ValueError("actions contain NaN or inf")
        return a

    # -------------------------------------------------------------- files
    def save_pretrained(self, path: str | Path, storage: str = "fp32") -> Path:
        """Write ``config.json`` and ``model.safetensors`` (atomically) to folder ``path``.

        ``storage``: 'fp32' (exact), 'bf16', or 'int8' (weight-only, per-channel scales; about a
        quarter of fp32, for shipping small models).
        """
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        state = ckpt.pack_state(self.state_dict(), storage)
        ckpt.save_tensors(path / "model.safetensors", state, {"format": FORMAT, "storage": storage})
        meta = {"format": FORMAT, "format_version": FORMAT_VERSION, "config": ckpt.to_dict(self.cfg)}
        if self.trained is not None:
            meta["trained"] = sorted(self.trained)
        ckpt.atomic_write_json(path / "config.json", meta)
        return path

    @classmethod
    def read_config(cls, name_or_path: str | Path) -> WorldModelConfig:
        """The config saved with a shipped model or in a model folder."""
        path = resolve_pretrained(name_or_path)
        meta = ckpt.read_json(path / "config.json", FORMAT)
        if meta.get("format_version", 0) > FORMAT_VERSION:
            raise ckpt.CheckpointError(f"{path} was written by a newer wfm_sim (format_version {meta['format_version']})")
        raw = meta.get("config")
        legacy = _pop_derived(raw) if isinstance(raw, dict) else {}
        cfg = ckpt.from_dict(WorldModelConfig, raw, "config")
        _check_derived(cfg, legacy, path)
        return cfg

    @classmethod
    def from_pretrained(cls, name_or_path: str | Path, device: str | torch.device | None = "auto",
                        precision: str = "auto", config: WorldModelConfig | None = None) -> "WorldModel":
        """Load a shipped model by short name (``"driving"``, ``"manipulation"``) or a folder.

        ``config`` builds the model with another config than the saved one (a new name, decoder
        steps or reward scale); its weights must have the saved shapes.
        """
        path = resolve_pretrained(name_or_path)
        model = cls(config if config is not None else cls.read_config(path))
        state = ckpt.unpack_state(ckpt.load_tensors(path / "model.safetensors"))
        load_state_strict(model, state, path / "model.safetensors")
        trained = ckpt.read_json(path / "config.json", FORMAT).get("trained")
        model.trained = None if trained is None else tuple(trained)
        return model.eval().setup(device, precision)


def _pop_derived(raw: dict) -> dict:
    """Remove (and return) a format-1 config's copies of the geometry."""
    out = {}
    for section, keys in _DERIVED.items():
        part = raw.get(section)
        if isinstance(part, dict):
            out.update({(section, k): part.pop(k) for k in list(part) if k in keys})
    return out


def _check_derived(cfg: WorldModelConfig, legacy: dict, where: Path) -> None:
    geo = cfg.geometry
    for (section, key), value in legacy.items():
        if section == "decoder" and cfg.decoder is None or (key == "action_dim" and geo.num_actions):
            continue
        want = getattr(geo, _DERIVED[section][key])
        if value != want:
            raise ckpt.CheckpointError(f"{where}/config.json: {section}.{key} = {value} disagrees with the model's "
                                       f"geometry ({_DERIVED[section][key]} = {want}); the file is inconsistent")


def build_tokenizer(cfg: TokenizerConfig | CosmosTokenizerConfig) -> Tokenizer:
    """The tokenizer a config names (its ``kind``)."""
    if cfg.kind == "cosmos":
        return CosmosVideoTokenizer(cfg)
    return VideoTokenizer(cfg)


def estimate_size(cfg: WorldModelConfig) -> dict[str, int]:
    """Parameters per component, counted on the meta device (nothing is allocated)."""
    with torch.device("meta"):
        geo = cfg.geometry
        parts = {"tokenizer": build_tokenizer(cfg.tokenizer), "backbone": Backbone(cfg.backbone, geo)}
        if cfg.decoder is not None:
            parts["decoder"] = DiffusionDecoder(cfg.decoder, geo)
    out = {k: sum(p.numel() for p in m.parameters()) for k, m in parts.items()}
    out["total"] = sum(out.values())
    return out


def _available_memory() -> int | None:
    try:
        for line in open("/proc/meminfo"):
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def check_fits_in_memory(cfg: WorldModelConfig) -> None:
    """Refuse, before allocating, a model whose fp32 weights would not fit in this machine's free memory."""
    avail = _available_memory()
    if avail is None:
        return
    size = estimate_size(cfg)
    need = size["total"] * 4
    if need > 0.8 * avail:
        raise ValueError(f"this config has {size['total'] / 1e6:,.0f}M parameters ({need / 2**30:.1f} GiB in fp32) but "
                         f"this machine has {avail / 2**30:.1f} GiB free: build it on the meta device "
                         "(`with torch.device('meta'):`) to inspect it, use a smaller preset, or a bigger machine")


def load_state_strict(module: nn.Module, state: dict[str, torch.Tensor], where: Path) -> None:
    """Load weights, raising a clear error for missing / unexpected keys or wrong shapes."""
    own = module.state_dict()
    missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    if missing or unexpected:
        raise ckpt.CheckpointError(
            f"{where} does not match this model: missing {missing[:5]}{'...' if len(missing) > 5 else ''}, "
            f"unexpected {unexpected[:5]}{'...' if len(unexpected) > 5 else ''}"
        )
    for k, v in state.items():
        if v.shape != own[k].shape:
            raise ckpt.CheckpointError(f"{where}: tensor {k} has shape {tuple(v.shape)}, expected {tuple(own[k].shape)}")
        if v.is_floating_point() and not bool(torch.isfinite(v).all()):
            raise ckpt.CheckpointError(f"{where}: tensor {k} holds NaN or inf values; this checkpoint is corrupt "
                                       "(a diverged training run?): load an earlier one")
    module.load_state_dict({k: v.to(own[k].dtype) for k, v in state.items()})


def shipped_models() -> list[str]:
    """Names of the models shipped inside the package."""
    if not PRETRAINED_DIR.is_dir():
        return []
    return sorted(p.name for p in PRETRAINED_DIR.iterdir() if (p / "config.json").is_file())


def resolve_pretrained(name_or_path: str | Path) -> Path:
    p = Path(name_or_path)
    if p.is_dir():
        return p
    if isinstance(name_or_path, str) and (PRETRAINED_DIR / name_or_path / "config.json").is_file():
        return PRETRAINED_DIR / name_or_path
    raise FileNotFoundError(
        f"no model folder or shipped model named {str(name_or_path)!r}; shipped: {shipped_models()}, "
        "or pass a folder holding config.json + model.safetensors"
    )
