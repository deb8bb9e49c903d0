"""NVIDIA's released Cosmos-Tokenize1 discrete video tokenizers (DV4x8x8, DV8x8x8, DV8x16x16).

A re-implementation of their architecture whose parameter names and shapes are those of the
released PyTorch state dicts, so the weights load with ``load_state_dict(strict=True)``:

- a two-level 3-D Haar wavelet patcher (patch 4: 4x in time, height and width; frame 0 is
  repeated 4 times first so that it is encoded alone);
- factorised causal convolutions (1x3x3 spatial, then 3x1x1 temporal padded on the left by
  repeating the first frame), per-frame GroupNorm(1), SiLU residual blocks;
- hybrid down/up-sampling (strided conv + average pool, or nearest repeat + conv), spatial
  attention per frame and causal temporal attention per position in the middle block;
- a 1x1x1 conv to 6 channels and FSQ with levels [8, 8, 8, 5, 5, 5] (64,000 codes).

A clip of ``1 + k*m`` frames of ``H x W`` pixels gives ``1 + m`` latent frames of
``H/s x W/s`` tokens (``k`` temporal, ``s`` spatial compression). Nothing a frame encodes to
depends on a later frame.

Released weights load with :func:`wfm_sim.models.cosmos_weights.load_cosmos_tokenizer`.

Dimension legend: :mod:`wfm_sim.dims`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from wfm_sim.models.fsq import FSQ
from wfm_sim.models.tokenizer import FrameNorm, clip_latent_frames

VARIANTS: dict[str, tuple[int, int]] = {"DV4x8x8": (4, 8), "DV8x8x8": (8, 8), "DV8x16x16": (8, 16)}
"""Released discrete video tokenizers: name -> (temporal, spatial) compression."""


@dataclass(frozen=True)
class CosmosTokenizerConfig:
    """The Cosmos ``discrete_video`` config (``cosmos_tokenizer/networks/configs.py``)."""

    temporal_compression: int = 8
    spatial_compression: int = 16
    channels: int = 128
    channels_mult: tuple[int, ...] = (2, 4, 4)
    num_res_blocks: int = 2
    attn_resolutions: tuple[int, ...] = (32,)
    resolution: int = 1024
    patch_size: int = 4
    z_channels: int = 16
    levels: tuple[int, ...] = (8, 8, 8, 5, 5, 5)
    legacy_mode: bool = False
    kind: str = "cosmos"
    """Which tokenizer this config builds (a world model's config.json names it)."""
    image_size: int = 256
    """Square frame side a world model feeds it (any multiple of the spatial compression)."""

    def __post_init__(self):
        if self.kind != "cosmos":
            raise ValueError(f"CosmosTokenizerConfig.kind must be 'cosmos', got {self.kind!r}")
        if self.image_size % self.spatial_compression:
            raise ValueError(f"image_size {self.image_size} must be a multiple of the spatial compression "
                             f"{self.spatial_compression}")
        if self.patch_size not in (1, 2, 4) or self.temporal_compression < self.patch_size:
            raise ValueError(f"patch_size must be 1, 2 or 4 and <= temporal_compression, got {self.patch_size}")
        for name, n in (("temporal", self.num_temporal_downs), ("spatial", self.num_spatial_downs)):
            if not 0 <= n <= len(self.channels_mult):
                raise ValueError(f"{name} compression needs {n} down-sampling levels, have {len(self.channels_mult)}")

    @classmethod
    def variant(cls, name: str, **overrides) -> CosmosTokenizerConfig:
        if name not in VARIANTS:
            raise ValueError(f"unknown Cosmos tokenizer variant {name!r}; expected one of {list(VARIANTS)}")
        k, s = VARIANTS[name]
        return cls(temporal_compression=k, spatial_compression=s, **overrides)

    @property
    def name(self) -> str:
        s = self.spatial_compression
        return f"DV{self.temporal_compression}x{s}x{s}"

    @property
    def num_spatial_downs(self) -> int:
        return int(math.log2(self.spatial_compression)) - int(math.log2(self.patch_size))

    @property
    def num_temporal_downs(self) -> int:
        return int(math.log2(self.temporal_compression)) - int(math.log2(self.patch_size))

    # The names wfm_sim's own TokenizerConfig uses, so callers can treat both alike.
    @property
    def temporal_downsample(self) -> int:
        return self.temporal_compression

    @property
    def spatial_downsample(self) -> int:
        return self.spatial_compression

    @property
    def vocab_size(self) -> int:
        return math.prod(self.levels)

    @property
    def grid(self) -> int:
        """Tokens per side of one latent frame at ``image_size``."""
        return self.image_size // self.spatial_compression

    @property
    def per_frame(self) -> bool:
        """Cosmos tokenizers always see earlier frames (causal 3x1x1 temporal convolutions)."""
        return False

    def latent_frames(self, frames: int) -> int:
        """Latent frames for a clip of ``frames`` frames (must be 1 + k*m)."""
        return clip_latent_frames(frames, self.temporal_compression, f"Cosmos {self.name}")


# --------------------------------------------------------------------------- Haar patcher

_INV_SQRT2 = 1 / math.sqrt(2)
_BAND_SCALE = 2 * math.sqrt(2)  # Cosmos rescales each 3-D level by 1/(2*sqrt 2): bands are means


def haar3d(x: torch.Tensor) -> torch.Tensor:
    """One 3-D Haar level: ``(b, c, t, h, w) -> (b, 8c, t/2, h/2, w/2)``.

    Bands are ordered (time, height, width) low/high with time the most significant, as
    Cosmos' ``Patcher3D`` orders them: ``lll, llh, lhl, lhh, hll, hlh, hhl, hhh``.
    """
    bands = [x]
    for dim in (2, 3, 4):
        split = []
        for y in bands:
            even, odd = y.unflatten(dim, (-1, 2)).unbind(dim + 1)
            split += [(even + odd) * _INV_SQRT2, (even - odd) * _INV_SQRT2]
        bands = split
    return torch.cat(bands, dim=1) / _BAND_SCALE


def inverse_haar3d(x: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`haar3d`: ``(b, 8c, t, h, w) -> (b, c, 2t, 2h, 2w)``."""
    bands = list((x * _BAND_SCALE).chunk(8, dim=1))
    for dim in (4, 3, 2):
        merged = []
        for low, high in zip(bands[0::2], bands[1::2]):
            even, odd = (low + high) * _INV_SQRT2, (low - high) * _INV_SQRT2
            merged.append(torch.stack((even, odd), dim=dim + 1).flatten(dim, dim + 1))
        bands = merged
    return bands[0]


def patch_video(x: torch.Tensor, patch_size: int) -> torch.Tensor:
    """Repeat frame 0 ``patch_size`` times (so it is coded alone), then log2(patch) Haar levels."""
    x = torch.cat((x[:, :, :1].repeat_interleave(patch_size, dim=2), x[:, :, 1:]), dim=2)
    for _ in range(int(math.log2(patch_size))):
        x = haar3d(x)
    return x


def unpatch_video(x: torch.Tensor, patch_size: int) -> torch.Tensor:
    for _ in range(int(math.log2(patch_size))):
        x = inverse_haar3d(x)
    return x[:, :, patch_size - 1 :]


# --------------------------------------------------------------------------- layers


def _first_frame_pad(x: torch.Tensor, frames: int) -> torch.Tensor:
    return torch.cat((x[:, :, :1].expand(-1, -1, frames, -1, -1), x), dim=2) if frames > 0 else x


class CausalConv3d(nn.Module):
    """Conv3d padded on the left in time by repeating frame 0, zero-padded in space."""

    def __init__(self, cin: int, cout: int, kernel: tuple[int, int, int] | int, stride: int = 1,
                 time_stride: int = 1, padding: int = 0):
        super().__init__()
        kt, kh, kw = (kernel,) * 3 if isinstance(kernel, int) else kernel
        self.time_pad = (kt - 1) + (1 - time_stride)
        self.padding = padding
        self.conv3d = nn.Conv3d(cin, cout, (kt, kh, kw), stride=(time_stride, stride, stride))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = _first_frame_pad(x, self.time_pad)
        p = self.padding
        return self.conv3d(F.pad(x, (p, p, p, p, 0, 0)) if p else x)


def _factorised(cin: int, cout: int) -> nn.Sequential:
    """1x3x3 spatial conv then 3x1x1 causal temporal conv (module names 0 and 1, as released)."""
    return nn.Sequential(CausalConv3d(cin, cout, (1, 3, 3), padding=1), CausalConv3d(cout, cout, (3, 1, 1)))


class ResBlock(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.norm1, self.conv1 = FrameNorm(cin), _factorised(cin, cout)
        self.norm2, self.conv2 = FrameNorm(cout), _factorised(cout, cout)
        self.nin_shortcut = CausalConv3d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        return self.nin_shortcut(x) + h


class _QKV(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.norm = FrameNorm(channels)
        self.q, self.k, self.v = (CausalConv3d(channels, channels, 1) for _ in range(3))
        self.proj_out = CausalConv3d(channels, channels, 1)

    def qkv(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        h = self.norm(x)
        return self.q(h), self.k(h), self.v(h)


class SpatialAttention(_QKV):
    """Single-head attention over each frame's grid."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, t, h, w = x.shape
        q, k, v = (rearrange(y, "b c t h w -> (b t) (h w) c") for y in self.qkv(x))
        o = F.scaled_dot_product_attention(q, k, v)
        return x + self.proj_out(rearrange(o, "(b t) (h w) c -> b c t h w", b=b, h=h))


class TemporalAttention(_QKV):
    """Single-head causal attention over time at each grid position."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, t, h, w = x.shape
        q, k, v = (rearrange(y, "b c t h w -> (b h w) t c") for y in self.qkv(x))
        o = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return x + self.proj_out(rearrange(o, "(b h w) t c -> b c t h w", b=b, h=h, w=w))


def _attention(channels: int) -> nn.Sequential:
    return nn.Sequential(SpatialAttention(channels), TemporalAttention(channels))


class Downsample(nn.Module):
    """Strided conv plus average pool, in space (2x) and/or causally in time (2x), then 1x1x1."""

    def __init__(self, channels: int, spatial: bool, temporal: bool):
        super().__init__()
        self.conv1 = CausalConv3d(channels, channels, (1, 3, 3), stride=2)
        self.conv2 = CausalConv3d(channels, channels, (3, 1, 1), time_stride=2)
        self.conv3 = CausalConv3d(channels, channels, 1)
        self.spatial, self.temporal = spatial, temporal

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.spatial or self.temporal):
            return x
        if self.spatial:
            x = F.pad(x, (0, 1, 0, 1, 0, 0))
            x = self.conv1(x) + F.avg_pool3d(x, (1, 2, 2), (1, 2, 2))
        if self.temporal:
            x = _first_frame_pad(x, 1)
            x = self.conv2(x) + F.avg_pool3d(x, (2, 1, 1), (2, 1, 1))
        return self.conv3(x)


class Upsample(nn.Module):
    """Inverse of :class:`Downsample`: repeat (time: drop the first copy) then a residual conv."""

    def __init__(self, channels: int, spatial: bool, temporal: bool):
        super().__init__()
        self.conv1 = CausalConv3d(channels, channels, (3, 1, 1))
        self.conv2 = CausalConv3d(channels, channels, (1, 3, 3), padding=1)
        self.conv3 = CausalConv3d(channels, channels, 1)
        self.spatial, self.temporal = spatial, temporal

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.spatial or self.temporal):
            return x
        if self.temporal:
            if x.shape[2] > 1:  # a single (image) latent frame stays one frame
                x = x.repeat_interleave(2, dim=2)[:, :, 1:]
            x = self.conv1(x) + x
        if self.spatial:
            x = x.repeat_interleave(2, dim=3).repeat_interleave(2, dim=4)
            x = self.conv2(x) + x
        return self.conv3(x)


class _Middle(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.block_1, self.attn_1, self.block_2 = ResBlock(channels, channels), _attention(channels), ResBlock(
            channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block_2(self.attn_1(self.block_1(x)))


class _Level(nn.Module):
    def __init__(self):
        super().__init__()
        self.block, self.attn = nn.ModuleList(), nn.ModuleList()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, block in enumerate(self.block):
            x = block(x)
            if len(self.attn):
                x = self.attn[i](x)
        if hasattr(self, "downsample"):
            x = self.downsample(x)
        if hasattr(self, "upsample"):
            x = self.upsample(x)
        return x


class Encoder(nn.Module):
    def __init__(self, cfg: CosmosTokenizerConfig):
        super().__init__()
        self.patch_size = cfg.patch_size
        ch, mult, n = cfg.channels, cfg.channels_mult, len(cfg.channels_mult)
        self.conv_in = _factorised(3 * cfg.patch_size**3, ch)
        res = cfg.resolution // cfg.patch_size
        cin = ch
        self.down = nn.ModuleList()
        for i in range(n):
            level = _Level()
            for _ in range(cfg.num_res_blocks):
                level.block.append(ResBlock(cin, ch * mult[i]))
                cin = ch * mult[i]
                if res in cfg.attn_resolutions:
                    level.attn.append(_attention(cin))
            if i != n - 1:
                level.downsample = Downsample(cin, i < cfg.num_spatial_downs, i < cfg.num_temporal_downs)
                res //= 2
            self.down.append(level)
        self.mid = _Middle(cin)
        self.norm_out = FrameNorm(cin)
        self.conv_out = _factorised(cin, cfg.z_channels)

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        x = self.conv_in(patch_video(video, self.patch_size))
        for level in self.down:
            x = level(x)
        return self.conv_out(F.silu(self.norm_out(self.mid(x))))


class Decoder(nn.Module):
    def __init__(self, cfg: CosmosTokenizerConfig):
        super().__init__()
        self.patch_size = cfg.patch_size
        ch, mult, n = cfg.channels, cfg.channels_mult, len(cfg.channels_mult)
        cin = ch * mult[-1]
        res = cfg.resolution // cfg.patch_size // 2 ** (n - 1)
        self.conv_in = _factorised(cfg.z_channels, cin)
        self.mid = _Middle(cin)
        levels: list[_Level] = []
        for i in reversed(range(n)):
            level = _Level()
            for _ in range(cfg.num_res_blocks + 1):
                level.block.append(ResBlock(cin, ch * mult[i]))
                cin = ch * mult[i]
                if res in cfg.attn_resolutions:
                    level.attn.append(_attention(cin))
            if i != 0:
                # The encoder's level j down-sampling is undone by the decoder's level n-1-j.
                rev = n - 1 - i
                if cfg.legacy_mode:
                    temporal = rev < cfg.num_temporal_downs
                else:
                    temporal = 0 < rev < cfg.num_temporal_downs + 1
                spatial = temporal or (rev < cfg.num_spatial_downs and cfg.num_spatial_downs > cfg.num_temporal_downs)
                level.upsample = Upsample(cin, spatial, temporal)
                res *= 2
            levels.insert(0, level)
        self.up = nn.ModuleList(levels)  # up[i] runs at resolution level i, as released
        self.norm_out = FrameNorm(cin)
        self.conv_out = _factorised(cin, 3 * cfg.patch_size**3)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.mid(self.conv_in(z))
        for level in reversed(self.up):
            x = level(x)
        x = self.conv_out(F.silu(self.norm_out(x)))
        return unpatch_video(x, self.patch_size)


class CosmosVideoTokenizer(nn.Module):
    """Cosmos discrete video tokenizer: ``(b, 3, 1+f*m, H, W)`` in [-1, 1] <-> ``(b, 1+m, H/s, W/s)`` ids.

    Same methods as :class:`wfm_sim.models.tokenizer.VideoTokenizer` (``encode``, ``decode``,
    ``decode_codes``); frames may be any size divisible by the spatial compression.
    """

    def __init__(self, cfg: CosmosTokenizerConfig):
        super().__init__()
        self.cfg = cfg
        self.encoder = Encoder(cfg)
        self.decoder = Decoder(cfg)
        self.quant_conv = CausalConv3d(cfg.z_channels, len(cfg.levels), 1)
        self.post_quant_conv = CausalConv3d(len(cfg.levels), cfg.z_channels, 1)
        self.fsq = FSQ(cfg.levels)

    def _check_video(self, video: torch.Tensor) -> None:
        s = self.cfg.spatial_compression
        if not torch.is_tensor(video) or video.ndim != 5 or video.shape[1] != 3:
            shape = tuple(video.shape) if torch.is_tensor(video) else type(video).__name__
            raise ValueError(f"video must be (b, 3, t, H, W) in [-1, 1], got {shape}")
        if not video.is_floating_point():
            raise TypeError(f"video must be a float tensor in [-1, 1], got {video.dtype}")
        if video.shape[-2] % s or video.shape[-1] % s:
            raise ValueError(f"frame height and width must be multiples of {s} for Cosmos {self.cfg.name}, "
                             f"got {tuple(video.shape[-2:])}")
        self.cfg.latent_frames(video.shape[2])

    def encode(self, video: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(b, 3, 1+f*m, H, W)`` -> tokens ``(b, 1+m, H/s, W/s)`` int64, codes and bounded latent."""
        self._check_video(video)
        z = self.quant_conv(self.encoder(video.to(self.quant_conv.conv3d.weight.dtype)))
        codes, tokens = self.fsq(z)
        return tokens, codes, self.fsq.bound(z.float())

    def decode_codes(self, codes: torch.Tensor) -> torch.Tensor:
        """``(b, 6, l, h, w)`` codes -> ``(b, 3, 1+f*(l-1), h*s, w*s)`` frames (unclamped)."""
        return self.decoder(self.post_quant_conv(codes.to(self.quant_conv.conv3d.weight.dtype)))

    def decode(self, tokens: torch.Tensor, check: bool = True) -> torch.Tensor:
        """``(b, l, h, w)`` int64 ids -> frames clamped to [-1, 1] (``check=False``: trusted ids)."""
        if tokens.ndim != 4:
            raise ValueError(f"tokens must be (b, l, h, w) int64, got {tuple(tokens.shape)}")
        return self.decode_codes(self.fsq.indices_to_codes(tokens, check)).clamp(-1, 1)


__all__ = ["VARIANTS", "CosmosTokenizerConfig", "CosmosVideoTokenizer", "haar3d", "inverse_haar3d", "patch_video",
           "unpatch_video"]
