"""Typed records passed between components (one vocabulary: obs, action, reward, terminated...).

Dimension legend: :mod:`wfm_sim.dims`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class LossAndLogs:
    """What a trainable component's ``forward(batch)`` returns."""

    loss: torch.Tensor
    """Scalar to minimise."""
    logs: dict[str, torch.Tensor] = field(default_factory=dict)
    """Detached scalar tensors for the progress bar and the JSONL log. They stay on the device:
    the training loop reads them at its log interval (:func:`host_logs`), so a step never
    waits on the device to log."""


def host_logs(logs: dict) -> dict[str, float]:
    """Logs as plain floats, tensors brought over in one device-to-host copy."""
    keys = [k for k, v in logs.items() if isinstance(v, torch.Tensor)]
    out = {k: float(v) for k, v in logs.items() if not isinstance(v, torch.Tensor)}
    if keys:
        vals = torch.stack([logs[k].detach().float().reshape(()) for k in keys]).cpu().tolist()
        out.update(zip(keys, vals))
    return {k: out[k] for k in logs}


@dataclass
class Batch:
    """A training batch of fixed-length windows (see ``wfm_sim.datasets.WindowDataset``)."""

    obs: torch.Tensor
    """``(b, t, v, H, W, 3)`` uint8 frames."""
    action: torch.Tensor
    """``(b, t, a)`` float32 (continuous) or ``(b, t)`` int64 (discrete); ``action[:, i]`` follows ``obs[:, i]``."""
    reward: torch.Tensor
    """``(b, t)`` float32; ``reward[:, i]`` is received after ``action[:, i]``."""
    terminated: torch.Tensor
    """``(b, t)`` bool; the episode ended after ``action[:, i]``."""
    success: torch.Tensor | None = None
    """``(b, t)`` bool task success after ``action[:, i]``, for manipulation data."""
    valid: torch.Tensor | None = None
    """``(b, t)`` bool; False marks steps whose reward/termination targets are unknown."""
    tokens: torch.Tensor | None = None
    """``(b, t, v, h, w)`` int64 token ids, when the batch comes from a token cache (then obs may be empty)."""
    caption: torch.Tensor | None = None
    """``(b, t)`` int64 scene caption ids after ``action[:, i]`` (stores recorded with captions)."""

    def to(self, device: torch.device | str) -> "Batch":
        moved = {k: (v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v) for k, v in self.__dict__.items()}
        return Batch(**moved)
