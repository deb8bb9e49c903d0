"""Diffusion decoder: discrete tokens -> frames with an EDM denoiser (Karras et al. 2022).

The denoiser ``D(x; sigma) = c_skip x + c_out F(c_in x, c_noise, cond)`` is a small U-Net with
AdaGN noise conditioning. Conditioning, channel-concatenated with ``c_in x`` (as Cosmos'
diffusion decoder concatenates its token embedding):

* the token embedding (vocab -> ``token_embed_dim``), resized from the token grid to the image;
* optionally the tokenizer's own decode of the same tokens (a deterministic function of them);
* optionally the previous frame, which carries detail the tokens quantised away (DIAMOND).

With a tokenizer that groups ``k`` frames per latent frame (``frames = k``), one latent frame's
``k`` pixel frames are denoised jointly: the U-Net runs per frame, every residual block is
followed by a causal temporal convolution over the group (frame ``i`` sees frames ``<= i``, as
in the tokenizer's decoder), each frame knows its index in the group, one noise level covers the
whole group, and the previous frame (the last one before the group) conditions every frame.

Training: ``ln sigma ~ N(p_mean, p_std^2)``, loss weight ``lambda = (s^2 + sd^2) / (s sd)^2``
and a learned uncertainty ``u(sigma)`` (loss ``lambda/exp(u) * mse + u``, EDM2). Sampling: Euler
or Heun over a Karras (rho = 7) schedule; 1-4 steps by default.

Dimension legend: :mod:`wfm_sim.dims`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange, repeat
from torch import nn

from wfm_sim.models.limits import check_limits
from wfm_sim.models import rng
from wfm_sim.models.geometry import Geometry
from wfm_sim.models.rng import RowNoise
from wfm_sim.records import LossAndLogs


@dataclass(frozen=True)
class DecoderConfig:
    """The EDM diffusion decoder."""

    temporal_kernel: int = 3
    """Causal temporal convolution across a latent frame's frames (tokenizers grouping frames)."""
    token_embed_dim: int = 32
    base_channels: int = 64
    channel_mult: tuple[int, ...] = (1, 2, 2)
    num_res_blocks: int = 1
    cond_token_decode: bool = True
    """Also condition on the tokenizer's decode of the tokens."""
    cond_prev_frame: bool = True
    """Also condition on the previous frame."""
    residual: str = "token_decode"
    """What the decoder diffuses the residual from: 'token_decode' (the tokenizer's decode of
    the same tokens: recomputed every step, so errors cannot compound through it), 'prev' (the
    previous frame) or 'none' (diffuse the frame itself)."""
    prev_noise_max: float = 0.2
    """Training augmentation: the previous frame is seen with Gaussian noise of a level drawn
    from U(0, prev_noise_max), embedded beside sigma (GameNGen), so that at inference the
    decoder treats its own previous outputs as hints rather than truth (no drift)."""
    prev_noise: float = 0.05
    """Noise level put on the previous frame at inference."""
    sigma_data: float = 0.5
    p_mean: float = -0.4
    p_std: float = 1.2
    sigma_min: float = 0.002
    sigma_max: float = 5.0
    """Where sampling starts. Few-step samplers need it inside the training distribution of
    sigma (log-normal p_mean, p_std): DIAMOND uses 5. Cosmos' 80 suits its 15-35 steps."""
    rho: float = 7.0
    steps: int = 3
    """Default sampler steps."""
    sampler: str = "euler"
    """'euler' or 'heun' (Heun: two network calls per step except the last)."""

    def __post_init__(self):
        check_limits(self)
        if self.sampler not in ("euler", "heun"):
            raise ValueError(f"sampler must be 'euler' or 'heun', got {self.sampler!r}")
        if not 0 < self.sigma_min < self.sigma_max:
            raise ValueError("need 0 < sigma_min < sigma_max")
        if self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")
        if self.temporal_kernel < 1:
            raise ValueError(f"temporal_kernel must be >= 1, got {self.temporal_kernel}")
        if self.residual not in ("token_decode", "prev", "none"):
            raise ValueError(f"residual must be 'token_decode', 'prev' or 'none', got {self.residual!r}")
        if self.residual == "prev" and not self.cond_prev_frame:
            raise ValueError("residual='prev' needs cond_prev_frame=True (the residual is relative to it)")
        if self.residual == "token_decode" and not self.cond_token_decode:
            raise ValueError("residual='token_decode' needs cond_token_decode=True")


def edm_scalings(sigma: torch.Tensor, sigma_data: float):
    """EDM preconditioning (Karras et al. 2022, Table 1): c_skip, c_out, c_in, c_noise."""
    s2, sd2 = sigma**2, sigma_data**2
    c_skip = sd2 / (s2 + sd2)
    c_out = sigma * sigma_data / (s2 + sd2).sqrt()
    c_in = 1 / (s2 + sd2).sqrt()
    c_noise = sigma.log() / 4
    return c_skip, c_out, c_in, c_noise


def karras_sigmas(steps: int, sigma_min: float, sigma_max: float, rho: float) -> torch.Tensor:
    """``steps`` noise levels from sigma_max down to sigma_min, then a final 0."""
    if steps == 1:
        return torch.tensor([sigma_max, 0.0])
    ramp = torch.linspace(0, 1, steps)
    lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    return torch.cat(((hi + ramp * (lo - hi)) ** rho, torch.zeros(1)))


class FourierEmbed(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.register_buffer("freqs", torch.randn(dim // 2) * 4, persistent=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ang = 2 * math.pi * x.float()[:, None] * self.freqs[None]
        return torch.cat((ang.cos(), ang.sin()), dim=-1)


class ResBlock(nn.Module):
    """Residual block with adaptive GroupNorm (scale/shift from the noise embedding)."""

    def __init__(self, cin: int, cout: int, emb: int):
        super().__init__()
        self.norm1 = nn.GroupNorm(min(32, cin // 4), cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.ada = nn.Linear(emb, 2 * cout)
        self.norm2 = nn.GroupNorm(min(32, cout // 4), cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.ada(emb)[:, :, None, None].chunk(2, dim=1)
        h = self.norm2(h) * (1 + scale) + shift
        return self.skip(x) + self.conv2(F.silu(h))


class CausalTemporalMix(nn.Module):
    """Residual causal conv along time: ``(b t, c, H, W)`` with ``t`` frames per clip.

    Zero-initialised, so a fresh grouped decoder starts as the per-frame one.
    """

    def __init__(self, c: int, kernel: int):
        super().__init__()
        self.kernel = kernel
        self.norm = nn.GroupNorm(min(32, c // 4), c)
        self.conv = nn.Conv3d(c, c, (kernel, 1, 1))
        nn.init.zeros_(self.conv.weight)
        nn.init.zeros_(self.conv.bias)

    def forward(self, x: torch.Tensor, t: int) -> torch.Tensor:
        h = rearrange(F.silu(self.norm(x)), "(b t) c H W -> b c t H W", t=t)
        h = self.conv(F.pad(h, (0, 0, 0, 0, self.kernel - 1, 0)))  # left pad: frame i sees frames <= i
        return x + rearrange(h, "b c t H W -> (b t) c H W")


class UNet(nn.Module):
    """Per-frame U-Net; with ``frames > 1`` each residual block is followed by a causal
    temporal mix over the frames of a clip."""

    def __init__(self, cin: int, cfg: DecoderConfig, emb: int, frames: int):
        super().__init__()
        widths = [cfg.base_channels * m for m in cfg.channel_mult]
        self.conv_in = nn.Conv2d(cin, widths[0], 3, padding=1)
        self.down, self.up = nn.ModuleList(), nn.ModuleList()
        c, skips = widths[0], [widths[0]]
        for i, w in enumerate(widths):
            for _ in range(cfg.num_res_blocks):
                self.down.append(ResBlock(c, w, emb))
                c = w
                skips.append(c)
            if i < len(widths) - 1:
                self.down.append(nn.Conv2d(c, c, 3, stride=2, padding=1))
                skips.append(c)
        self.mid = ResBlock(c, c, emb)
        for i, w in reversed(list(enumerate(widths))):
            for _ in range(cfg.num_res_blocks + 1):
                self.up.append(ResBlock(c + skips.pop(), w, emb))
                c = w
            if i > 0:
                self.up.append(nn.Upsample(scale_factor=2.0, mode="nearest"))
        self.out = nn.Sequential(nn.GroupNorm(min(32, c // 4), c), nn.SiLU(), nn.Conv2d(c, 3, 3, padding=1))
        self.temporal = None
        if frames > 1:  # one mix after every residual block, in forward order
            blocks = [m for m in self.down if isinstance(m, ResBlock)] + [self.mid] + [m for m in self.up if isinstance(m, ResBlock)]
            self.temporal = nn.ModuleList(CausalTemporalMix(m.conv2.out_channels, cfg.temporal_kernel) for m in blocks)

    def forward(self, x: torch.Tensor, emb: torch.Tensor, t: int = 1) -> torch.Tensor:
        """``(b t, cin, H, W)`` -> ``(b t, 3, H, W)``; clips of ``t`` consecutive rows."""
        mixes = iter(self.temporal) if self.temporal is not None else None

        def block(m, h):
            h = m(h, emb)
            return next(mixes)(h, t) if mixes is not None else h

        x = self.conv_in(x)
        hs = [x]
        for m in self.down:
            x = block(m, x) if isinstance(m, ResBlock) else m(x)
            hs.append(x)
        x = block(self.mid, x)
        for m in self.up:
            x = block(m, torch.cat((x, hs.pop()), dim=1)) if isinstance(m, ResBlock) else m(x)
        return self.out(x)


class DiffusionDecoder(nn.Module):
    """EDM denoiser over frames (or a latent frame's group of frames) conditioned on tokens.

    See the module docstring. Frames are ``(b, 3, H, W)`` per-frame, or ``(b, 3, t, H, W)`` for
    the ``t <= f`` frames of one latent frame; the token grid, vocabulary, frame size and ``f``
    come from the model's :class:`~wfm_sim.models.geometry.Geometry`.
    """

    def __init__(self, cfg: DecoderConfig, geo: Geometry):
        super().__init__()
        if geo.image_size % (2 ** (len(cfg.channel_mult) - 1)):
            raise ValueError(f"the decoder's {len(cfg.channel_mult)} levels need a frame side divisible by "
                             f"{2 ** (len(cfg.channel_mult) - 1)}, got {geo.image_size}")
        self.cfg, self.geo = cfg, geo
        self.token_emb = nn.Embedding(geo.vocab_size, cfg.token_embed_dim)
        cin = 3 + cfg.token_embed_dim + 3 * cfg.cond_token_decode + 3 * cfg.cond_prev_frame
        emb = 4 * cfg.base_channels
        self.noise_emb = nn.Sequential(FourierEmbed(emb), nn.Linear(emb, emb), nn.SiLU(), nn.Linear(emb, emb))
        self.unet = UNet(cin, cfg, emb, geo.frames_per_token)
        self.uncertainty = nn.Linear(emb, 1)  # u(sigma), EDM2's learned loss weighting
        self.aug_emb = nn.Sequential(FourierEmbed(emb), nn.Linear(emb, emb)) if cfg.cond_prev_frame else None
        f = geo.frames_per_token
        self.frame_emb = nn.Embedding(f, emb) if f > 1 else None  # index within the group
        if self.frame_emb is not None:
            nn.init.zeros_(self.frame_emb.weight)

    def _frames(self, t: int) -> int:
        if not 1 <= t <= self.geo.frames_per_token:
            raise ValueError(f"this decoder decodes 1..{self.geo.frames_per_token} frames per latent frame, got {t}")
        return t

    def cond(self, tokens: torch.Tensor, token_decode: torch.Tensor | None, prev: torch.Tensor | None,
             t: int = 1) -> torch.Tensor:
        """Conditioning planes ``(b t, c, H, W)`` from ``(b, h, w)`` tokens, the ``(b, 3, t, H, W)``
        token decode and the ``(b, 3, H, W)`` previous frame (both optional by config)."""
        c, g, s = self.cfg, self.geo.grid, self.geo.image_size
        if tokens.shape[-2:] != (g, g) or tokens.ndim != 3:
            raise ValueError(f"decoder tokens must be (b, {g}, {g}), got {tuple(tokens.shape)}")
        e = F.interpolate(self.token_emb(tokens).permute(0, 3, 1, 2), size=(s, s), mode="nearest")
        planes = [repeat(e, "b e H W -> (b t) e H W", t=t)]
        if c.cond_token_decode:
            if token_decode is None:
                raise ValueError("this decoder is conditioned on token_decode: pass the tokenizer's decode of the tokens")
            planes.append(rearrange(self._as_clip(token_decode, "token_decode").to(e.dtype), "b c t H W -> (b t) c H W"))
        if c.cond_prev_frame:
            if prev is None:
                raise ValueError("this decoder is conditioned on prev: pass the (b, 3, H, W) previous frame")
            planes.append(repeat(prev.to(e.dtype), "b c H W -> (b t) c H W", t=t))
        return torch.cat(planes, dim=1)

    def denoise(self, x: torch.Tensor, sigma: torch.Tensor, cond: torch.Tensor,
                aug: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``D(x; sigma)`` for ``(b, 3, t, H, W)`` (or ``(b, 3, H, W)``) x and ``(b,)`` sigma; also
        returns ``u(sigma)``.

        ``aug`` is the ``(b,)`` noise level on the previous frame in ``cond`` (default 0).
        """
        if x.ndim == 4:
            d, u = self.denoise(x[:, :, None], sigma, cond, aug)
            return d[:, :, 0], u
        t = x.shape[2]
        sigma = sigma.float()
        c_skip, c_out, c_in, c_noise = (s[:, None, None, None, None] for s in edm_scalings(sigma, self.cfg.sigma_data))
        emb = self.noise_emb(c_noise.flatten())
        if self.aug_emb is not None:
            emb = emb + self.aug_emb(torch.zeros_like(sigma) if aug is None else aug.float())
        u = self.uncertainty(emb).float().flatten()
        emb = repeat(emb, "b e -> (b t) e", t=t)
        if self.frame_emb is not None:
            emb = emb + self.frame_emb(torch.arange(t, device=emb.device)).repeat(x.shape[0], 1)
        x_in = rearrange((c_in * x.float()).to(cond.dtype), "b c t H W -> (b t) c H W")
        f = self.unet(torch.cat((x_in, cond), dim=1), emb.to(cond.dtype), t)
        f = rearrange(f.float(), "(b t) c H W -> b c t H W", t=t)
        return c_skip * x.float() + c_out * f, u

    def _prev_and_base(self, device, token_decode, prev, levels, noisy: bool, generator):
        """Noise-augmented previous frame and the residual base (broadcasting over frames)."""
        c = self.cfg
        prev_in = None
        if c.cond_prev_frame:
            if prev is None:
                raise ValueError("this diffusion decoder needs prev: the (b, 3, H, W) previous frame")
            prev_in = prev.float()
            if noisy:  # the config says whether any level is > 0: no device sync
                noise = self._randn(prev_in.shape, device, generator, stream=3)
                prev_in = prev_in + levels[:, None, None, None] * noise
        if c.residual == "prev":
            return prev_in, prev_in[:, :, None]
        if c.residual == "token_decode" and token_decode is not None:
            return prev_in, token_decode.float()
        return prev_in, 0.0

    @staticmethod
    def _randn(shape, device, generator, stream: int):
        if isinstance(generator, torch.Tensor):  # a counter key (training): one stream per draw
            return rng.draw(generator, stream, tuple(shape), device, normal_=True)
        if isinstance(generator, RowNoise):  # counter-based per-row keys: rows independent of batching
            return generator.randn(tuple(shape[1:]), device)
        if isinstance(generator, (list, tuple)):  # one generator per row: rows independent of batching
            return torch.stack([torch.randn(shape[1:], device=device, generator=g) for g in generator])
        return torch.randn(shape, device=device, generator=generator)

    @staticmethod
    def _as_clip(x: torch.Tensor | None, name: str) -> torch.Tensor | None:
        if x is None or x.ndim == 5:
            return x
        if x.ndim == 4:
            return x[:, :, None]
        raise ValueError(f"{name} must be (b, 3, H, W) or (b, 3, t, H, W), got {tuple(x.shape)}")

    def forward(self, frames, tokens, token_decode=None, prev=None, generator=None) -> LossAndLogs:
        """EDM training loss for target frames in [-1, 1]: ``(b, 3, H, W)`` or, for a grouped
        decoder, a latent frame's ``(b, 3, t, H, W)`` (then ``token_decode`` has the same shape)."""
        c = self.cfg
        frames, token_decode = self._as_clip(frames, "frames"), self._as_clip(token_decode, "token_decode")
        b, t, dev = frames.shape[0], self._frames(frames.shape[2]), frames.device
        if token_decode is not None and token_decode.shape != frames.shape:
            raise ValueError(f"token_decode {tuple(token_decode.shape)} must match frames {tuple(frames.shape)}")
        levels = rng.draw(generator, 0, (b,), dev) * c.prev_noise_max
        prev_in, base = self._prev_and_base(dev, token_decode, prev, levels, c.prev_noise_max > 0, generator)
        x0 = frames.float() - base
        sigma = (c.p_mean + c.p_std * rng.draw(generator, 1, (b,), dev, normal_=True)).exp()
        noise = rng.draw(generator, 2, tuple(x0.shape), dev, normal_=True)
        cond = self.cond(tokens, token_decode, prev_in, t)
        denoised, u = self.denoise(x0 + sigma[:, None, None, None, None] * noise, sigma, cond, levels)
        weight = (sigma**2 + c.sigma_data**2) / (sigma * c.sigma_data) ** 2
        mse = ((denoised - x0) ** 2).mean(dim=(1, 2, 3, 4))
        loss = (weight / u.exp() * mse + u).mean()
        return LossAndLogs(loss=loss, logs={"edm_mse": mse.mean().detach(), "weighted_mse": (weight * mse).mean().detach()})

    @torch.no_grad()
    def sample(self, tokens, token_decode=None, prev=None, steps: int | None = None,
               generator=None, sampler: str | None = None, frames: int | None = None) -> torch.Tensor:
        """Decode ``(b, h, w)`` tokens to frames in [-1, 1].

        Returns ``(b, 3, H, W)`` for a ``(b, 3, H, W)`` token decode, else ``(b, 3, t, H, W)`` with
        ``t`` the token decode's frames (or ``frames`` for a decoder not conditioned on it).
        ``generator`` is one ``torch.Generator``, a list with one per row, per-row counter-based
        keys (:class:`~wfm_sim.models.rng.RowNoise`), or None.
        """
        c = self.cfg
        steps = c.steps if steps is None else steps
        sampler = c.sampler if sampler is None else sampler
        clip = frames is not None or (token_decode is not None and token_decode.ndim == 5)
        token_decode = self._as_clip(token_decode, "token_decode")
        t = self._frames(token_decode.shape[2] if token_decode is not None else (frames or 1))
        b, dev = tokens.shape[0], tokens.device
        levels = torch.full((b,), c.prev_noise, device=dev)
        prev_in, base = self._prev_and_base(dev, token_decode, prev, levels, c.prev_noise > 0, generator)
        cond = self.cond(tokens, token_decode, prev_in, t)
        sigmas = karras_sigmas(steps, c.sigma_min, c.sigma_max, c.rho)
        last = sigmas.numpy()  # a host tensor: the branch below never reads the device
        sigmas = sigmas.to(dev)
        side = self.geo.image_size
        x = self._randn((b, 3, t, side, side), dev, generator, stream=4) * sigmas[0]
        for i in range(steps):
            s, s_next = sigmas[i], sigmas[i + 1]
            d = (x - self.denoise(x, s.expand(b), cond, levels)[0]) / s
            x_next = x + (s_next - s) * d
            if sampler == "heun" and last[i + 1] > 0:
                d2 = (x_next - self.denoise(x_next, s_next.expand(b), cond, levels)[0]) / s_next
                x_next = x + (s_next - s) * (d + d2) / 2
            x = x_next
        x = (x + base).clamp(-1, 1)
        return x if clip else x[:, :, 0]
