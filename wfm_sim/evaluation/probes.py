"""Probes trained on real frames and read on imagined ones: what a few frames say about the world.

A probe is a small convolutional net over a few frames (all cameras stacked as channels):

* the **inverse-dynamics probe** reads ``(frame t-2, frame t-1, frame t)`` and regresses the
  action taken between the last two (three frames show a change of velocity, two only a velocity). Trained on real frames, it recovers real actions with some R2; on imagined
  frames it recovers the commanded actions only as far as imagination shows their effect.
* an **event probe** reads ``(start frame, frame t)`` and classifies an event of the real
  simulator's state at step t (the car off the road; the puck moved from where it started).

Probes are trained from a fixed seed on real frames that no evaluation uses, so their figures on
real evaluation frames are the ceiling imagined frames are measured against.

Dimension legend: :mod:`wfm_sim.dims`.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


class FrameProbe(nn.Module):
    """``(r, t, v, H, W, 3)`` uint8 windows of ``t`` frames -> ``(r, out)`` predictions."""

    def __init__(self, frames: int, views: int, out: int, width: int = 32):
        super().__init__()
        c = frames * views * 3
        self.net = nn.Sequential(
            nn.Conv2d(c, width, 4, 2, 1), nn.GELU(),
            nn.Conv2d(width, 2 * width, 4, 2, 1), nn.GELU(),
            nn.Conv2d(2 * width, 2 * width, 4, 2, 1), nn.GELU(),
            nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(32 * width, 128), nn.GELU(), nn.Linear(128, out))

    def forward(self, windows: torch.Tensor) -> torch.Tensor:
        n, f, v, h, w, _ = windows.shape
        x = windows.permute(0, 1, 2, 5, 3, 4).reshape(n, f * v * 3, h, w).float() / 127.5 - 1.0
        return self.net(x)


def fit_probe(windows: np.ndarray, targets: np.ndarray, kind: str, steps: int = 400, batch: int = 64,
              seed: int = 0, lr: float = 2e-3, desc: str | None = None) -> "FrameProbe":
    """Train a :class:`FrameProbe` on frame windows ``(r, t, v, H, W, 3)``: ``kind`` 'regress' (targets
    ``(r, a)``, standardised inside) or 'classify' (targets ``(r,)`` bool)."""
    from tqdm.auto import tqdm

    if kind not in ("regress", "classify"):
        raise ValueError(f"kind must be 'regress' or 'classify', got {kind!r}")
    if len(windows) != len(targets) or len(windows) < 2:
        raise ValueError(f"a probe needs >= 2 frame windows with one target each, got {len(windows)} and {len(targets)}")
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    y = torch.as_tensor(np.asarray(targets, np.float32))
    out = y.shape[1] if kind == "regress" else 1
    probe = FrameProbe(windows.shape[1], windows.shape[2], out)
    if kind == "regress":
        probe.register_buffer("mean", y.mean(0))
        probe.register_buffer("std", y.std(0).clamp_min(1e-6))
        y = (y - probe.mean) / probe.std
    x = torch.as_tensor(windows)
    opt = torch.optim.AdamW(probe.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    for _ in tqdm(range(steps), desc=desc, unit="step", disable=desc is None, leave=False):
        idx = torch.randint(len(x), (min(batch, len(x)),), generator=gen)
        pred = probe(x[idx])
        if kind == "regress":
            loss = nn.functional.mse_loss(pred, y[idx])
        else:
            loss = nn.functional.binary_cross_entropy_with_logits(pred[:, 0], y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    probe.kind = kind
    return probe.eval()


@torch.no_grad()
def predict(probe: FrameProbe, windows: np.ndarray, batch: int = 256) -> np.ndarray:
    """Actions ``(r, a)`` (regression, in the targets' units) or event flags ``(r,)`` bool."""
    outs = [probe(torch.as_tensor(windows[i : i + batch])) for i in range(0, len(windows), batch)]
    out = torch.cat(outs) if outs else torch.zeros(0, 1)
    if probe.kind == "regress":
        return (out * probe.std + probe.mean).numpy()
    return (out[:, 0] > 0).numpy()


def r2(pred: np.ndarray, target: np.ndarray) -> float:
    """Mean over action dimensions of ``1 - SSE / SST`` (dimensions whose target does not vary are
    left out; NaN when none varies)."""
    pred, target = np.asarray(pred, np.float64), np.asarray(target, np.float64)
    sst = ((target - target.mean(0)) ** 2).sum(0)
    keep = sst > 1e-9
    if not keep.any():
        return float("nan")
    sse = ((pred - target) ** 2).sum(0)
    return float(np.mean(1.0 - sse[keep] / sst[keep]))
