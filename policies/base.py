"""Policies that act on batches of observations from an imagined (or real) env.

Every policy here is ``policy(obs, rng) -> actions``: ``obs`` is the env's batched observation
(an array, or a dict of arrays keyed by camera), ``rng`` a list of per-episode
``np.random.Generator`` (so a stochastic policy draws the same actions for an episode whatever
batch or worker it runs in), and ``actions`` a ``(n, ...)`` array.

Dimension legend: ``n`` episodes in the batch, ``T`` plan steps, ``A`` action dim.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from wfm_sim import checkpoint as ckpt


class RandomPolicy:
    """Uniform actions within the Box bounds (or uniform choices for Discrete)."""

    def __init__(self, space):
        self.space = space

    def __call__(self, obs, rng: list[np.random.Generator], t: int = 0) -> np.ndarray:
        s = self.space
        if hasattr(s, "n"):
            return np.asarray([int(g.integers(s.n)) for g in rng])
        return np.stack([g.uniform(s.low, s.high).astype(np.float32) for g in rng])


class PlanPolicy:
    """A fixed action sequence: ``(T, A)`` for every episode or ``(n, T, A)`` per episode."""

    def __init__(self, plan: np.ndarray):
        self.plan = np.asarray(plan)

    def __len__(self) -> int:
        return self.plan.shape[-2] if self.plan.ndim == 3 else self.plan.shape[0]

    def __call__(self, obs, rng, t: int = 0, rows: np.ndarray | None = None) -> np.ndarray:
        if t >= len(self):
            raise IndexError(f"the plan has {len(self)} steps; step {t} asked for more")
        if self.plan.ndim == 3:
            return self.plan[rows if rows is not None else slice(None), t]
        return np.repeat(self.plan[t][None], len(rng), axis=0)


@dataclass(frozen=True)
class ConvPolicyConfig:
    """A small convolutional actor for image observations (all cameras stacked on channels)."""

    image_size: int = 64
    cameras: int = 1
    action_dim: int = 3
    low: tuple[float, ...] = (-1.0, 0.0, 0.0)
    high: tuple[float, ...] = (1.0, 1.0, 1.0)
    width: int = 32


class ConvPolicy(nn.Module):
    """Deterministic actor: frames -> tanh-squashed action scaled to the bounds."""

    def __init__(self, cfg: ConvPolicyConfig):
        super().__init__()
        self.cfg = cfg
        w = cfg.width
        self.net = nn.Sequential(
            nn.Conv2d(3 * cfg.cameras, w, 4, 2, 1), nn.SiLU(), nn.Conv2d(w, 2 * w, 4, 2, 1), nn.SiLU(),
            nn.Conv2d(2 * w, 2 * w, 4, 2, 1), nn.SiLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
            nn.Linear(2 * w, cfg.action_dim),
        )
        self.register_buffer("low", torch.tensor(cfg.low), persistent=False)
        self.register_buffer("high", torch.tensor(cfg.high), persistent=False)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        """``(n, V, H, W, 3)`` uint8 -> ``(n, A)`` actions within bounds."""
        x = frames.float().div(127.5).sub(1).permute(0, 1, 4, 2, 3).flatten(1, 2)
        a = torch.tanh(self.net(x))
        return self.low + (a + 1) / 2 * (self.high - self.low)

    @torch.no_grad()
    def __call__(self, obs, rng=None, t: int = 0) -> np.ndarray:  # type: ignore[override]
        if isinstance(obs, dict):
            obs = np.stack([obs[k] for k in obs], axis=1)
        elif np.ndim(obs) == 4:
            obs = np.asarray(obs)[:, None]
        dev = next(self.parameters()).device
        return self.forward(torch.as_tensor(np.asarray(obs), device=dev)).cpu().numpy()

    def save_pretrained(self, path: str | Path) -> Path:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        ckpt.save_tensors(path / "model.safetensors", self.state_dict(), {"format": "wfm_sim.ConvPolicy"})
        ckpt.atomic_write_json(path / "config.json", {"format": "wfm_sim.ConvPolicy", "config": ckpt.to_dict(self.cfg)})
        return path

    @classmethod
    def from_pretrained(cls, path: str | Path) -> "ConvPolicy":
        from wfm_sim.models.world_model import load_state_strict

        meta = ckpt.read_json(Path(path) / "config.json", "wfm_sim.ConvPolicy")
        policy = cls(ckpt.from_dict(ConvPolicyConfig, meta["config"]))
        load_state_strict(policy, ckpt.load_tensors(Path(path) / "model.safetensors"), Path(path))
        return policy.eval()
