"""Image metrics on uint8 frames: PSNR and SSIM (Wang et al. 2004, 11x11 Gaussian window, sigma 1.5).

Definitions, as torchmetrics computes them (``peak_signal_noise_ratio`` and
``structural_similarity_index_measure`` with ``data_range=1`` on frames scaled to [0, 1]; a test
checks agreement to 1e-5): PSNR from the mean squared error over all pixels and channels of an
image; SSIM averaged over every pixel, the image reflected at its borders to fill the window
(images of 5 pixels or less are zero-padded). Reports before this definition padded every image
with zeros, which moves SSIM by about a thousandth.

Dimension legend: :mod:`wfm_sim.dims`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _float(x: torch.Tensor) -> torch.Tensor:
    """``(b, H, W, 3)`` uint8 -> ``(b, 3, H, W)`` float in [0, 1]."""
    return x.permute(0, 3, 1, 2).float() / 255.0


def psnr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR (dB) of two ``(b, H, W, 3)`` uint8 batches; identical images give 100 dB."""
    mse = ((_float(a) - _float(b)) ** 2).flatten(1).mean(1)
    return (-10 * torch.log10(mse.clamp_min(1e-10))).clamp(max=100.0)


def psnr_signed(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR (dB) of float images in [-1, 1] (``a`` is clamped), as training logs it."""
    mse = ((a.float().clamp(-1, 1) - b.float()) ** 2).flatten(1).mean(1) / 4
    return -10 * torch.log10(mse.clamp_min(1e-10))


def _gaussian(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    x = torch.arange(size, dtype=torch.float32) - size // 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    g = g / g.sum()
    return g[:, None] * g[None, :]


def ssim(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-image SSIM of two ``(b, H, W, 3)`` uint8 batches (mean over channels and pixels)."""
    x, y = _float(a), _float(b)
    c = x.shape[1]
    w = _gaussian().to(x.device).expand(c, 1, 11, 11)
    if min(x.shape[-2:]) > 5:  # reflect at the borders, as torchmetrics does
        x, y = (F.pad(t, (5, 5, 5, 5), mode="reflect") for t in (x, y))
        conv = lambda t: F.conv2d(t, w, groups=c)
    else:
        conv = lambda t: F.conv2d(t, w, groups=c, padding=5)
    mx, my = conv(x), conv(y)
    sxx = conv(x * x) - mx**2
    syy = conv(y * y) - my**2
    sxy = conv(x * y) - mx * my
    c1, c2 = 0.01**2, 0.03**2
    s = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx**2 + my**2 + c1) * (sxx + syy + c2))
    return s.flatten(1).mean(1)
