"""The ``Episode`` record and the store's schema constants (one vocabulary with the env and model).

Dimension legend: :mod:`wfm_sim.dims`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

SCHEMA_VERSION = 2
CORE_KEYS = ("action", "reward", "terminated", "truncated")
# nuScenes camera names, in the order multi-camera sources render them.
NUSCENES_CAMERAS = ("CAM_FRONT", "CAM_FRONT_LEFT", "CAM_FRONT_RIGHT", "CAM_BACK", "CAM_BACK_LEFT", "CAM_BACK_RIGHT")


@dataclass
class Episode:
    """One complete episode: row i holds ``obs_i``, ``action_i`` and what followed that action.

    Attributes:
        obs: camera name -> ``(s, H, W, 3)`` uint8 frames.
        action: ``(s, a)`` float32 (Box) or ``(s,)`` int64 (Discrete).
        reward: ``(s,)`` float32, received after ``action[i]``.
        terminated: ``(s,)`` bool, the episode ended after ``action[i]``.
        truncated: ``(s,)`` bool, cut by a time limit after ``action[i]``.
        extras: optional per-step arrays with time on axis 0 (``success``, ``ego_pose``, ``state``).
        seed: the reset seed, when known.
        key: the episode's stable identity in a store (source or generator, model, policy, seed);
            writers skip an episode whose key a store holds already.
        origin: where the episode started (a real env's seed, or an imagined env's context).
        final_obs: camera name -> ``(H, W, 3)``, the frame after the last action (not stored).
    """

    obs: dict[str, np.ndarray]
    action: np.ndarray
    reward: np.ndarray
    terminated: np.ndarray
    truncated: np.ndarray
    extras: dict[str, np.ndarray] = field(default_factory=dict)
    seed: int | None = None
    key: str | None = None
    origin: str | None = None
    final_obs: dict[str, np.ndarray] | None = None

    def __len__(self) -> int:
        return int(self.reward.shape[0])

    @property
    def cameras(self) -> tuple[str, ...]:
        return tuple(self.obs)

    def total_reward(self) -> float:
        return float(np.asarray(self.reward, dtype=np.float64).sum())
