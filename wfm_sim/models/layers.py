"""Transformer building blocks shared by the backbone: RMSNorm, SwiGLU and 3D factorised RoPE.

Dimension legend: :mod:`wfm_sim.dims`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class RMSNorm(nn.Module):
    """Root-mean-square norm (Zhang & Sennrich 2019), computed in fp32."""

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return (xf * self.weight.float()).to(x.dtype)


class SwiGLU(nn.Module):
    """Gated MLP ``W2(silu(W1 x) * W3 x)`` (Shazeer 2020), hidden width rounded to 64."""

    def __init__(self, dim: int, mlp_ratio: float = 8 / 3, bias: bool = False):
        super().__init__()
        hidden = int(dim * mlp_ratio)
        hidden = 64 * ((hidden + 63) // 64)
        self.w13 = nn.Linear(dim, 2 * hidden, bias=bias)
        self.w2 = nn.Linear(hidden, dim, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = self.w13(x).chunk(2, dim=-1)
        return self.w2(F.silu(a) * b)


def rope_split(head_dim: int) -> tuple[int, int, int]:
    """Split a head dim across (t, h, w) rotary axes, each part even.

    Cosmos splits 128 as h=42, w=42, t=44: the spatial parts get ``2 * (head_dim // 6)`` each
    and time takes the rest.
    """
    if head_dim % 2 or head_dim < 6:
        raise ValueError(f"3D RoPE needs an even head dim >= 6, got {head_dim}")
    hw = 2 * (head_dim // 6)
    return head_dim - 2 * hw, hw, hw


class Rope3D(nn.Module):
    """3D factorised rotary position embedding (Su et al. 2021; Cosmos' t/h/w split).

    ``positions`` is ``(b, q, 3)`` integer (t, h, w) per token; the head dim is split into three
    contiguous parts, each rotated by its own axis' position.
    """

    def __init__(self, head_dim: int, theta: float = 10000.0):
        super().__init__()
        self.split = rope_split(head_dim)
        freqs = [1.0 / theta ** (torch.arange(0, part, 2, dtype=torch.float32) / part) for part in self.split]
        for name, f in zip(("t", "h", "w"), freqs):
            self.register_buffer(f"inv_freq_{name}", f, persistent=False)

    def angles(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(b, q, 3)`` positions -> cos, sin of shape ``(b, 1, q, head_dim // 2)`` in fp32."""
        pos = positions.float()
        parts = [
            pos[..., i, None] * f
            for i, f in enumerate((self.inv_freq_t, self.inv_freq_h, self.inv_freq_w))
        ]
        ang = torch.cat(parts, dim=-1).unsqueeze(1)
        return ang.cos(), ang.sin()

    @staticmethod
    def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        """Rotate ``(b, m, q, e)`` by angles ``(b, 1, q, e/2)`` (pairs are interleaved halves)."""
        x1, x2 = x.float().chunk(2, dim=-1)
        out = torch.cat((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1)
        return out.to(x.dtype)
