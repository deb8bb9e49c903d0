"""Real simulators the recorder reads from, each with its cameras, action space and policies.

Every source builds a :class:`SourceEnv`: ``reset(seed) -> obs``, ``step(action) -> (obs,
reward, terminated, truncated, extras)``, where ``obs`` maps camera name to a uint8
``(size, size, 3)`` frame. Simulator packages are imported lazily, with an install hint.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Callable

import cv2
import numpy as np


def _require(module: str, extra: str = "sim"):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise ImportError(f"this source needs `{module}`: pip install 'wfm-sim[{extra}]'") from e


def resize(frame: np.ndarray, size: int) -> np.ndarray:
    if frame.shape[:2] == (size, size):
        return np.ascontiguousarray(frame)
    return cv2.resize(frame, (size, size), interpolation=cv2.INTER_AREA)


@dataclass
class SourceEnv:
    """A simulator plus the way its cameras are rendered."""

    env: object
    cameras: tuple[str, ...]
    render: Callable[[object, object], dict[str, np.ndarray]]
    extras_fn: Callable[[dict], dict] = field(default=lambda info: {})
    action_repeat: int = 1
    """Simulator steps per recorded step (same action; rewards summed)."""

    @property
    def unwrapped(self):
        return self.env.unwrapped

    def reset(self, seed: int | None = None) -> dict[str, np.ndarray]:
        obs, _ = self.env.reset(seed=seed)
        self._last = obs
        return self.render(self.env, obs)

    def step(self, action):
        total = 0.0
        for _ in range(self.action_repeat):
            obs, reward, terminated, truncated, info = self.env.step(action)
            total += float(reward)
            if terminated or truncated:
                break
        self._last = obs
        return self.render(self.env, obs), total, bool(terminated), bool(truncated), self.extras_fn(info)

    def close(self) -> None:
        self.env.close()


@dataclass(frozen=True)
class Source:
    """A recordable simulator: how to build it and which policies it offers."""

    name: str
    env_id: str
    description: str
    fps: float
    cameras: tuple[str, ...]
    action_space: dict
    make: Callable[[int], SourceEnv]
    policies: dict[str, Callable[[int], Callable]]
    default_policy: str
    extras: dict = field(default_factory=dict)
    max_steps: int = 300

    def env_version(self) -> str:
        import gymnasium

        return f"gymnasium {gymnasium.__version__}"


def _random_policy(space_fn):
    def build(seed: int):
        rng = np.random.default_rng(seed)

        def act(obs, env):
            space = space_fn(env)
            return rng.uniform(space.low, space.high).astype(np.float32)

        return act

    return build


# ----------------------------------------------------------------- CarRacing
def _make_carracing(size: int, multicam: int = 0) -> SourceEnv:
    gym = _require("gymnasium")
    _require("Box2D")
    env = gym.make("CarRacing-v3", continuous=True)  # its obs is the 96x96 top-down chase view
    if not multicam:
        return SourceEnv(env, ("CAM_TOP",), lambda e, obs: {"CAM_TOP": resize(obs, size)}, action_repeat=CAR_REPEAT)
    from wfm_sim.datasets.car_cameras import RIG_4, RIG_6, CameraRig, CarRacingCameras

    rig = CameraRig(yaws=tuple((RIG_4 if multicam == 4 else RIG_6).items()))
    cams = CarRacingCameras(rig, size)
    return SourceEnv(env, rig.names, lambda e, obs: cams.render(e), action_repeat=CAR_REPEAT)


def _car_policies():
    from wfm_sim.policies.driving import TrackFollower

    return {
        "driver": lambda seed: _reset_on_build(TrackFollower(noise=0.15, seed=seed), seed),
        "random": _random_policy(lambda env: env.env.action_space),
    }


def _reset_on_build(policy, seed):
    policy.reset(seed)
    return policy


# ------------------------------------------------------------- Meta-World
def _mujoco_fast_render(env) -> None:
    """Turn shadows, reflections and skybox off: several times faster on a software renderer."""
    mujoco = _require("mujoco")
    viewer = env.unwrapped.mujoco_renderer._get_viewer("rgb_array")
    for flag in (mujoco.mjtRndFlag.mjRND_SHADOW, mujoco.mjtRndFlag.mjRND_REFLECTION, mujoco.mjtRndFlag.mjRND_SKYBOX):
        viewer.scn.flags[flag] = 0


def _make_metaworld(task: str, size: int, camera: str = "corner2") -> SourceEnv:
    os.environ.setdefault("MUJOCO_GL", "egl")
    gym = _require("gymnasium")
    _require("metaworld")
    render = 2 * size
    env = gym.make("Meta-World/MT1", env_name=task, render_mode="rgb_array", width=render, height=render,
                   camera_name=camera, disable_env_checker=True)
    state = {"fast": False}

    def frames(e, obs):
        if not state["fast"]:
            _mujoco_fast_render(e)
            state["fast"] = True
        img = e.render()[::-1]  # Meta-World's corner cameras render upside down
        return {camera: resize(np.ascontiguousarray(img), size)}

    return SourceEnv(env, (camera,), frames, lambda info: {"success": bool(info.get("success", 0.0) > 0.5)},
                     action_repeat=MW_REPEAT)


def _metaworld_policies(task: str):
    def expert(seed: int, max_noise: float = 0.6):
        """The scripted expert plus Gaussian noise whose scale is drawn per episode in
        [0, max_noise]: from clean demonstrations to heavy exploration, so the next frame
        depends on the action taken and not only on the motion already visible."""
        from metaworld.policies import ENV_POLICY_MAP

        rng = np.random.default_rng(seed)
        pol = ENV_POLICY_MAP[task]()
        noise = rng.uniform(0.0, max_noise)

        def act(obs, env):
            a = pol.get_action(env._last) + rng.normal(0, noise, 4)
            return np.clip(a, -1, 1).astype(np.float32)

        return act

    return {"expert": expert, "random": _random_policy(lambda env: env.env.action_space)}


# ----------------------------------------------------------------- Pusher
def _make_pusher(size: int) -> SourceEnv:
    os.environ.setdefault("MUJOCO_GL", "egl")
    gym = _require("gymnasium")
    _require("mujoco")
    env = gym.make("Pusher-v5", render_mode="rgb_array", width=2 * size, height=2 * size)
    state = {"fast": False}

    def frames(e, obs):
        if not state["fast"]:
            _mujoco_fast_render(e)
            state["fast"] = True
        return {"CAM_MAIN": resize(np.ascontiguousarray(e.render()), size)}

    return SourceEnv(env, ("CAM_MAIN",), frames)


def _box(low, high):
    return {"type": "box", "shape": [len(low)], "low": list(low), "high": list(high)}


CAR_REPEAT = 4  # CarRacing runs at 50 Hz: record 12.5 Hz so consecutive frames differ
MW_REPEAT = 8  # Meta-World runs at 80 Hz: record 10 Hz, a robot-policy control rate where steps differ
CAR_ACTION = _box([-1.0, 0.0, 0.0], [1.0, 1.0, 1.0])
SOURCES: dict[str, Source] = {}


def _register(src: Source) -> None:
    SOURCES[src.name] = src


_register(Source("carracing", "CarRacing-v3", "CarRacing, one top-down chase camera", 50.0 / CAR_REPEAT, ("CAM_TOP",),
                 CAR_ACTION, lambda size: _make_carracing(size), _car_policies(), "driver", max_steps=250))
_register(Source("carracing-4cam", "CarRacing-v3", "CarRacing, 4 ego cameras (front, back, left, right)", 50.0 / CAR_REPEAT,
                 ("CAM_FRONT", "CAM_BACK", "CAM_LEFT", "CAM_RIGHT"), CAR_ACTION,
                 lambda size: _make_carracing(size, 4), _car_policies(), "driver", max_steps=250))
_register(Source("carracing-6cam", "CarRacing-v3", "CarRacing, 6 nuScenes-style ego cameras", 50.0 / CAR_REPEAT,
                 ("CAM_FRONT", "CAM_FRONT_LEFT", "CAM_FRONT_RIGHT", "CAM_BACK", "CAM_BACK_LEFT", "CAM_BACK_RIGHT"),
                 CAR_ACTION, lambda size: _make_carracing(size, 6), _car_policies(), "driver", max_steps=250))
for _task in ("push-v3", "reach-v3", "pick-place-v3"):
    _register(Source(f"metaworld-{_task[:-3]}", "Meta-World/MT1:" + _task, f"Meta-World {_task}, scripted expert + noise",
                     80.0 / MW_REPEAT, ("corner2",), _box([-1.0] * 4, [1.0] * 4),
                     (lambda t: lambda size: _make_metaworld(t, size))(_task), _metaworld_policies(_task), "expert",
                     extras={"success": ((), "bool")}, max_steps=50))
_register(Source("pusher", "Pusher-v5", "MuJoCo Pusher-v5 arm, random torques", 20.0, ("CAM_MAIN",),
                 _box([-2.0] * 7, [2.0] * 7), _make_pusher, {"random": _random_policy(lambda env: env.env.action_space)},
                 "random", max_steps=100))
