"""Temporally causal discrete video tokenizer (after Cosmos-Tokenizer DV).

Haar-wavelet patcher, factorised causal 3D convolutions (1x3x3 spatial then kx1x1 temporal,
padded on the left in time), per-frame GroupNorm(1), spatial attention at the lowest
resolution plus causal temporal attention when frames are grouped, and an FSQ bottleneck.
Frame 0 is encoded alone and later frames in groups of ``temporal_downsample``: a clip of
``1 + k*m`` frames gives ``1 + m`` latent frames. Nothing a frame encodes or decodes to
depends on a later frame.

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
from wfm_sim.models.limits import check_limits
from wfm_sim.records import LossAndLogs


HARD_FRACTION = 0.01
"""Share of each frame's pixels that :attr:`TokenizerConfig.hard_pixels` weighs (its worst)."""


def hard_pixel_l1(err: torch.Tensor) -> torch.Tensor:
    """Mean of each frame's worst ``HARD_FRACTION`` of per-pixel L1 errors.

    ``err``: ``(b, 3, t, H, W)`` absolute errors; a pixel's error is its mean over channels.
    """
    per_pixel = err.mean(1).flatten(2)  # (b, t, H*W)
    k = max(1, int(per_pixel.shape[-1] * HARD_FRACTION))
    return per_pixel.topk(k, dim=-1).values.mean()


@dataclass(frozen=True)
class TokenizerConfig:
    """Shape and size of the video tokenizer."""

    kind: str = "wfm"
    """Which tokenizer this config builds: 'wfm' (this one; 'cosmos' is
    :class:`~wfm_sim.models.cosmos_tokenizer.CosmosTokenizerConfig`)."""
    image_size: int = 64
    """Square frame side in pixels; must be divisible by ``spatial_downsample``."""
    spatial_downsample: int = 8
    """Pixels per token side: 4, 8 or 16 (the Haar patcher gives 2, conv stages the rest)."""
    temporal_downsample: int = 1
    """Frames per latent frame after frame 0: 1 (per-frame tokens), 4 or 8."""
    temporal_kernel: int = 1
    """Causal temporal conv kernel; 1 makes each frame's encoding depend on that frame alone."""
    base_channels: int = 64
    """Width of the first stage; later stages use ``base_channels * channel_mult[i]``."""
    channel_mult: tuple[int, ...] = (1, 2, 2)
    """One multiplier per resolution level, ``log2(spatial_downsample)`` entries."""
    num_res_blocks: int = 1
    """Residual blocks per level."""
    attention: bool = True
    """Spatial self-attention (and causal temporal attention when grouping) at the lowest level."""
    levels: tuple[int, ...] = (8, 5, 5, 5)
    """FSQ levels per code channel; the vocabulary is their product."""
    hard_pixels: float = 0.0
    """Training only: weight of an extra L1 term on each frame's worst-reconstructed
    ``HARD_FRACTION`` of pixels. Mean L1 + L2 lets a tokenizer drop objects of a few pixels
    (a puck, a goal marker) at almost no cost in PSNR; this term makes dropping them expensive."""

    def __post_init__(self):
        check_limits(self)
        if self.kind != "wfm":
            raise ValueError(f"TokenizerConfig.kind must be 'wfm', got {self.kind!r}")
        if self.hard_pixels < 0:
            raise ValueError(f"hard_pixels must be >= 0, got {self.hard_pixels}")
        if self.spatial_downsample not in (2, 4, 8, 16, 32):
            raise ValueError(f"spatial_downsample must be one of 2, 4, 8, 16, 32; got {self.spatial_downsample}")
        if self.temporal_downsample not in (1, 2, 4, 8):
            raise ValueError(f"temporal_downsample must be 1, 2, 4 or 8; got {self.temporal_downsample}")
        if self.image_size % self.spatial_downsample:
            raise ValueError(
                f"image_size {self.image_size} must be divisible by spatial_downsample {self.spatial_downsample}"
            )
        if len(self.channel_mult) != self.num_levels:
            raise ValueError(
                f"channel_mult needs log2(spatial_downsample) = {self.num_levels} entries, got {self.channel_mult}"
            )
        if self.temporal_kernel < 1:
            raise ValueError(f"temporal_kernel must be >= 1, got {self.temporal_kernel}")
        if self.temporal_downsample > 1 and int(math.log2(self.temporal_downsample)) > self.num_levels:
            raise ValueError("temporal_downsample needs one resolution level per factor of 2")

    @property
    def num_levels(self) -> int:
        return int(math.log2(self.spatial_downsample))

    @property
    def grid(self) -> int:
        """Tokens per side of one latent frame."""
        return self.image_size // self.spatial_downsample

    @property
    def per_frame(self) -> bool:
        """Each frame is coded alone (no temporal compression, no temporal receptive field)."""
        return self.temporal_downsample == 1 and self.temporal_kernel == 1

    @property
    def vocab_size(self) -> int:
        return math.prod(self.levels)

    def latent_frames(self, frames: int) -> int:
        """Latent frames for a clip of ``frames`` frames (must be 1 + k*m)."""
        k = self.temporal_downsample
        return clip_latent_frames(frames, k, f"temporal_downsample={k}")


def clip_latent_frames(frames: int, k: int, what: str) -> int:
    """``1 + m`` latent frames for a clip of ``1 + k*m`` frames (frame 0 is coded alone); else
    a ValueError naming the lengths allowed for ``what``."""
    if frames < 1 or (frames - 1) % k:
        raise ValueError(f"a clip must have 1 + {k}*m frames for {what}, got {frames}")
    return 1 + (frames - 1) // k


def haar_patch(x: torch.Tensor) -> torch.Tensor:
    """Orthonormal 2x2 Haar transform: ``(b, c, h, w) -> (b, 4c, h/2, w/2)``."""
    a, b = x[..., 0::2, 0::2], x[..., 0::2, 1::2]
    c, d = x[..., 1::2, 0::2], x[..., 1::2, 1::2]
    return torch.cat(((a + b + c + d), (a - b + c - d), (a + b - c - d), (a - b - c + d)), dim=1) / 2


def haar_unpatch(x: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`haar_patch`: ``(b, 4c, h, w) -> (b, c, 2h, 2w)``."""
    ll, lh, hl, hh = x.chunk(4, dim=1)
    a, b = (ll + lh + hl + hh) / 2, (ll - lh + hl - hh) / 2
    c, d = (ll + lh - hl - hh) / 2, (ll - lh - hl + hh) / 2
    top = rearrange(torch.stack((a, b), dim=-1), "n c h w two -> n c h (w two)")
    bottom = rearrange(torch.stack((c, d), dim=-1), "n c h w two -> n c h (w two)")
    return rearrange(torch.stack((top, bottom), dim=-2), "n c h two w -> n c (h two) w")


class CausalConv3d(nn.Module):
    """Factorised causal conv: 3x3 spatial per frame, then a left-padded temporal conv."""

    def __init__(self, cin: int, cout: int, temporal_kernel: int, stride: int = 1):
        super().__init__()
        self.spatial = nn.Conv2d(cin, cout, 3, stride=stride, padding=1)
        self.kt = temporal_kernel
        self.temporal = nn.Conv3d(cout, cout, (temporal_kernel, 1, 1)) if temporal_kernel > 1 else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (b, c, t, h, w)
        b = x.shape[0]
        x = self.spatial(rearrange(x, "b c t h w -> (b t) c h w"))
        x = rearrange(x, "(b t) c h w -> b c t h w", b=b)
        if self.temporal is not None:
            # Replicate frame 0 on the left: no frame sees a later one.
            x = torch.cat((x[:, :, :1].expand(-1, -1, self.kt - 1, -1, -1), x), dim=2)
            x = self.temporal(x)
        return x


class FrameNorm(nn.Module):
    """GroupNorm applied to each frame on its own (a norm over time would leak the future)."""

    def __init__(self, channels: int, groups: int = 1):
        super().__init__()
        self.norm = nn.GroupNorm(groups, channels, eps=1e-6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        x = self.norm(rearrange(x, "b c t h w -> (b t) c h w"))
        return rearrange(x, "(b t) c h w -> b c t h w", b=b)


class ResBlock(nn.Module):
    def __init__(self, cin: int, cout: int, kt: int):
        super().__init__()
        self.norm1, self.conv1 = FrameNorm(cin), CausalConv3d(cin, cout, kt)
        self.norm2, self.conv2 = FrameNorm(cout), CausalConv3d(cout, cout, kt)
        self.skip = nn.Conv3d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        return self.skip(x) + h


class SpaceTimeAttention(nn.Module):
    """Self-attention over each frame's grid, then causal attention over time at each pixel."""

    def __init__(self, channels: int, temporal: bool, heads: int = 4):
        super().__init__()
        self.norm_s = FrameNorm(channels)
        self.attn_s = nn.MultiheadAttention(channels, heads, batch_first=True)
        self.temporal = temporal
        if temporal:
            self.norm_t = FrameNorm(channels)
            self.attn_t = nn.MultiheadAttention(channels, heads, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, t, h, w = x.shape
        s = rearrange(self.norm_s(x), "b c t h w -> (b t) (h w) c")
        s = self.attn_s(s, s, s, need_weights=False)[0]
        x = x + rearrange(s, "(b t) (h w) c -> b c t h w", b=b, h=h)
        if self.temporal:
            q = rearrange(self.norm_t(x), "b c t h w -> (b h w) t c")
            mask = torch.ones(t, t, dtype=torch.bool, device=x.device).triu(1)  # True = blocked
            q = self.attn_t(q, q, q, attn_mask=mask, need_weights=False)[0]
            x = x + rearrange(q, "(b h w) t c -> b c t h w", b=b, h=h, w=w)
        return x


class TimeDown(nn.Module):
    """Causal 2x temporal downsample: frame 0 alone (paired with itself), then frame pairs."""

    def __init__(self, channels: int):
        super().__init__()
        self.proj = nn.Conv3d(2 * channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.cat((x[:, :, :1], x), dim=2)  # (b, c, 2 + 2m, h, w)
        return self.proj(rearrange(x, "b c (m two) h w -> b (c two) m h w", two=2))


class TimeUp(nn.Module):
    """Inverse of :class:`TimeDown`: each latent frame emits two frames; frame 0's twin is dropped."""

    def __init__(self, channels: int):
        super().__init__()
        self.proj = nn.Conv3d(channels, 2 * channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = rearrange(self.proj(x), "b (c two) m h w -> b c (m two) h w", two=2)
        return x[:, :, 1:]


class SpaceDown(nn.Module):
    def __init__(self, channels: int, kt: int):
        super().__init__()
        self.conv = CausalConv3d(channels, channels, kt, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class SpaceUp(nn.Module):
    def __init__(self, channels: int, kt: int):
        super().__init__()
        self.conv = CausalConv3d(channels, channels, kt)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        x = F.interpolate(rearrange(x, "b c t h w -> (b t) c h w"), scale_factor=2.0, mode="nearest")
        return self.conv(rearrange(x, "(b t) c h w -> b c t h w", b=b))


def _stack(cfg: TokenizerConfig, encoder: bool) -> tuple[nn.ModuleList, int]:
    """Build the level stack; returns modules in execution order and the bottleneck width."""
    kt = cfg.temporal_kernel
    n_time = int(math.log2(cfg.temporal_downsample))
    widths = [cfg.base_channels * m for m in cfg.channel_mult]
    mods: list[nn.Module] = []
    levels = range(cfg.num_levels) if encoder else reversed(range(cfg.num_levels))
    cin = widths[0] if encoder else widths[-1]
    for i in levels:
        # Level 0 works at the Haar resolution (image/2); each further level halves again.
        if not encoder:
            mods += [ResBlock(cin if j == 0 else widths[i], widths[i], kt) for j in range(cfg.num_res_blocks)]
            cin = widths[i]
            if i > 0:
                mods.append(SpaceUp(cin, kt))
            if i < n_time:
                mods.append(TimeUp(cin))
            continue
        mods += [ResBlock(cin if j == 0 else widths[i], widths[i], kt) for j in range(cfg.num_res_blocks)]
        cin = widths[i]
        if i < n_time:
            mods.append(TimeDown(cin))
        if i < cfg.num_levels - 1:
            mods.append(SpaceDown(cin, kt))
    return nn.ModuleList(mods), widths[-1]


def _encode(m: nn.Module, video: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The encoder half of :class:`VideoTokenizer` (``m`` has its ``enc_*`` modules and ``fsq``)."""
    b = video.shape[0]
    x = haar_patch(rearrange(video, "b c t h w -> (b t) c h w"))
    x = m.enc_in(rearrange(x, "(b t) c h w -> b c t h w", b=b))
    for level in m.enc_levels:
        x = level(x)
    z = m.enc_out(m.enc_mid(x))
    codes, tokens = m.fsq(z)
    return tokens, codes, m.fsq.bound(z.float())


def _encoder_modules(cfg: TokenizerConfig) -> dict[str, nn.Module]:
    grouped = cfg.temporal_downsample > 1 and cfg.attention
    out: dict[str, nn.Module] = {"enc_in": CausalConv3d(12, cfg.base_channels * cfg.channel_mult[0], cfg.temporal_kernel)}
    out["enc_levels"], wl = _stack(cfg, encoder=True)  # built in this order: seeded inits stay as they were
    out["enc_mid"] = SpaceTimeAttention(wl, temporal=grouped) if cfg.attention else nn.Identity()
    out["enc_out"] = nn.Sequential(FrameNorm(wl), nn.SiLU(), nn.Conv3d(wl, len(cfg.levels), 1))
    out["fsq"] = FSQ(cfg.levels)
    return out


class VideoTokenizer(nn.Module):
    """Discrete causal video tokenizer: ``(b, 3, t, H, W)`` in [-1, 1] <-> ``(b, l, h, w)`` ids."""

    def __init__(self, cfg: TokenizerConfig):
        super().__init__()
        self.cfg = cfg
        grouped = cfg.temporal_downsample > 1 and cfg.attention
        w0 = cfg.base_channels * cfg.channel_mult[0]
        for name, module in _encoder_modules(cfg).items():  # enc_in, enc_levels, enc_mid, enc_out, fsq
            setattr(self, name, module)
        wl = self.enc_out[-1].in_channels
        self.dec_in = nn.Conv3d(len(cfg.levels), wl, 1)
        self.dec_mid = SpaceTimeAttention(wl, temporal=grouped) if cfg.attention else nn.Identity()
        self.dec_levels, _ = _stack(cfg, encoder=False)
        self.dec_out = nn.Sequential(FrameNorm(w0), nn.SiLU(), CausalConv3d(w0, 12, cfg.temporal_kernel))

    def _check_video(self, video: torch.Tensor) -> None:
        c = self.cfg
        if video.ndim != 5 or video.shape[1] != 3 or video.shape[-2:] != (c.image_size, c.image_size):
            raise ValueError(
                f"video must be (b, 3, t, {c.image_size}, {c.image_size}) in [-1, 1], got {tuple(video.shape)}"
            )
        if not video.is_floating_point():
            raise TypeError(f"video must be a float tensor in [-1, 1], got {video.dtype}")
        c.latent_frames(video.shape[2])

    def encode(self, video: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Encode a clip.

        Args:
            video: ``(b, 3, t, H, W)`` float in [-1, 1], ``t = 1 + k*m``.

        Returns:
            tokens ``(b, l, h, w)`` int64, codes ``(b, c, l, h, w)`` fp32 quantised, and
            latent ``(b, c, l, h, w)`` fp32 continuous (pre-quantisation, bounded).
        """
        self._check_video(video)
        return _encode(self, video)

    def decode_codes(self, codes: torch.Tensor) -> torch.Tensor:
        """``(b, c, l, h, w)`` codes -> ``(b, 3, t, H, W)`` frames (unclamped, ~[-1, 1])."""
        b = codes.shape[0]
        x = self.dec_mid(self.dec_in(codes.to(self.dec_in.weight.dtype)))
        for m in self.dec_levels:
            x = m(x)
        x = self.dec_out(x)
        x = haar_unpatch(rearrange(x, "b c t h w -> (b t) c h w"))
        return rearrange(x, "(b t) c h w -> b c t h w", b=b)

    def decode(self, tokens: torch.Tensor, check: bool = True) -> torch.Tensor:
        """``(b, l, h, w)`` int64 ids -> ``(b, 3, t, H, W)`` frames clamped to [-1, 1]
        (``check=False``: trusted ids, no range check on the host)."""
        g = self.cfg.grid
        if tokens.ndim != 4 or tokens.shape[-2:] != (g, g):
            raise ValueError(f"tokens must be (b, l, {g}, {g}) int64, got {tuple(tokens.shape)}")
        return self.decode_codes(self.fsq.indices_to_codes(tokens, check)).clamp(-1, 1)

    def forward(self, video: torch.Tensor) -> LossAndLogs:
        """Training loss: L1 + L2 reconstruction; logs PSNR and codebook usage."""
        tokens, codes, _ = self.encode(video)
        recon = self.decode_codes(codes).float()
        target = video.float()
        err = (recon - target).abs()
        l1 = err.mean()
        l2 = F.mse_loss(recon, target)
        hard = hard_pixel_l1(err)
        with torch.no_grad():
            mse01 = F.mse_loss(recon.clamp(-1, 1), target) / 4  # MSE on the [0, 1] scale
            psnr = -10 * torch.log10(mse01.clamp_min(1e-10))
            # A fixed-size histogram (bincount's size would depend on the data: a device sync).
            flat = tokens.flatten()
            counts = torch.zeros(self.fsq.codebook_size, device=flat.device).index_add_(
                0, flat, torch.ones(flat.shape, device=flat.device))
            p = counts / counts.sum()
            perplexity = torch.exp(-torch.special.xlogy(p, p).sum())
        logs = {"l1": l1.detach(), "l2": l2.detach(), "hard_l1": hard.detach(), "psnr": psnr,
                "codebook_used": (counts > 0).float().mean(), "codebook_perplexity": perplexity}
        return LossAndLogs(loss=l1 + l2 + self.cfg.hard_pixels * hard, logs=logs)


class TokenEncoder(nn.Module):
    """The encoder half of a per-frame :class:`VideoTokenizer`: uint8 frames -> token ids.

    What a policy that acts on a world model's tokens carries to the real world: it turns each
    real camera frame into the ids the model's own rollouts produce, without the decoder. Its
    modules (and state-dict keys) are the tokenizer's own ``enc_*``.
    """

    def __init__(self, cfg: TokenizerConfig):
        super().__init__()
        if not cfg.per_frame:
            raise ValueError(f"a token encoder codes each frame alone; this tokenizer has temporal_downsample="
                             f"{cfg.temporal_downsample}, temporal_kernel={cfg.temporal_kernel} (its tokens depend on "
                             "earlier frames): act on pixels instead")
        self.cfg = cfg
        for name, module in _encoder_modules(cfg).items():
            setattr(self, name, module)
        self.requires_grad_(False)

    def copy_from(self, tokenizer: VideoTokenizer) -> "TokenEncoder":
        """Take the encoder weights of ``tokenizer`` (the same config)."""
        if tokenizer.cfg != self.cfg:
            raise ValueError(f"the tokenizer's config {tokenizer.cfg} differs from this encoder's {self.cfg}")
        mine = self.state_dict()
        self.load_state_dict({k: v.float() for k, v in tokenizer.state_dict().items() if k in mine})
        return self

    @torch.no_grad()
    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        """``(b, v, H, W, 3)`` uint8 -> ``(b, v, g, g)`` int64 ids."""
        b = frames.shape[0]
        video = rearrange(frames, "b v h w c -> (b v) c 1 h w").float() / 127.5 - 1
        return rearrange(_encode(self, video)[0], "(b v) 1 h w -> b v h w", b=b)

