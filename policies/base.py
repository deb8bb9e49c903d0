"""The one policy interface, for real and imagined envs alike.

A :class:`Policy` is batched: ``policy(obs, info) -> actions`` maps a vector env's observation
(an array ``(b, ...)``, or a dict of arrays keyed by camera) and its info dict to ``(b, ...)``
actions. Every policy takes both, and every caller passes both: learned policies ignore
``info``; scripted ones read the simulator's state from it.
``policy.reset(seeds, rows)`` starts episodes: row ``rows[j]`` begins an episode seeded
``seeds[j]``, and a stochastic policy draws that episode's randomness from its own generator
(``np.random.default_rng([seed, 7])``), so an episode's actions do not depend on the batch,
the worker or the other episodes beside it. The same object drives a real twin, an imagined
env, a Ray worker and the recorder.

A :class:`ScriptedPolicy` reads the simulator's privileged state, ``info["privileged"]``. Only
real twins have that state; an imagined env does not, and a scripted policy says so (its
``privileged`` flag lets a caller refuse it up front).

Dimension legend: :mod:`wfm_sim.dims`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn

from wfm_sim import checkpoint as ckpt
from wfm_sim.models.limits import POLICY_LIMITS, check_limits
from wfm_sim.models.world_model import load_state_strict


def batch_size(obs) -> int:
    """Rows in a batched observation (an array or a dict of arrays)."""
    if isinstance(obs, dict):
        return len(next(iter(obs.values())))
    return len(obs)


class Policy:
    """The policy protocol: batched ``(obs, info) -> actions`` with per-episode randomness."""

    privileged = False
    """True for scripted policies that read ``info["privileged"]`` (real simulators only)."""

    def reset(self, seeds: Sequence[int], rows: Sequence[int] | None = None,
              episodes: Sequence[int] | None = None) -> None:
        """Start episodes: row ``rows[j]`` (default ``j``) begins episode ``episodes[j]`` seeded ``seeds[j]``."""

    def __call__(self, obs, info=None) -> np.ndarray:
        """``(b, ...)`` actions for a batched observation; ``info`` is the env's info dict."""
        raise NotImplementedError

    def check_spaces(self, cameras, image_size: int, action_space) -> None:
        """Refuse a camera rig or action space this policy cannot act in (default: any fits)."""

    @staticmethod
    def _rows(seeds, rows) -> list[int]:
        rows = list(range(len(seeds))) if rows is None else [int(r) for r in rows]
        if len(rows) != len(seeds):
            raise ValueError(f"reset got {len(seeds)} seeds for {len(rows)} rows")
        return rows


class SeededPolicy(Policy):
    """A policy with one ``np.random.Generator`` per row, seeded per episode by :meth:`reset`
    (``default_rng([seed, stream])``: a subclass with another ``stream`` draws independently)."""

    stream = 7

    def __init__(self):
        self._rngs: dict[int, np.random.Generator] = {}

    def reset(self, seeds, rows=None, episodes=None) -> None:
        for r, s in zip(self._rows(seeds, rows), seeds):
            self._rngs[r] = np.random.default_rng([int(s), self.stream])

    def rng(self, row: int) -> np.random.Generator:
        if row not in self._rngs:
            raise RuntimeError(f"{type(self).__name__}: row {row} has no episode seed; call "
                               "policy.reset(seeds) at the start of every episode (one seed per row)")
        return self._rngs[row]

    def rngs(self, n: int) -> list[np.random.Generator]:
        return [self.rng(r) for r in range(n)]


class RandomPolicy(SeededPolicy):
    """Uniform actions within the Box bounds (or uniform choices for Discrete)."""

    def __init__(self, space):
        super().__init__()
        self.space = space

    def __call__(self, obs, info=None) -> np.ndarray:
        s, gens = self.space, self.rngs(batch_size(obs))
        if hasattr(s, "n"):
            return np.asarray([int(g.integers(s.n)) for g in gens])
        return np.stack([g.uniform(s.low, s.high).astype(np.float32) for g in gens])


class ConstantPolicy(Policy):
    """The same action at every step of every episode (``const:A0,A1,...`` where a policy is named):
    hard steering, braking, driving straight."""

    def __init__(self, action):
        self.action = np.asarray(action, np.float32)
        if self.action.ndim != 1 or not len(self.action) or not np.isfinite(self.action).all():
            raise ValueError(f"a constant action must be a finite 1-d vector, got {action!r}")

    def __call__(self, obs, info=None) -> np.ndarray:
        return np.tile(self.action, (batch_size(obs), 1))


class PlanPolicy(Policy):
    """A fixed open-loop action sequence: ``(s, a)`` for every episode, or ``(i, s, a)`` with
    episode ``e`` of a request playing ``plan[e]``. Each row keeps its own step counter.

    ``group=k`` plays the plan on a model that takes k actions per step (grouped time): each
    call returns the next ``(k, a)`` actions per row, the last action held if the plan ends
    inside a group.
    """

    def __init__(self, plan: np.ndarray, group: int = 1):
        self.plan = np.asarray(plan)
        if self.plan.ndim not in (2, 3):
            raise ValueError(f"a plan must be (T, A) or (episodes, T, A), got shape {self.plan.shape}")
        if group < 1:
            raise ValueError(f"group must be >= 1, got {group}")
        self.group = int(group)
        self._t: dict[int, int] = {}
        self._episode: dict[int, int] = {}

    def __len__(self) -> int:
        """Calls the plan lasts (steps of ``group`` actions)."""
        return -(-self.plan.shape[-2] // self.group)

    def grouped(self, k: int) -> "PlanPolicy":
        """The same plan, ``k`` actions per call."""
        return PlanPolicy(self.plan, group=k)

    def reset(self, seeds, rows=None, episodes=None) -> None:
        rows = self._rows(seeds, rows)
        episodes = rows if episodes is None else [int(e) for e in episodes]
        for r, e in zip(rows, episodes):
            if self.plan.ndim == 3 and not 0 <= e < len(self.plan):
                raise ValueError(f"the plan holds {len(self.plan)} episodes; episode {e} asked for one")
            self._t[r], self._episode[r] = 0, e

    def __call__(self, obs, info=None) -> np.ndarray:
        n = batch_size(obs)
        out = []
        for r in range(n):
            if r not in self._t:
                raise RuntimeError("PlanPolicy: call reset(seeds) at the start of every episode")
            t = self._t[r]
            if t >= len(self):
                raise IndexError(f"the plan has {len(self)} steps; row {r} asked for step {t}")
            plan = self.plan[self._episode[r]] if self.plan.ndim == 3 else self.plan
            if self.group == 1:
                out.append(plan[t])
            else:
                idx = np.minimum(np.arange(t * self.group, (t + 1) * self.group), len(plan) - 1)
                out.append(plan[idx])
            self._t[r] = t + 1
        return np.stack(out)


class ScriptedPolicy(SeededPolicy):
    """A scripted expert that reads simulator state: ``policy(obs, info) -> actions``.

    ``info["privileged"]`` holds one state object per row (what a real twin puts in its info).
    """

    privileged = True

    def __call__(self, obs, info=None) -> np.ndarray:
        states = None if info is None else info.get("privileged")
        if states is None:
            raise ValueError(f"{type(self).__name__} is a scripted expert: it reads the simulator's state "
                             "(info['privileged']), which only a real twin env provides; in imagination use a "
                             "pixel policy (ConvPolicy, RoadCentroidDriver) or a plan")
        states = np.atleast_1d(np.asarray(states, dtype=object))
        return np.stack([self.act(i, s) for i, s in enumerate(states)])

    def act(self, row: int, state) -> np.ndarray:
        raise NotImplementedError


class SegmentSchedule:
    """Per-row schedules of behaviour segments, each episode's drawn from its own generator: what
    the ``mixed`` data policies play (a behaviour for some steps, then another, weighted).

    Args:
        modes, weights: the behaviours and how often each follows a segment.
        horizon: steps a schedule covers (the source's episode length).
    """

    def __init__(self, modes: tuple[str, ...], weights: tuple[float, ...], horizon: int):
        self.modes, self.weights, self.horizon = modes, weights, horizon
        self.steps: dict[int, list[tuple[str, float]]] = {}
        self._t: dict[int, int] = {}

    def draw(self, row: int, rng: np.random.Generator, first: str, segment) -> None:
        """Row ``row``'s schedule: segments from ``first`` on, ``segment(mode) -> (length, parameter)``
        drawing from ``rng``, until ``horizon`` steps are covered."""
        steps: list[tuple[str, float]] = []
        mode = first
        while len(steps) < self.horizon:
            length, param = segment(mode)
            steps += [(mode, param)] * length
            mode = str(rng.choice(self.modes, p=self.weights))
        self.steps[row], self._t[row] = steps, 0

    def next(self, row: int) -> tuple[int, str, float]:
        """The row's step index, mode and parameter now (the last segment holds past the horizon)."""
        t, steps = self._t[row], self.steps[row]
        self._t[row] = t + 1
        mode, param = steps[min(t, len(steps) - 1)]
        return t, mode, param


@dataclass(frozen=True)
class ConvPolicyConfig:
    """A small convolutional actor for image observations (all cameras stacked on channels)."""

    image_size: int = 64
    cameras: int = 1
    action_dim: int = 3
    low: tuple[float, ...] = (-1.0, 0.0, 0.0)
    high: tuple[float, ...] = (1.0, 1.0, 1.0)
    width: int = 32
    head: str = "pool"
    """``"pool"``: global average pooling of the last feature map (cheap, blind to where things
    are); ``"keypoints"``: a spatial softmax over ``keypoints`` feature maps at half resolution,
    whose expected image positions feed an MLP (Levine et al. 2016, "End-to-end training of deep
    visuomotor policies"): for manipulation, where the action depends on where a small object is."""
    keypoints: int = 32

    def __post_init__(self):
        check_limits(self, limits=POLICY_LIMITS)
        if self.head not in ("pool", "keypoints"):
            raise ValueError(f"ConvPolicyConfig.head must be 'pool' or 'keypoints', got {self.head!r}")
        if len(self.low) != self.action_dim or len(self.high) != self.action_dim:
            raise ValueError(f"ConvPolicyConfig: low and high need action_dim={self.action_dim} entries, "
                             f"got {len(self.low)} and {len(self.high)}")


def camera_stack(obs, cameras: Sequence[str] | None = None):
    """A vector env's observation as ``(b, v, H, W, 3)``: a Dict's cameras in ``cameras`` order
    (default: sorted by name, as gymnasium's Dict space orders them); one camera's ``(b, H, W, 3)``
    gains the ``V`` axis; anything else is returned as it is, for the caller to check."""
    if isinstance(obs, dict):
        return np.stack([np.asarray(obs[k]) for k in (cameras or sorted(obs))], axis=1)
    return np.asarray(obs)[:, None] if np.ndim(obs) == 4 else obs


class SpatialSoftmax(nn.Module):
    """``(b, K, H, W)`` feature maps -> ``(b, 2K)``: each map's softmax-weighted mean (x, y) in [-1, 1]."""

    def __init__(self, size: int):
        super().__init__()
        lin = torch.linspace(-1.0, 1.0, size)
        self.register_buffer("grid", torch.stack(torch.meshgrid(lin, lin, indexing="xy"), -1).reshape(-1, 2),
                             persistent=False)  # (H*W, 2) as (x, y)

    def forward(self, maps: torch.Tensor) -> torch.Tensor:
        attn = maps.flatten(2).softmax(-1)  # (b, K, H*W)
        return (attn @ self.grid).flatten(1)


class ConvPolicy(nn.Module, Policy):
    """Deterministic pixel actor: frames -> tanh-squashed action scaled to the bounds."""

    def __init__(self, cfg: ConvPolicyConfig):
        super().__init__()
        self.cfg = cfg
        w = cfg.width
        c = 3 * cfg.cameras
        if cfg.head == "pool":
            self.net = nn.Sequential(
                nn.Conv2d(c, w, 4, 2, 1), nn.SiLU(), nn.Conv2d(w, 2 * w, 4, 2, 1), nn.SiLU(),
                nn.Conv2d(2 * w, 2 * w, 4, 2, 1), nn.SiLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                nn.Linear(2 * w, cfg.action_dim),
            )
        else:  # full-resolution first layer: a 2x2-pixel object still lights a feature
            self.net = nn.Sequential(
                nn.Conv2d(c, w, 3, 1, 1), nn.SiLU(), nn.Conv2d(w, w, 4, 2, 1), nn.SiLU(),
                nn.Conv2d(w, w, 3, 1, 1), nn.SiLU(), nn.Conv2d(w, cfg.keypoints, 1),
                SpatialSoftmax(cfg.image_size // 2), nn.Linear(2 * cfg.keypoints, 8 * w), nn.SiLU(),
                nn.Linear(8 * w, cfg.action_dim),
            )
        self.register_buffer("low", torch.tensor(cfg.low), persistent=False)
        self.register_buffer("high", torch.tensor(cfg.high), persistent=False)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        """``(b, v, H, W, 3)`` uint8 -> ``(b, a)`` actions within bounds."""
        x = frames.float().div(127.5).sub(1).permute(0, 1, 4, 2, 3).flatten(1, 2)
        a = torch.tanh(self.net(x))
        return self.low + (a + 1) / 2 * (self.high - self.low)

    def reset(self, seeds, rows=None, episodes=None) -> None:
        pass  # deterministic

    @torch.no_grad()
    def __call__(self, obs, info=None) -> np.ndarray:
        obs = camera_stack(obs)
        want = (self.cfg.cameras, self.cfg.image_size, self.cfg.image_size, 3)
        if tuple(np.shape(obs)[1:]) != want:
            raise ValueError(f"ConvPolicy takes (n, {', '.join(map(str, want))}) frames "
                             f"({self.cfg.cameras} cameras), got {tuple(np.shape(obs))}")
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
        meta = ckpt.read_json(Path(path) / "config.json", "wfm_sim.ConvPolicy")
        policy = cls(ckpt.from_dict(ConvPolicyConfig, meta["config"]))
        load_state_strict(policy, ckpt.load_tensors(Path(path) / "model.safetensors"), Path(path))
        return policy.eval()


class CallablePolicy(Policy):
    """A user's function as a policy: ``fn(obs)`` or ``fn(obs, info)``, whichever it takes."""

    def __init__(self, fn):
        import inspect

        self.fn = fn
        try:
            params = inspect.signature(fn).parameters.values()
            positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
            self.takes_info = len(positional) >= 2 or any(p.kind == p.VAR_POSITIONAL for p in params)
        except (TypeError, ValueError):  # builtins without a signature
            self.takes_info = False
        reset = getattr(fn, "reset", None)
        self._reset = reset if callable(reset) else None

    def reset(self, seeds, rows=None, episodes=None) -> None:
        if self._reset is not None:
            self._reset(seeds, rows)

    def __call__(self, obs, info=None) -> np.ndarray:
        return self.fn(obs, info) if self.takes_info else self.fn(obs)


def as_policy(obj) -> Policy:
    """``obj`` if it is a :class:`Policy`, else a :class:`CallablePolicy` around it."""
    if isinstance(obj, Policy):
        return obj
    if not callable(obj):
        raise TypeError(f"a policy is a wfm_sim Policy or a callable obs -> actions, got {type(obj).__name__}")
    return CallablePolicy(obj)
