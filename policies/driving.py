"""Driving policies for CarRacing-style actions ``[steer, gas, brake]``.

* :class:`TrackFollower` is a scripted expert: it reads the real simulator's track and car
  state (``info["privileged"]``, a :class:`~wfm_sim.envs.sources.CarState`), so it runs only
  in a real twin. It records the driving data.
* :class:`RoadCentroidDriver` sees only pixels: it steers toward the road in the front camera,
  so it drives an imagined env as well as a real one.
"""

from __future__ import annotations

import math

import numpy as np

from wfm_sim.policies.base import Policy, ScriptedPolicy, SeededPolicy, SegmentSchedule, batch_size


class TrackFollower(ScriptedPolicy):
    """Pure pursuit on the CarRacing track with speed control and exploration noise.

    Each episode drives at its own pace (``target_speed`` x U(0.6, 1.2), drawn from the
    episode's seed) with Gaussian steering noise, so the data covers slow and fast driving.

    Args:
        lookahead: track points ahead to aim at.
        target_speed: cruise speed (Box2D units/s).
        noise: std of the Gaussian noise on steering.
    """

    def __init__(self, lookahead: int = 6, target_speed: float = 45.0, noise: float = 0.1):
        super().__init__()
        self.lookahead, self.target_speed, self.noise = lookahead, target_speed, noise
        self._speed: dict[int, float] = {}

    def reset(self, seeds, rows=None, episodes=None) -> None:
        super().reset(seeds, rows)
        for r in self._rows(seeds, rows):
            self._speed[r] = self.target_speed * self._rngs[r].uniform(0.6, 1.2)

    def act(self, row: int, state) -> np.ndarray:
        rng = self.rng(row)
        pos, track = state.position, state.track
        i = int(np.argmin(((track - pos) ** 2).sum(1)))
        target = track[(i + self.lookahead) % len(track)]
        fwd = np.array([-math.sin(state.angle), math.cos(state.angle)])
        want = target - pos
        err = math.atan2(fwd[0] * want[1] - fwd[1] * want[0], fwd @ want)  # > 0: target to the left
        steer = float(np.clip(-2.0 * err + rng.normal(0, self.noise), -1, 1))
        speed = float(np.linalg.norm(state.velocity))
        limit = self._speed[row] * (0.6 if abs(err) > 0.35 else 1.0)
        gas = 0.5 if speed < limit else 0.0
        brake = 0.4 if speed > limit + 8 else 0.0
        return np.array([steer, gas, brake], dtype=np.float32)


def road_mask(frames: np.ndarray) -> np.ndarray:
    """CarRacing's grey road (``(..., H, W, 3)`` uint8 -> ``(..., H, W)`` bool): R, G and B within 18
    of each other, between 60 and 160 (grass is green, kerbs red and white, the sky blue)."""
    x = np.asarray(frames).astype(np.int16)
    r, g, b = x[..., 0], x[..., 1], x[..., 2]
    return (abs(r - g) < 18) & (abs(g - b) < 18) & (r > 60) & (r < 160)


class RoadCentroidDriver(Policy):
    """Steer toward the centroid of road-grey pixels in the lower half of one camera.

    Args:
        camera: which camera of a dict observation to read (an array observation is used as is).
        gas: throttle while driving.
        gain: steering per unit of centroid offset.
    """

    def __init__(self, camera: str = "CAM_FRONT", gas: float = 0.3, gain: float = 2.5):
        self.camera, self.gas, self.gain = camera, gas, gain

    def __call__(self, obs, info=None) -> np.ndarray:
        """``(n, 3)`` actions for a batch of observations."""
        if isinstance(obs, dict):
            if self.camera not in obs:
                raise ValueError(f"RoadCentroidDriver reads camera {self.camera!r}; the observation has {sorted(obs)}")
            obs = obs[self.camera]
        img = np.asarray(obs)
        if img.ndim != 4:
            raise ValueError(f"RoadCentroidDriver takes a batch of frames (n, H, W, 3), got shape {img.shape}")
        return np.stack([self._one(im) for im in img[: batch_size(img)]])

    def _one(self, img: np.ndarray) -> np.ndarray:
        h, w = img.shape[:2]
        road = road_mask(img[h // 2 :])
        if road.sum() < 3:
            return np.array([0.0, 0.0, 0.2], dtype=np.float32)
        cols = np.nonzero(road)[1]
        offset = (cols.mean() - (w - 1) / 2) / (w / 2)  # > 0: road to the right
        return np.array([float(np.clip(self.gain * offset, -1, 1)), self.gas, 0.0], dtype=np.float32)


class RoadExplorer(SeededPolicy):
    """:class:`RoadCentroidDriver` with exploration it can do from pixels alone, so it drives an
    imagined env as well as a real one (policy ``road-explore``): steering noise on the follower's
    action, interrupted now and then by a random action held for several steps (steering uniform
    in [-1, 1], gas in [0.2, 1], the brake mostly off), after which the follower finds the road
    again. The data it records holds recovery: frames off the road's centre with the action that
    brings the car back, which the follower alone never shows. Each row draws from its episode's seed.

    Args:
        camera: the camera the follower reads.
        noise: std of the Gaussian steering noise while following.
        interrupt: probability per following step that a held random action starts.
        hold: (min, max) steps a random action is held.
    """

    stream = 17

    def __init__(self, camera: str = "CAM_FRONT", noise: float = 0.1, interrupt: float = 0.05,
                 hold: tuple[int, int] = (4, 12)):
        super().__init__()
        if not 0 <= interrupt <= 1 or noise < 0 or not 1 <= hold[0] <= hold[1]:
            raise ValueError(f"RoadExplorer needs noise >= 0, 0 <= interrupt <= 1 and 1 <= hold[0] <= hold[1]; got "
                             f"noise={noise}, interrupt={interrupt}, hold={hold}")
        self.follower = RoadCentroidDriver(camera=camera)
        self.noise, self.interrupt, self.hold = noise, interrupt, hold
        self._held: dict[int, tuple[int, np.ndarray]] = {}

    def reset(self, seeds, rows=None, episodes=None) -> None:
        super().reset(seeds, rows)
        for r in self._rows(seeds, rows):
            self._held.pop(r, None)

    def __call__(self, obs, info=None) -> np.ndarray:
        followed = self.follower(obs)
        out = np.empty_like(followed)
        for row, a in enumerate(followed):
            rng = self.rng(row)
            left, held = self._held.get(row, (0, None))
            if left == 0 and rng.random() < self.interrupt:
                brake = 0.0 if rng.random() < 0.8 else float(rng.uniform(0.0, 0.5))
                held = np.array([rng.uniform(-1, 1), rng.uniform(0.2, 1.0), brake], np.float32)
                left = int(rng.integers(self.hold[0], self.hold[1] + 1))
            if left > 0:
                self._held[row] = (left - 1, held)
                out[row] = held
            else:
                a = a.copy()
                a[0] = float(np.clip(a[0] + rng.normal(0, self.noise), -1, 1))
                out[row] = a
        return out


class OffRoadExcursion(SeededPolicy):
    """A scenario from pixels alone (policy ``offroad``): the road follower for a few steps, then a
    swerve off the road (steering held at 0.7-1.0 to one side with gas), then the follower again,
    which brings the car back: an off-road excursion and its recovery, the event a recorder of
    good driving sees seldom. Lead, swerve length, side and strength are drawn from each episode's
    seed; it drives imagined envs and real twins alike.

    Args:
        camera: the camera the follower reads.
        lead: (min, max) steps of following before the swerve.
        swerve: (min, max) steps the swerve lasts.
    """

    stream = 19

    def __init__(self, camera: str = "CAM_FRONT", lead: tuple[int, int] = (2, 6), swerve: tuple[int, int] = (8, 12)):
        super().__init__()
        if not 0 <= lead[0] <= lead[1] or not 1 <= swerve[0] <= swerve[1]:
            raise ValueError(f"OffRoadExcursion needs 0 <= lead[0] <= lead[1] and 1 <= swerve[0] <= swerve[1]; got "
                             f"lead={lead}, swerve={swerve}")
        self.follower = RoadCentroidDriver(camera=camera)
        self.lead, self.swerve = lead, swerve
        self._plan: dict[int, list] = {}

    def reset(self, seeds, rows=None, episodes=None) -> None:
        super().reset(seeds, rows)
        for r in self._rows(seeds, rows):
            rng = self.rng(r)
            start = int(rng.integers(self.lead[0], self.lead[1] + 1))
            end = start + int(rng.integers(self.swerve[0], self.swerve[1] + 1))
            self._plan[r] = [0, start, end, float(rng.choice((-1.0, 1.0)) * rng.uniform(0.7, 1.0))]

    def __call__(self, obs, info=None) -> np.ndarray:
        out = self.follower(obs)
        for row in range(len(out)):
            self.rng(row)  # a row without an episode seed is an error, as for every seeded policy
            plan = self._plan[row]
            t, start, end, steer = plan
            if start <= t < end:
                out[row] = np.array([steer, 0.5, 0.0], np.float32)
            plan[0] = t + 1
        return out


class MixedDriver(ScriptedPolicy):
    """Driving data that teaches consequences: the track follower, interrupted by swerves off the
    road, random actions, braking to a stop and coasting, after which it finds the track again.

    Each episode draws its own schedule of segments from its seed (the first segment follows the
    track, so the car is moving): follow (15-45 steps), follow with heavy steering noise, swerve
    (60-100% lock to one side with gas, 6-30 steps), random actions, brake, coast. A world model trained on
    such episodes sees what leaving the road costs and how the car comes back, which on-road
    data from one scripted driver never shows.

    ``control_errors=True`` (policy ``mixed-v2``) adds the two mistakes a model trained on the
    above still forgives (a policy-scoring report split them out as dynamics error): driving
    *straight* with gas while the road bends (steering held at 0, gas 0.3-1.0), and steering
    *late* (the follower's action of 3-8 steps before). The first version's schedules are
    unchanged by it.

    Args:
        horizon: steps a schedule covers (the source's episode length).
        control_errors: add the ``straight`` and ``late`` segments.
    """

    MODES = ("follow", "noisy", "swerve", "random", "brake", "coast")
    WEIGHTS = (0.30, 0.15, 0.30, 0.10, 0.10, 0.05)
    MODES_V2 = MODES + ("straight", "late")
    WEIGHTS_V2 = (0.22, 0.12, 0.20, 0.08, 0.08, 0.04, 0.13, 0.13)

    stream = 11  # independent of the follower's own draws (stream 7)

    def __init__(self, horizon: int = 250, control_errors: bool = False):
        super().__init__()
        self.follower = TrackFollower(noise=0.1)
        self.control_errors = control_errors
        modes, weights = (self.MODES_V2, self.WEIGHTS_V2) if control_errors else (self.MODES, self.WEIGHTS)
        self.segments = SegmentSchedule(modes, weights, horizon)
        self._followed: dict[int, list[np.ndarray]] = {}  # control_errors: the follower's recent actions

    def reset(self, seeds, rows=None, episodes=None) -> None:
        super().reset(seeds, rows)
        rows = self._rows(seeds, rows)
        self.follower.reset(seeds, rows)
        for r in rows:
            rng = self._rngs[r]
            self._followed[r] = []

            def segment(mode, rng=rng):  # follow / noisy run longer than the interruptions
                length = int(rng.integers(15, 46) if mode in ("follow", "noisy") else rng.integers(6, 31))
                if mode == "straight":
                    return length, float(rng.uniform(0.3, 1.0))  # gas
                if mode == "late":
                    return length, float(rng.integers(3, 9))  # delay in steps
                return length, float(rng.choice((-1.0, 1.0)) * rng.uniform(0.6, 1.0))  # side of a swerve

            self.segments.draw(r, rng, "follow", segment)

    def act(self, row: int, state) -> np.ndarray:
        rng = self.rng(row)
        _, mode, param = self.segments.next(row)
        followed = None
        if self.control_errors:  # the follower drives along every step, so a late segment can replay it
            past = self._followed[row]
            past.append(self.follower.act(row, state))
            del past[:-9]
            followed = past[-1]
            if mode == "late":
                return past[max(0, len(past) - 1 - int(param))].copy()
            if mode == "straight":
                return np.array([0.0, param, 0.0], np.float32)
        if mode in ("follow", "noisy"):
            a = self.follower.act(row, state) if followed is None else followed.copy()
            if mode == "noisy":
                a[0] = float(np.clip(a[0] + rng.normal(0, 0.6), -1, 1))
            return a
        if mode == "swerve":
            return np.array([param, 0.6, 0.0], np.float32)
        if mode == "random":
            return rng.uniform([-1, 0, 0], [1, 1, 1]).astype(np.float32)
        if mode == "brake":
            return np.array([0.0, 0.0, 0.8], np.float32)
        return np.zeros(3, np.float32)  # coast


class BranchingDriver(ScriptedPolicy):
    """Driving data in which actions are independent of the state: the track follower for a few
    steps, then random actions held for ``hold`` steps each, then the follower again, and so on.

    What the counterfactual report asks a model (``wfm-sim evaluate --counterfactual``): from a
    state the car is really in, what does *this* action do? Scripted drivers make the action a
    function of the road, so a model can predict the next frame from the road alone; here the
    held segments draw steering uniformly in [-1, 1], gas in [0.2, 1] and the brake mostly off
    (a random brake would stop the car, and a car that stands has no counterfactual), the same
    distribution as the report's random branches. Policy ``branching``.

    Args:
        horizon: steps a schedule covers (the source's episode length).
        hold: steps each random action is held.
    """

    MODES, WEIGHTS = ("follow", "held"), (0.5, 0.5)
    stream = 13

    def __init__(self, horizon: int = 250, hold: int = 4):
        super().__init__()
        self.follower = TrackFollower(noise=0.1)
        self.hold = hold
        self.segments = SegmentSchedule(self.MODES, self.WEIGHTS, horizon)
        self._held: dict[int, tuple[int, np.ndarray]] = {}

    def reset(self, seeds, rows=None, episodes=None) -> None:
        super().reset(seeds, rows)
        rows = self._rows(seeds, rows)
        self.follower.reset(seeds, rows)
        for r in rows:
            rng = self._rngs[r]
            self._held.pop(r, None)
            self.segments.draw(r, rng, "follow", lambda mode, rng=rng: (
                int(rng.integers(10, 31) if mode == "follow" else rng.integers(8, 17)), 0.0))

    def act(self, row: int, state) -> np.ndarray:
        followed = self.follower.act(row, state)  # the follower's noise stream advances every step
        _, mode, _ = self.segments.next(row)
        if mode == "follow":
            self._held.pop(row, None)
            return followed
        age, action = self._held.get(row, (self.hold, None))
        if age >= self.hold:
            rng = self.rng(row)
            brake = 0.0 if rng.random() < 0.8 else float(rng.uniform(0.0, 0.5))
            action, age = np.array([rng.uniform(-1, 1), rng.uniform(0.2, 1.0), brake], np.float32), 0
        self._held[row] = (age + 1, action)
        return action.copy()
