"""Ego-centric perspective cameras for CarRacing, rendered from the simulator's own state.

Each camera is a pinhole at the car's position, ``height`` above the ground, looking along the
car's heading turned by the camera's yaw. Ground polygons (grass checkers, road tiles, kerbs)
from ``env.unwrapped`` are clipped against the near plane, projected and filled with OpenCV;
the sky is a flat band above the horizon. All cameras see the same instant.

Coordinates: Box2D world units; the car's forward vector at angle 0 is +y.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

# Yaw (radians, counter-clockwise = left) per camera name.
RIG_4 = {"CAM_FRONT": 0.0, "CAM_BACK": math.pi, "CAM_LEFT": math.pi / 2, "CAM_RIGHT": -math.pi / 2}
RIG_6 = {"CAM_FRONT": 0.0, "CAM_FRONT_LEFT": math.radians(55), "CAM_FRONT_RIGHT": math.radians(-55),
         "CAM_BACK": math.pi, "CAM_BACK_LEFT": math.radians(110), "CAM_BACK_RIGHT": math.radians(-110)}
SKY = (150, 190, 235)


@dataclass(frozen=True)
class CameraRig:
    """Camera intrinsics shared by all views."""

    yaws: tuple[tuple[str, float], ...] = tuple(RIG_4.items())
    height: float = 2.2
    fov_deg: float = 100.0
    horizon: float = 0.38
    """Horizon row as a fraction of the image height (a downward pitch)."""
    near: float = 0.5
    far: float = 90.0
    render_size: int = 128
    """Rendered side before the area-resize to the output size (anti-aliasing)."""

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(n for n, _ in self.yaws)


def _clip_near(poly: np.ndarray, near: float) -> np.ndarray:
    """Sutherland-Hodgman clip of a ``(k, 2)`` (forward, left) polygon to forward >= near."""
    out = []
    k = len(poly)
    for i in range(k):
        a, b = poly[i], poly[(i + 1) % k]
        a_in, b_in = a[0] >= near, b[0] >= near
        if a_in:
            out.append(a)
        if a_in != b_in:
            t = (near - a[0]) / (b[0] - a[0])
            out.append(a + t * (b - a))
    return np.asarray(out)


class CarRacingCameras:
    """Render a camera rig from a ``CarRacing`` env's state."""

    def __init__(self, rig: CameraRig = CameraRig(), size: int = 64):
        self.rig, self.size = rig, size
        self._static: list[tuple[np.ndarray, tuple[int, int, int]]] | None = None
        self._track_id = None

    def _polygons(self, env) -> tuple[np.ndarray, np.ndarray]:
        """All ground polygons as ``(P, 4, 2)`` vertices and ``(P, 3)`` colours (grass then road)."""
        if self._track_id is not id(env.road_poly) or self._static is None:
            from gymnasium.envs.box2d.car_racing import GRASS_DIM

            grass = []
            for x in range(-20, 20, 2):
                for y in range(-20, 20, 2):
                    x0, y0 = GRASS_DIM * x, GRASS_DIM * y
                    grass.append([(x0 + GRASS_DIM, y0), (x0, y0), (x0, y0 + GRASS_DIM), (x0 + GRASS_DIM, y0 + GRASS_DIM)])
            polys = [np.asarray(p, dtype=np.float64) for p in grass]
            colors = [tuple(int(c) for c in env.grass_color)] * len(grass)
            for poly, color in env.road_poly:
                polys.append(np.asarray(poly, dtype=np.float64)[:4])
                colors.append(tuple(int(c) for c in color))
            self._static = (np.stack(polys), np.asarray(colors, dtype=np.int64))
            self._track_id = id(env.road_poly)
        return self._static

    def render(self, env) -> dict[str, np.ndarray]:
        """``{camera: (size, size, 3) uint8}`` for the env's current state."""
        env = env.unwrapped
        polys, colors = self._polygons(env)
        pos = np.asarray(env.car.hull.position, dtype=np.float64)
        ang = float(env.car.hull.angle)
        bg = tuple(int(c) for c in env.bg_color)
        return {name: self._view(polys, colors, pos, ang + yaw, bg) for name, yaw in self.rig.yaws}

    def _view(self, polys, colors, pos, heading, bg) -> np.ndarray:
        r = self.rig
        s = r.render_size
        fwd = np.array([-math.sin(heading), math.cos(heading)])
        left = np.array([-fwd[1], fwd[0]])
        rel = polys - pos  # (P, 4, 2)
        cam = np.stack((rel @ fwd, rel @ left), axis=-1)  # (P, 4, 2): forward, left
        f, lat = cam[..., 0], cam[..., 1]
        tan = math.tan(math.radians(r.fov_deg) / 2)
        visible = (f.max(1) > r.near) & (f.min(1) < r.far)
        visible &= ~((lat.min(1) > f.max(1).clip(r.near) * tan * 1.5) | (lat.max(1) < -f.max(1).clip(r.near) * tan * 1.5))
        img = np.empty((s, s, 3), dtype=np.uint8)
        hz = int(r.horizon * s)
        img[:hz] = SKY
        img[hz:] = bg
        fx = (s / 2) / tan
        for i in np.nonzero(visible)[0]:
            p = cam[i]
            if p[:, 0].min() < r.near:
                p = _clip_near(p, r.near)
                if len(p) < 3:
                    continue
            u = s / 2 - fx * p[:, 1] / p[:, 0]
            v = hz + fx * r.height / p[:, 0]
            pts = np.round(np.stack((u, v), -1) * 16).astype(np.int32)  # 4 fractional bits
            cv2.fillPoly(img, [pts], tuple(int(c) for c in colors[i]), lineType=cv2.LINE_AA, shift=4)
        return cv2.resize(img, (self.size, self.size), interpolation=cv2.INTER_AREA)
