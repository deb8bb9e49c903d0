"""Diffusion decoder: discrete tokens -> frames with an EDM denoiser (Karras et al. 2022).

The denoiser ``D(x; sigma) = c_skip x + c_out F(c_in x, c_noise, cond)`` is a small U-Net with
AdaGN noise conditioning. Conditioning, channel-concatenated with ``c_in x`` (as Cosmos'
diffusion decoder concatenates its token embedding):

* the token embedding (vocab -> ``token_embed_dim``), resized from the token grid to the image;
* optionally the tokenizer's own decode of the same tokens (a deterministic function of them);
* optionally the previous frame, which carries detail the tokens quantised away (DIAMOND).

Training: ``ln sigma ~ N(p_mean, p_std^2)``, loss weight ``lambda = (s^2 + sd^2) / (s sd)^2``
and a learned uncertainty ``u(sigma)`` (loss ``lambda/exp(u) * mse + u``, EDM2). Sampling: Euler
or Heun over a Karras (rho = 7) schedule; 1-4 steps by default.

Dimension legend: ``b`` batch, ``c`` channels, ``H W`` pixels, ``h w`` token grid, ``e`` token
embedding width.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from wfm_sim.models.limits import check_limits
from wfm_sim.records import LossAndLogs


@dataclass(frozen=True)
class DecoderConfig:
    """The EDM diffusion decoder."""

    image_size: int = 64
    vocab_size: int = 1000
    grid: int = 8
    """Token grid side (image_size / tokenizer spatial_downsample)."""
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
        if self.image_size % (2 ** (len(self.channel_mult) - 1)):
            raise ValueError("image_size must be divisible by 2**(len(channel_mult)-1)")
        if not 0 < self.sigma_min < self.sigma_max:
            raise ValueError("need 0 < sigma_min < sigma_max")
        if self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")
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


class UNet(nn.Module):
    def __init__(self, cin: int, cfg: DecoderConfig, emb: int):
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

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        x = self.conv_in(x)
        hs = [x]
        for m in self.down:
            x = m(x, emb) if isinstance(m, ResBlock) else m(x)
            hs.append(x)
        x = self.mid(x, emb)
        for m in self.up:
            x = m(torch.cat((x, hs.pop()), dim=1), emb) if isinstance(m, ResBlock) else m(x)
        return self.out(x)


class DiffusionDecoder(nn.Module):
    """EDM denoiser over frames conditioned on tokens. See the module docstring."""

    def __init__(self, cfg: DecoderConfig):
        super().__init__()
        self.cfg = cfg
        self.token_emb = nn.Embedding(cfg.vocab_size, cfg.token_embed_dim)
        cin = 3 + cfg.token_embed_dim + 3 * cfg.cond_token_decode + 3 * cfg.cond_prev_frame
        emb = 4 * cfg.base_channels
        self.noise_emb = nn.Sequential(FourierEmbed(emb), nn.Linear(emb, emb), nn.SiLU(), nn.Linear(emb, emb))
        self.unet = UNet(cin, cfg, emb)
        self.uncertainty = nn.Linear(emb, 1)  # u(sigma), EDM2's learned loss weighting
        self.aug_emb = nn.Sequential(FourierEmbed(emb), nn.Linear(emb, emb)) if cfg.cond_prev_frame else None

    def cond(self, tokens: torch.Tensor, token_decode: torch.Tensor | None, prev: torch.Tensor | None) -> torch.Tensor:
        """Conditioning planes ``(b, c, H, W)`` from ``(b, h, w)`` tokens and optional frames."""
        c = self.cfg
        if tokens.shape[-2:] != (c.grid, c.grid):
            raise ValueError(f"decoder tokens must be (b, {c.grid}, {c.grid}), got {tuple(tokens.shape)}")
        e = self.token_emb(tokens).permute(0, 3, 1, 2)
        planes = [F.interpolate(e, size=(c.image_size, c.image_size), mode="nearest")]
        for flag, frame, name in ((c.cond_token_decode, token_decode, "token_decode"), (c.cond_prev_frame, prev, "prev")):
            if flag:
                if frame is None:
                    raise ValueError(f"this decoder is conditioned on {name}: pass a (b, 3, H, W) frame")
                planes.append(frame.to(e.dtype))
        return torch.cat(planes, dim=1)

    def denoise(self, x: torch.Tensor, sigma: torch.Tensor, cond: torch.Tensor,
                aug: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``D(x; sigma)`` for ``(b, 3, H, W)`` x and ``(b,)`` sigma; also returns ``u(sigma)``.

        ``aug`` is the ``(b,)`` noise level on the previous frame in ``cond`` (default 0).
        """
        sigma = sigma.float()
        c_skip, c_out, c_in, c_noise = (s[:, None, None, None] for s in edm_scalings(sigma, self.cfg.sigma_data))
        emb = self.noise_emb(c_noise.flatten())
        if self.aug_emb is not None:
            emb = emb + self.aug_emb(torch.zeros_like(sigma) if aug is None else aug.float())
        f = self.unet(torch.cat(((c_in * x.float()).to(cond.dtype), cond), dim=1), emb.to(cond.dtype))
        return c_skip * x.float() + c_out * f.float(), self.uncertainty(emb).float().flatten()

    def _prev_and_base(self, device, token_decode, prev, levels, generator):
        """Noise-augmented previous frame and the residual base for a batch."""
        c = self.cfg
        prev_in = None
        if c.cond_prev_frame:
            if prev is None:
                raise ValueError("this diffusion decoder needs prev: the (b, 3, H, W) previous frame")
            prev_in = prev.float()
            if bool((levels > 0).any()):
                noise = self._randn(prev_in.shape, device, generator)
                prev_in = prev_in + levels[:, None, None, None] * noise
        base = {"prev": prev_in, "token_decode": None if token_decode is None else token_decode.float(), "none": None}[c.residual]
        return prev_in, (0.0 if base is None else base)

    @staticmethod
    def _randn(shape, device, generator):
        if isinstance(generator, (list, tuple)):  # one generator per row: rows independent of batching
            return torch.stack([torch.randn(shape[1:], device=device, generator=g) for g in generator])
        return torch.randn(shape, device=device, generator=generator)

    def forward(self, frames, tokens, token_decode=None, prev=None, generator=None) -> LossAndLogs:
        """EDM training loss for ``(b, 3, H, W)`` target frames in [-1, 1]."""
        c = self.cfg
        b, dev = frames.shape[0], frames.device
        levels = torch.rand(b, device=dev, generator=generator) * c.prev_noise_max
        prev_in, base = self._prev_and_base(dev, token_decode, prev, levels, generator)
        x0 = frames.float() - base
        sigma = (c.p_mean + c.p_std * torch.randn(b, device=dev, generator=generator)).exp()
        noise = torch.randn(x0.shape, device=dev, generator=generator)
        cond = self.cond(tokens, token_decode, prev_in)
        denoised, u = self.denoise(x0 + sigma[:, None, None, None] * noise, sigma, cond, levels)
        weight = (sigma**2 + c.sigma_data**2) / (sigma * c.sigma_data) ** 2
        mse = ((denoised - x0) ** 2).mean(dim=(1, 2, 3))
        loss = (weight / u.exp() * mse + u).mean()
        return LossAndLogs(loss=loss, logs={"edm_mse": mse.mean().item(), "weighted_mse": (weight * mse).mean().item()})

    @torch.no_grad()
    def sample(self, tokens, token_decode=None, prev=None, steps: int | None = None,
               generator=None, sampler: str | None = None) -> torch.Tensor:
        """Decode ``(b, h, w)`` tokens to ``(b, 3, H, W)`` frames in [-1, 1].

        ``generator`` is one ``torch.Generator``, a list with one per row, or None.
        """
        c = self.cfg
        steps = c.steps if steps is None else steps
        sampler = c.sampler if sampler is None else sampler
        b, dev = tokens.shape[0], tokens.device
        levels = torch.full((b,), c.prev_noise, device=dev)
        prev_in, base = self._prev_and_base(dev, token_decode, prev, levels, generator)
        cond = self.cond(tokens, token_decode, prev_in)
        sigmas = karras_sigmas(steps, c.sigma_min, c.sigma_max, c.rho).to(dev)
        x = self._randn((b, 3, c.image_size, c.image_size), dev, generator) * sigmas[0]
        for i in range(steps):
            s, s_next = sigmas[i], sigmas[i + 1]
            d = (x - self.denoise(x, s.expand(b), cond, levels)[0]) / s
            x_next = x + (s_next - s) * d
            if sampler == "heun" and s_next > 0:
                d2 = (x_next - self.denoise(x_next, s_next.expand(b), cond, levels)[0]) / s_next
                x_next = x + (s_next - s) * (d + d2) / 2
            x = x_next
        x = x + base
        return x.clamp(-1, 1)
