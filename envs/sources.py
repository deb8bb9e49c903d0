"""The real simulators wfm_sim records and plays against, each with its camera rig.

A :class:`Source` names a simulator, its cameras, fps (simulator rate / action repeat) and
action space; ``source.make(size)`` builds a :class:`Simulator`, which
:class:`~wfm_sim.envs.real.RealEnv` turns into a Gymnasium env. Every simulator:

* starts from a state that is a pure function of the reset seed, also across freshly made
  instances (Meta-World draws its object and goal positions from the env's own generator,
  seeded at every reset; CarRacing draws its track from the reset seed);
* renders each camera as a uint8 ``(size, size, 3)`` frame;
* exposes its privileged state (what scripted experts read: car pose and track, the arm's
  state vector) and its success flag, where it has one.

Simulator packages are imported lazily, with an install hint.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from typing import Callable

import cv2
import numpy as np


def require(module: str, extra: str = "sim"):
    """Import ``module`` or raise an ImportError that says how to install it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise ImportError(f"this simulator needs `{module}`, which is not installed: pip install 'wfm-sim[{extra}]'") from e


def resize(frame: np.ndarray, size: int) -> np.ndarray:
    if frame.shape[:2] == (size, size):
        return np.ascontiguousarray(frame)
    return cv2.resize(frame, (size, size), interpolation=cv2.INTER_AREA)


class _State:
    """Equality field by field, arrays compared whole (what Gymnasium's env checker needs)."""

    def __eq__(self, other) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return all(np.array_equal(getattr(self, f), getattr(other, f)) for f in self.__dataclass_fields__)

    __hash__ = None


@dataclass(frozen=True, eq=False)
class CarState(_State):
    """Privileged CarRacing state: what :class:`~wfm_sim.policies.TrackFollower` reads."""

    position: np.ndarray
    """``(2,)`` car position (Box2D world units)."""
    angle: float
    """Heading in radians; the forward vector at angle 0 is +y."""
    velocity: np.ndarray
    """``(2,)`` linear velocity."""
    track: np.ndarray
    """``(N, 2)`` centre-line points of the track, in driving order."""
    on_road: bool
    """Whether any wheel touches a road tile."""


@dataclass(frozen=True, eq=False)
class ArmState(_State):
    """Privileged robot state: the simulator's own observation vector (Meta-World's 39-d, a Gymnasium env's)."""

    state: np.ndarray


@dataclass
class Simulator:
    """A simulator instance plus the way its cameras are rendered.

    Attributes:
        env: the Gymnasium env of the simulator.
        cameras: camera names, in rig order.
        render: ``render(env) -> {camera: (size, size, 3) uint8}``.
        privileged: ``privileged(env, raw_obs) -> state object`` for scripted experts.
        success: ``success(info) -> bool`` or None for simulators without a success notion.
        seed_fn: called with ``(env, seed)`` before every seeded reset (simulators whose
            ``reset(seed=...)`` does not decide the start state on its own).
        action_repeat: simulator steps per env step (same action; rewards summed).
        info_keys: fields of the simulator's step ``info`` the twin passes on (and recorders store).
        annotate: ``annotate(env, state) -> dict`` of more per-step fields computed from the
            simulator state after a step (CarRacing's scene caption); passed on when the source
            declares them in ``info_fields``.
    """

    env: object
    cameras: tuple[str, ...]
    render: Callable[[object], dict[str, np.ndarray]]
    privileged: Callable[[object, object], object] = field(default=lambda env, obs: None)
    success: Callable[[dict], bool] | None = None
    seed_fn: Callable[[object, int], None] | None = None
    action_repeat: int = 1
    info_keys: tuple[str, ...] = ()
    annotate: Callable[[object, object], dict] | None = None

    def reset(self, seed: int | None) -> object:
        if seed is not None and self.seed_fn is not None:
            self.seed_fn(self.env, seed)
        obs, _ = self.env.reset(seed=seed)
        self.raw_obs = obs
        return obs

    def step(self, action: np.ndarray) -> tuple[float, bool, bool, dict]:
        total, terminated, truncated, info = 0.0, False, False, {}
        if np.ndim(action) == 0:  # a Discrete action as a Python int: toy-text envs index dicts with it
            action = np.asarray(action).item()
        for _ in range(self.action_repeat):
            obs, reward, terminated, truncated, info = self.env.step(action)
            total += float(reward)
            if terminated or truncated:
                break
        self.raw_obs = obs
        return total, bool(terminated), bool(truncated), info

    def close(self) -> None:
        self.env.close()


@dataclass(frozen=True)
class Source:
    """A recordable simulator: how to build it, its rig, rate and action space."""

    name: str
    env_id: str
    description: str
    fps: float
    cameras: tuple[str, ...]
    action_space: dict
    make: Callable[[int], Simulator]
    default_policy: str
    """The policy ``wfm-sim collect`` uses when none is given (see :mod:`wfm_sim.policies.registry`)."""
    has_success: bool = False
    max_steps: int = 300
    package: str = "gymnasium"
    """The Python package that provides the simulator (for the install hint)."""
    info_fields: tuple[tuple[str, tuple, str], ...] = ()
    """``(name, shape, dtype)`` of the step-``info`` fields recorded besides success."""

    @property
    def extras(self) -> dict:
        """Per-step store keys beyond the core ones."""
        out = {"success": ((), "bool")} if self.has_success else {}
        out.update({k: (tuple(shape), dtype) for k, shape, dtype in self.info_fields})
        return out

    def env_version(self) -> str:
        import gymnasium

        return f"gymnasium {gymnasium.__version__}"

    def with_captions(self) -> "Source":
        """This source recording a scene caption id per step (``caption``, int8, ids into
        :data:`~wfm_sim.envs.captions.CAR_CAPTIONS`), named ``<name>?captions``."""
        if not self.captions:
            raise ValueError(f"source {self.name!r} has no captioner; captions exist for {sorted(_CAPTIONED)}")
        return replace(self, name=f"{self.name}?captions", info_fields=self.info_fields + (("caption", (), "int8"),))

    @property
    def captions(self) -> bool:
        """Whether this simulator can caption its scenes."""
        return self.name.split("?")[0] in _CAPTIONED


# ----------------------------------------------------------------- CarRacing
def _track_points(u) -> np.ndarray:
    """The track's centre line, built once per track (it changes only at reset), not every step."""
    cached = getattr(u, "_wfm_track", None)
    if cached is None or cached[0] is not u.track:
        cached = u._wfm_track = (u.track, np.asarray([(t[2], t[3]) for t in u.track], np.float64))
    return cached[1]


def _car_annotate(env, state) -> dict:
    from wfm_sim.envs.captions import car_caption

    return {"caption": car_caption(state)}


def _car_state(env, obs) -> CarState:
    u = env.unwrapped
    hull = u.car.hull
    on_road = any(len(w.tiles) > 0 for w in u.car.wheels)
    return CarState(np.asarray(hull.position, np.float64), float(hull.angle),
                    np.asarray(hull.linearVelocity, np.float64), _track_points(u), bool(on_road))


def _make_carracing(size: int, multicam: int = 0, only: tuple[str, ...] | None = None) -> Simulator:
    gym = require("gymnasium")
    require("Box2D", "sim")
    env = gym.make("CarRacing-v3", continuous=True, disable_env_checker=True)  # its obs: the 96x96 chase view
    if not multicam:
        return Simulator(env, ("CAM_TOP",), lambda e: {"CAM_TOP": resize(e.unwrapped.state, size)}, _car_state,
                         action_repeat=CAR_REPEAT, annotate=_car_annotate)
    from wfm_sim.envs.car_cameras import RIG_4, RIG_6, CameraRig, CarRacingCameras

    yaws = (RIG_4 if multicam == 4 else RIG_6).items()
    rig = CameraRig(yaws=tuple((n, y) for n, y in yaws if only is None or n in only))
    cams = CarRacingCameras(rig, size)
    return Simulator(env, rig.names, cams.render, _car_state, action_repeat=CAR_REPEAT, annotate=_car_annotate)


# ------------------------------------------------------------- Meta-World
def fast_mujoco_render(env) -> None:
    """Turn shadows, reflections and skybox off: several times faster on a software renderer."""
    mujoco = require("mujoco")
    viewer = env.unwrapped.mujoco_renderer._get_viewer("rgb_array")
    for flag in (mujoco.mjtRndFlag.mjRND_SHADOW, mujoco.mjtRndFlag.mjRND_REFLECTION, mujoco.mjtRndFlag.mjRND_SKYBOX):
        viewer.scn.flags[flag] = 0


def _mujoco_frames(camera: str, size: int, flip: bool):
    state = {"fast": False}

    def frames(env) -> dict[str, np.ndarray]:
        if not state["fast"]:
            fast_mujoco_render(env)
            state["fast"] = True
        # Gymnasium makes a viewer's GL context current only when it creates it: with several
        # MuJoCo envs in one process (a vector of twins), render in this env's own context.
        env.unwrapped.mujoco_renderer._get_viewer("rgb_array").make_context_current()
        img = env.render()
        img = img[::-1] if flip else img  # Meta-World's corner cameras render upside down
        return {camera: resize(np.ascontiguousarray(img), size)}

    return frames


def metaworld_task(source: str) -> str:
    """The Meta-World task a source records (``metaworld-push-2cam`` -> ``push-v3``)."""
    env_id = get_source(source).env_id
    if not env_id.startswith("Meta-World/MT1:"):
        raise ValueError(f"source {source!r} is not a Meta-World task")
    return env_id.split(":", 1)[1]


def _seed_metaworld(env, seed: int) -> None:
    """Make the start state a function of ``seed`` alone.

    Meta-World ignores ``reset(seed=...)``: MT1 picks one of 50 pre-drawn tasks with an RNG
    that is not reseeded, and the env then reuses that task's frozen object/goal positions.
    Here the task sampling is off, and positions are drawn at reset from the env's own
    generator, seeded with ``seed`` (the same generator the task maker used).
    """
    u = env.unwrapped
    u._freeze_rand_vec = False
    u.seeded_rand_vec = True
    u.seed(int(seed))


def _make_metaworld(task: str, size: int, cameras: tuple[str, ...] = ("corner2",)) -> Simulator:
    """A Meta-World task seen by ``cameras`` (its XML cameras; every one renders upside down)."""
    os.environ.setdefault("MUJOCO_GL", "egl")
    gym = require("gymnasium")
    require("metaworld")
    render = 2 * size
    env = gym.make("Meta-World/MT1", env_name=task, seed=0, render_mode="rgb_array", width=render, height=render,
                   camera_name=cameras[0], disable_env_checker=True)
    wrapper = env
    while not hasattr(wrapper, "toggle_sample_tasks_on_reset"):
        wrapper = wrapper.env
    wrapper.toggle_sample_tasks_on_reset(False)
    env.unwrapped.set_task(wrapper.tasks[0])  # observability and task settings; positions come from the seed
    if len(cameras) == 1:
        frames = _mujoco_frames(cameras[0], size, flip=True)
    else:
        from wfm_sim.envs.gym_source import _camera_ids, _mujoco_views

        views = _mujoco_views(cameras, _camera_ids(env, cameras), size)

        def frames(env):
            return {c: np.ascontiguousarray(f[::-1]) for c, f in views(env).items()}
    return Simulator(env, tuple(cameras), frames,
                     lambda e, obs: ArmState(np.asarray(obs, np.float64).copy()),
                     success=lambda info: bool(info.get("success", 0.0) > 0.5), seed_fn=_seed_metaworld,
                     action_repeat=MW_REPEAT)


# ----------------------------------------------------------------- Pusher
def _make_pusher(size: int) -> Simulator:
    os.environ.setdefault("MUJOCO_GL", "egl")
    gym = require("gymnasium")
    require("mujoco")
    env = gym.make("Pusher-v5", render_mode="rgb_array", width=2 * size, height=2 * size, disable_env_checker=True)
    return Simulator(env, ("CAM_MAIN",), _mujoco_frames("CAM_MAIN", size, flip=False),
                     lambda e, obs: ArmState(np.asarray(obs, np.float64).copy()))


def _box(low, high):
    return {"type": "box", "shape": [len(low)], "low": list(low), "high": list(high)}


CAR_REPEAT = 4  # CarRacing runs at 50 Hz: record 12.5 Hz so consecutive frames differ
MW_REPEAT = 8  # Meta-World runs at 80 Hz: record 10 Hz, a robot-policy control rate where steps differ
CAR_ACTION = _box([-1.0, 0.0, 0.0], [1.0, 1.0, 1.0])
SOURCES: dict[str, Source] = {}


def _register(src: Source) -> None:
    SOURCES[src.name] = src


def get_source(name: str) -> Source:
    """A shipped source by name, or any Gymnasium env as ``gym:<EnvId>[?options]`` (:mod:`~wfm_sim.envs.gym_source`)."""
    if name.startswith("gym:"):
        from wfm_sim.envs.gym_source import gym_source

        return gym_source(name)
    base, _, option = name.partition("?")
    if option == "captions" and base in SOURCES:
        return SOURCES[base].with_captions()
    if name not in SOURCES:
        raise ValueError(f"unknown source {name!r}; choose one of {sorted(SOURCES)} or gym:<EnvId> "
                         "(any registered Gymnasium env that renders rgb_array)")
    return SOURCES[name]


_CAPTIONED = ("carracing", "carracing-4cam", "carracing-front", "carracing-6cam")
_register(Source("carracing", "CarRacing-v3", "CarRacing, one top-down chase camera", 50.0 / CAR_REPEAT, ("CAM_TOP",),
                 CAR_ACTION, lambda size: _make_carracing(size), "driver", max_steps=250, package="Box2D"))
_register(Source("carracing-4cam", "CarRacing-v3", "CarRacing, 4 ego cameras (front, back, left, right)", 50.0 / CAR_REPEAT,
                 ("CAM_FRONT", "CAM_BACK", "CAM_LEFT", "CAM_RIGHT"), CAR_ACTION,
                 lambda size: _make_carracing(size, 4), "driver", max_steps=250, package="Box2D"))
_register(Source("carracing-front", "CarRacing-v3", "CarRacing, the 4-camera rig's front camera alone (RL models)",
                 50.0 / CAR_REPEAT, ("CAM_FRONT",), CAR_ACTION, lambda size: _make_carracing(size, 4, ("CAM_FRONT",)),
                 "driver", max_steps=250, package="Box2D"))
_register(Source("carracing-6cam", "CarRacing-v3", "CarRacing, 6 nuScenes-style ego cameras", 50.0 / CAR_REPEAT,
                 ("CAM_FRONT", "CAM_FRONT_LEFT", "CAM_FRONT_RIGHT", "CAM_BACK", "CAM_BACK_LEFT", "CAM_BACK_RIGHT"),
                 CAR_ACTION, lambda size: _make_carracing(size, 6), "driver", max_steps=250, package="Box2D"))
for _task in ("push-v3", "reach-v3", "pick-place-v3"):
    _register(Source(f"metaworld-{_task[:-3]}", "Meta-World/MT1:" + _task, f"Meta-World {_task}, scripted expert + noise",
                     80.0 / MW_REPEAT, ("corner2",), _box([-1.0] * 4, [1.0] * 4),
                     (lambda t: lambda size: _make_metaworld(t, size))(_task), "expert", has_success=True,
                     max_steps=50, package="metaworld"))
_register(Source("metaworld-push-2cam", "Meta-World/MT1:push-v3",
                 "Meta-World push-v3, the corner camera plus one behind the gripper (the puck at several pixels)",
                 80.0 / MW_REPEAT, ("corner2", "behindGripper"), _box([-1.0] * 4, [1.0] * 4),
                 lambda size: _make_metaworld("push-v3", size, ("corner2", "behindGripper")), "expert", has_success=True,
                 max_steps=50, package="metaworld"))
_register(Source("pusher", "Pusher-v5", "MuJoCo Pusher-v5 arm, random torques", 20.0, ("CAM_MAIN",),
                 _box([-2.0] * 7, [2.0] * 7), _make_pusher, "random", max_steps=100, package="mujoco"))
