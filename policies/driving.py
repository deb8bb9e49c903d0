"""Simple driving policies for CarRacing-style actions ``[steer, gas, brake]``.

* :class:`TrackFollower` reads the real simulator's track and car state (for data collection).
* :class:`RoadCentroidDriver` sees only pixels: it steers toward the road in the front camera,
  so it can drive inside an imagined environment as well as a real one.
"""

from __future__ import annotations

import math

import numpy as np


class TrackFollower:
    """Pure-pursuit on the CarRacing track with speed control and optional exploration noise.

    Args:
        lookahead: track points ahead to aim at.
        target_speed: cruise speed (Box2D units/s).
        noise: std of Gaussian noise on steering (diverse data).
        seed: noise seed.
    """

    def __init__(self, lookahead: int = 6, target_speed: float = 45.0, noise: float = 0.1, seed: int = 0):
        self.lookahead, self.target_speed, self.noise = lookahead, target_speed, noise
        self.rng = np.random.default_rng(seed)
        self._speed = target_speed

    def reset(self, seed: int | None = None) -> None:
        if seed is not None:
            self.rng = np.random.default_rng(seed)
        # Each episode drives at its own pace so the data covers slow and fast driving.
        self._speed = self.target_speed * self.rng.uniform(0.6, 1.2)

    def __call__(self, obs, env) -> np.ndarray:
        u = env.unwrapped
        car = u.car.hull
        pos = np.asarray(car.position)
        track = np.asarray([(t[2], t[3]) for t in u.track])
        i = int(np.argmin(((track - pos) ** 2).sum(1)))
        target = track[(i + self.lookahead) % len(track)]
        heading = car.angle
        fwd = np.array([-math.sin(heading), math.cos(heading)])
        want = target - pos
        err = math.atan2(fwd[0] * want[1] - fwd[1] * want[0], fwd @ want)  # > 0: target to the left
        steer = float(np.clip(-2.0 * err + self.rng.normal(0, self.noise), -1, 1))
        speed = float(np.linalg.norm(car.linearVelocity))
        limit = self._speed * (0.6 if abs(err) > 0.35 else 1.0)
        gas = 0.5 if speed < limit else 0.0
        brake = 0.4 if speed > limit + 8 else 0.0
        return np.array([steer, gas, brake], dtype=np.float32)


class RoadCentroidDriver:
    """Steer toward the centroid of road-grey pixels in the lower part of the front camera.

    Args:
        camera: which camera of a dict observation to read (an array observation is used as is).
        gas: throttle while driving.
    """

    def __init__(self, camera: str = "CAM_FRONT", gas: float = 0.3, gain: float = 2.5):
        self.camera, self.gas, self.gain = camera, gas, gain

    def reset(self, seed: int | None = None) -> None:
        pass

    def __call__(self, obs, rng=None, t: int = 0) -> np.ndarray:
        """One action for one observation, or ``(n, 3)`` actions for a batch."""
        img = obs[self.camera] if isinstance(obs, dict) else obs
        img = np.asarray(img)
        if img.ndim == 4:  # a batch
            return np.stack([self(im) for im in img])
        h, w = img.shape[:2]
        low = img[h // 2 :].astype(np.int16)
        r, g, b = low[..., 0], low[..., 1], low[..., 2]
        road = (abs(r - g) < 18) & (abs(g - b) < 18) & (r > 60) & (r < 160)
        if road.sum() < 3:
            return np.array([0.0, 0.0, 0.2], dtype=np.float32)
        cols = np.nonzero(road)[1]
        offset = (cols.mean() - (w - 1) / 2) / (w / 2)  # > 0: road to the right
        return np.array([float(np.clip(self.gain * offset, -1, 1)), self.gas, 0.0], dtype=np.float32)
