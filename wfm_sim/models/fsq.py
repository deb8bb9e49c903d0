"""Finite Scalar Quantization (Mentzer et al. 2023, "FSQ: Finite Scalar Quantization: VQ-VAE Made Simple").

Each of the ``d = len(levels)`` latent channels is bounded with tanh and rounded to one of
``levels[i]`` values; the code index is the mixed-radix number formed by the per-channel digits.
Cosmos' discrete tokenizers use levels [8, 8, 8, 5, 5, 5] = 64,000 codes.

Everything here runs in fp32 (autocast off): rounding bf16 values would move codes.

Dimension legend: :mod:`wfm_sim.dims`.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class FSQ(nn.Module):
    """Quantise ``(b, c, ...)`` latents to integer codes.

    Args:
        levels: number of quantisation levels per channel, each >= 2.
    """

    def __init__(self, levels: tuple[int, ...]):
        super().__init__()
        if len(levels) == 0 or any(int(n) < 2 for n in levels):
            raise ValueError(f"FSQ levels must be a non-empty list of integers >= 2, got {levels}")
        self.levels = tuple(int(n) for n in levels)
        lv = torch.tensor(self.levels, dtype=torch.float32)
        basis = torch.cumprod(torch.tensor((1,) + self.levels[:-1], dtype=torch.int64), 0)
        self.register_buffer("_levels", lv, persistent=False)
        self.register_buffer("_basis", basis, persistent=False)
        self.codebook_size = math.prod(self.levels)

    @property
    def dim(self) -> int:
        return len(self.levels)

    def _view(self, x: torch.Tensor, ndim: int) -> torch.Tensor:
        """Shape a per-channel ``(c,)`` constant to broadcast over ``(b, c, ...)``."""
        return x.view(1, -1, *([1] * (ndim - 2)))

    def bound(self, z: torch.Tensor) -> torch.Tensor:
        """Squash ``z`` so that rounding yields exactly ``levels[i]`` values per channel."""
        lv = self._view(self._levels, z.ndim)
        half = (lv - 1) * (1 + 1e-3) / 2
        # Even level counts have no zero level: shift so rounding lands on half-integers.
        offset = torch.where(lv % 2 == 0, 0.5, 0.0)
        shift = torch.atanh(offset / half)
        return torch.tanh(z + shift) * half - offset

    @torch.autocast("cuda", enabled=False)
    @torch.autocast("cpu", enabled=False)
    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Quantise.

        Args:
            z: ``(b, c, ...)`` continuous latent, any float dtype.

        Returns:
            codes: ``(b, c, ...)`` fp32 quantised values in [-1, 1] (straight-through gradient).
            indices: ``(b, ...)`` int64 code indices in ``[0, codebook_size)``.
        """
        if z.shape[1] != self.dim:
            raise ValueError(f"FSQ expects {self.dim} channels on dim 1, got shape {tuple(z.shape)}")
        z = z.float()
        bounded = self.bound(z)
        rounded = bounded + (torch.round(bounded) - bounded).detach()  # straight-through estimator
        half_width = self._view(torch.div(self._levels, 2, rounding_mode="floor"), z.ndim)
        codes = rounded / half_width
        return codes, self.codes_to_indices(codes)

    def codes_to_indices(self, codes: torch.Tensor) -> torch.Tensor:
        """``(b, c, ...)`` normalised codes -> ``(b, ...)`` int64 indices."""
        half_width = self._view(torch.div(self._levels, 2, rounding_mode="floor"), codes.ndim)
        digits = torch.round(codes.float() * half_width + half_width).long()
        return (digits * self._view(self._basis, codes.ndim)).sum(dim=1)

    @torch.autocast("cuda", enabled=False)
    @torch.autocast("cpu", enabled=False)
    def indices_to_codes(self, indices: torch.Tensor, check: bool = True) -> torch.Tensor:
        """``(b, ...)`` int64 indices -> ``(b, c, ...)`` fp32 normalised codes.

        ``check=False`` skips the range check, which reads the ids on the host: for ids this
        model's own quantiser or sampler produced.
        """
        if indices.dtype not in (torch.int32, torch.int64):
            raise TypeError(f"token indices must be int32/int64, got {indices.dtype}")
        if check and indices.numel() and (int(indices.min()) < 0 or int(indices.max()) >= self.codebook_size):
            raise ValueError(
                f"token ids must lie in [0, {self.codebook_size}), got range "
                f"[{int(indices.min())}, {int(indices.max())}]"
            )
        idx = indices.long().unsqueeze(1)
        digits = torch.div(idx, self._view(self._basis, idx.ndim), rounding_mode="floor")
        digits = digits % self._view(self._levels.long(), idx.ndim)
        half_width = self._view(torch.div(self._levels, 2, rounding_mode="floor"), idx.ndim)
        return (digits.float() - half_width) / half_width
