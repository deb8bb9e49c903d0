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


def as_uint8_frames(frames, where: str) -> np.ndarray:
    """Frames as uint8 RGB, refusing what would be stored wrong without a word.

    uint8 is kept; floats in [0, 1] are scaled to 0..255 (rounded); integers in 0..255 are cast.
    Anything else (floats outside [0, 1] or not finite, integers outside 0..255, other dtypes)
    raises, naming ``where``, the dtype and the range found: a cast would turn [0, 1] floats
    black and wrap integers modulo 256.
    """
    a = np.asarray(frames)
    if a.dtype == np.uint8:
        return a
    if a.size == 0:
        return a.astype(np.uint8)
    if np.issubdtype(a.dtype, np.floating):
        if not np.isfinite(a).all():
            raise ValueError(f"{where}: frames hold NaN or inf ({a.dtype}); expected uint8, or floats in [0, 1]")
        lo, hi = float(a.min()), float(a.max())
        if lo >= 0.0 and hi <= 1.0:
            return np.round(a * 255.0).astype(np.uint8)
        raise ValueError(f"{where}: {a.dtype} frames must lie in [0, 1] (they are scaled to 0..255), got "
                         f"[{lo:g}, {hi:g}]; give uint8 frames, or floats in [0, 1]")
    if np.issubdtype(a.dtype, np.integer) and not np.issubdtype(a.dtype, np.bool_):
        lo, hi = int(a.min()), int(a.max())
        if lo >= 0 and hi <= 255:
            return a.astype(np.uint8)
        raise ValueError(f"{where}: {a.dtype} frames must lie in 0..255, got [{lo}, {hi}]")
    raise TypeError(f"{where}: frames must be uint8 (or floats in [0, 1], or integers in 0..255), got {a.dtype}")
