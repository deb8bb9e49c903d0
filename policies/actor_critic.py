"""A pixel actor-critic: what the imagination trainer optimises and what then drives the real twin.

The network sees every camera of the rig (stacked on channels, cameras in sorted order as
Gymnasium's ``Dict`` space orders them), shares one convolutional encoder between a policy
head and a value head, and acts in the env's own action space:

* Box actions: a diagonal Gaussian over pre-squash values ``u``; the env gets
  ``low + (tanh(u) + 1) / 2 * (high - low)``. Log-probabilities are taken on ``u`` (the tanh
  Jacobian cancels in PPO's ratio). Deterministic acting uses the mean.
* Discrete actions: a categorical over the logits; deterministic acting takes the argmax.

Its checkpoint (``config.json`` + ``model.safetensors``) records the spaces it was trained for,
so a policy for another rig or action space is refused by name instead of acting nonsense.

Dimension legend: :mod:`wfm_sim.dims`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.distributions import Categorical, Normal
from wfm_sim.policies.base import Policy

from wfm_sim import checkpoint as ckpt
from wfm_sim.models.limits import POLICY_LIMITS, check_limits
from wfm_sim.models.world_model import load_state_strict

FORMAT = "wfm_sim.ActorCritic"


@dataclass(frozen=True)
class ActorCriticConfig:
    """Spaces the policy acts in, and its size."""

    cameras: tuple[str, ...] = ("CAM_FRONT",)
    """Camera names, sorted (the order of the env's ``Dict`` observation)."""
    image_size: int = 64
    action_kind: str = "box"
    """``box`` or ``discrete``."""
    action_dim: int = 3
    """Box: action features. Discrete: the number of actions."""
    low: tuple[float, ...] = (-1.0, 0.0, 0.0)
    high: tuple[float, ...] = (1.0, 1.0, 1.0)
    width: int = 32
    """Channels of the first conv layer."""
    hidden: int = 256
    init_log_std: float = -0.5
    trained_in: str = ""
    """The world model it was trained in (name and content hash), for its card."""

    def __post_init__(self):
        check_limits(self, ("image_size", "action_dim", "width", "hidden"), POLICY_LIMITS)
        if not 1 <= len(self.cameras) <= POLICY_LIMITS["cameras"][1]:
            raise ValueError(f"ActorCriticConfig.cameras must name 1..64 cameras, got {len(self.cameras)}")
        if self.action_kind not in ("box", "discrete"):
            raise ValueError(f"action_kind must be 'box' or 'discrete', got {self.action_kind!r}")
        if self.action_kind == "box" and not len(self.low) == len(self.high) == self.action_dim:
            raise ValueError(f"low/high must have action_dim={self.action_dim} entries, got {self.low}, {self.high}")
        if list(self.cameras) != sorted(self.cameras):
            raise ValueError(f"cameras must be sorted (the Dict space's order), got {list(self.cameras)}")

    @classmethod
    def for_spaces(cls, cameras, image_size: int, action_space, **kw) -> "ActorCriticConfig":
        """The config for an env with these cameras and this Gymnasium action space."""
        from gymnasium import spaces

        if isinstance(action_space, spaces.Discrete):
            return cls(tuple(sorted(cameras)), image_size, "discrete", int(action_space.n), (), (), **kw)
        if isinstance(action_space, spaces.Box) and len(action_space.shape) == 1:
            return cls(tuple(sorted(cameras)), image_size, "box", int(action_space.shape[0]),
                       tuple(float(x) for x in action_space.low), tuple(float(x) for x in action_space.high), **kw)
        raise ValueError(f"the actor-critic acts in Box (A,) or Discrete spaces, got {action_space}")


class ActorCritic(nn.Module, Policy):
    """Shared conv encoder, Gaussian / categorical policy head, value head."""

    def __init__(self, cfg: ActorCriticConfig):
        super().__init__()
        self.cfg = cfg
        w, v = cfg.width, len(cfg.cameras)
        self.encoder = nn.Sequential(  # (b, 3V, 64, 64) -> (n, 4w * 4 * 4)
            nn.Conv2d(3 * v, w, 4, 2, 1), nn.SiLU(), nn.Conv2d(w, 2 * w, 4, 2, 1), nn.SiLU(),
            nn.Conv2d(2 * w, 4 * w, 4, 2, 1), nn.SiLU(), nn.Conv2d(4 * w, 4 * w, 4, 2, 1), nn.SiLU(),
            nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(4 * w * 16, cfg.hidden), nn.SiLU(),
        )
        self.pi = nn.Linear(cfg.hidden, cfg.action_dim)
        self.v = nn.Linear(cfg.hidden, 1)
        nn.init.zeros_(self.pi.weight)
        nn.init.zeros_(self.pi.bias)
        self.log_std = nn.Parameter(torch.full((cfg.action_dim,), cfg.init_log_std)) if cfg.action_kind == "box" else None
        if cfg.action_kind == "box":
            self.register_buffer("low", torch.tensor(cfg.low), persistent=False)
            self.register_buffer("high", torch.tensor(cfg.high), persistent=False)

    # ------------------------------------------------------------------ inputs
    def frames(self, obs) -> torch.Tensor:
        """An env observation (numpy or torch; one camera's array, or a dict by camera) ->
        ``(b, v, H, W, 3)`` uint8 on this module's device, checked against the trained rig."""
        dev = self.v.weight.device
        if isinstance(obs, dict):
            missing = [c for c in self.cfg.cameras if c not in obs]
            if missing or len(obs) != len(self.cfg.cameras):
                raise ValueError(f"this policy was trained on cameras {list(self.cfg.cameras)}; the observation has "
                                 f"{sorted(obs)}")
            x = torch.stack([torch.as_tensor(np.asarray(obs[c]) if not torch.is_tensor(obs[c]) else obs[c], device=dev)
                             for c in self.cfg.cameras], dim=1)
        else:
            x = torch.as_tensor(obs if torch.is_tensor(obs) else np.asarray(obs), device=dev)
            x = x[:, None] if x.ndim == 4 else x
        want = (len(self.cfg.cameras), self.cfg.image_size, self.cfg.image_size, 3)
        if tuple(x.shape[1:]) != want:
            raise ValueError(f"this policy takes (n, {', '.join(map(str, want))}) uint8 frames "
                             f"(cameras {list(self.cfg.cameras)}), got {tuple(x.shape)}")
        return x

    def features(self, frames: torch.Tensor) -> torch.Tensor:
        x = frames.float().div(127.5).sub(1)  # (b, v, H, W, 3) in [-1, 1]
        x = x.permute(0, 1, 4, 2, 3).flatten(1, 2)  # (b, 3V, H, W)
        return self.encoder(x)

    # ------------------------------------------------------------------ heads
    def distribution(self, h: torch.Tensor):
        out = self.pi(h)
        if self.cfg.action_kind == "discrete":
            return Categorical(logits=out)
        return Normal(out, self.log_std.exp().expand_as(out))

    def value(self, h: torch.Tensor) -> torch.Tensor:
        return self.v(h).squeeze(-1)

    def to_env(self, u: torch.Tensor) -> torch.Tensor:
        """A sample of the distribution -> the env's action."""
        if self.cfg.action_kind == "discrete":
            return u.long()
        return self.low + (torch.tanh(u) + 1) / 2 * (self.high - self.low)

    def log_prob(self, dist, u: torch.Tensor) -> torch.Tensor:
        lp = dist.log_prob(u)
        return lp if self.cfg.action_kind == "discrete" else lp.sum(-1)

    def entropy(self, dist) -> torch.Tensor:
        e = dist.entropy()
        return e if self.cfg.action_kind == "discrete" else e.sum(-1)

    # ------------------------------------------------------------------ Policy interface
    def reset(self, seeds, rows=None, episodes=None) -> None:
        pass  # deterministic acting

    @torch.no_grad()
    def __call__(self, obs, info=None) -> np.ndarray:
        dist = self.distribution(self.features(self.frames(obs)))
        u = dist.probs.argmax(-1) if self.cfg.action_kind == "discrete" else dist.mean
        return self.to_env(u).cpu().numpy()

    def check_spaces(self, cameras, image_size: int, action_space) -> None:
        """Refuse an env whose rig or action space differs from the one this policy was trained for."""
        want = ActorCriticConfig.for_spaces(cameras, image_size, action_space)
        mine = (self.cfg.cameras, self.cfg.image_size, self.cfg.action_kind, self.cfg.action_dim, self.cfg.low, self.cfg.high)
        theirs = (want.cameras, want.image_size, want.action_kind, want.action_dim, want.low, want.high)
        if mine != theirs:
            raise ValueError(f"this policy acts on cameras {list(mine[0])} at {mine[1]}px with {mine[2]} actions "
                             f"(dim {mine[3]}, low {list(mine[4])}, high {list(mine[5])}); the env has cameras "
                             f"{list(theirs[0])} at {theirs[1]}px with {theirs[2]} actions (dim {theirs[3]}, low "
                             f"{list(theirs[4])}, high {list(theirs[5])}): use a policy trained for this model")

    # ------------------------------------------------------------------ checkpoints
    def save_pretrained(self, path: str | Path) -> Path:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        ckpt.save_tensors(path / "model.safetensors", {k: v.detach().cpu() for k, v in self.state_dict().items()},
                          {"format": FORMAT})
        ckpt.atomic_write_json(path / "config.json", {"format": FORMAT, "config": ckpt.to_dict(self.cfg)})
        return path

    @classmethod
    def from_pretrained(cls, path: str | Path, device: str = "cpu") -> "ActorCritic":
        meta = ckpt.read_json(Path(path) / "config.json", FORMAT)
        policy = cls(ckpt.from_dict(ActorCriticConfig, meta["config"]))
        load_state_strict(policy, ckpt.load_tensors(Path(path) / "model.safetensors"), Path(path))
        return policy.to(device).eval()
