"""Any registered Gymnasium environment as a recording source: ``gym:<EnvId>``.

``wfm-sim collect gym:Reacher-v5`` records an environment the package ships no source for, so a
team's own simulator trains a world model with the same commands. A :class:`GymSpec` says how
it is recorded (cameras, action repeat, fps, info fields, env keyword arguments) and is written
as the source's name, ``gym:Reacher-v5?cameras=free,free_az90&repeat=2``: the name alone
rebuilds the source in any process (a Ray worker, the real twin of a trained model), and it
is what the store records as its source.

Cameras:

* no ``cameras``: the env's own ``render()``, stored as ``CAM_MAIN``;
* MuJoCo envs, several at once: a camera defined in the model's XML by name, ``free`` (the env's
  default viewpoint), or ``free_az<deg>`` / ``free_az<deg>_el<deg>`` (that viewpoint turned to
  azimuth ``deg``, and looking down ``el`` degrees).

Rewards are summed over the repeated steps; recorded ``info`` fields are the last step's.

Frames are resized to ``size x size`` (aspect ratio not kept, as is usual for world models).
Box and Discrete actions are supported; Dict, Tuple, MultiBinary, MultiDiscrete, empty and unbounded
Box spaces are refused by name.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from functools import lru_cache
from urllib.parse import parse_qsl, quote, urlencode

import numpy as np

from wfm_sim.datasets.episode import as_uint8_frames
from wfm_sim.envs.sources import ArmState, Simulator, Source, fast_mujoco_render, require, resize

PREFIX = "gym:"
DEFAULT_CAMERA = "CAM_MAIN"
RESERVED = {"obs", "action", "reward", "terminated", "truncated", "meta"}
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_FREE_AZ = re.compile(r"^free_az(\d+)(?:_el(\d+))?$")


@dataclass(frozen=True)
class GymSpec:
    """How a Gymnasium env is recorded. Its :meth:`name` is the source name."""

    env_id: str
    """A registered Gymnasium id, e.g. ``Reacher-v5``, ``CartPole-v1``."""
    cameras: tuple[str, ...] = ()
    """MuJoCo camera names (see the module docstring); empty: the env's own render."""
    repeat: int = 1
    """Simulator steps per recorded step (the action is repeated, rewards summed)."""
    fps: float | None = None
    """Recorded frames per second; default: the env's ``metadata['render_fps'] / repeat``."""
    info: tuple[str, ...] = ()
    """``info`` fields stored per step (a field named ``success`` is the success flag)."""
    kwargs: dict = field(default_factory=dict)
    """Keyword arguments for ``gym.make``."""
    max_steps: int | None = None
    """Recorded steps per episode; default: the env's ``max_episode_steps / repeat`` (or 1000)."""

    def __post_init__(self):
        if not self.env_id or "?" in self.env_id:
            raise ValueError(f"gym source needs an environment id, e.g. gym:Reacher-v5, got {self.env_id!r}")
        if self.repeat < 1:
            raise ValueError(f"action repeat must be >= 1, got {self.repeat}")
        if self.fps is not None and not self.fps > 0:
            raise ValueError(f"fps must be > 0, got {self.fps}")
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError(f"max_steps must be >= 1, got {self.max_steps}")
        for cam in self.cameras:
            if not _NAME.match(cam):
                raise ValueError(f"camera names must be identifiers (letters, digits, _), got {cam!r}")
        if len(set(self.cameras)) != len(self.cameras):
            raise ValueError(f"cameras must be distinct, got {list(self.cameras)}")
        for key in self.info:
            if not _NAME.match(key) or key in RESERVED:
                raise ValueError(f"info field {key!r} cannot be stored: use an identifier other than {sorted(RESERVED)}")

    def name(self) -> str:
        opts = {"cameras": ",".join(self.cameras), "repeat": self.repeat if self.repeat != 1 else None,
                "fps": self.fps, "info": ",".join(self.info),
                "kwargs": json.dumps(self.kwargs, sort_keys=True, separators=(",", ":")) if self.kwargs else None,
                "max_steps": self.max_steps}
        query = urlencode({k: v for k, v in opts.items() if v not in (None, "")}, quote_via=quote, safe=",:{}\"[]")
        return PREFIX + self.env_id + ("?" + query if query else "")

    @classmethod
    def parse(cls, name: str) -> "GymSpec":
        """The spec a source name describes (``gym:EnvId`` or ``gym:EnvId?key=value&...``)."""
        if not name.startswith(PREFIX):
            raise ValueError(f"a gym source name starts with {PREFIX!r}, got {name!r}")
        env_id, _, query = name[len(PREFIX):].partition("?")
        known = {"cameras", "repeat", "fps", "info", "kwargs", "max_steps"}
        opts = dict(parse_qsl(query, keep_blank_values=False, strict_parsing=False))
        unknown = set(opts) - known
        if unknown:
            raise ValueError(f"unknown gym source option(s) {sorted(unknown)} in {name!r}; known: {sorted(known)}")
        try:
            kwargs = json.loads(opts["kwargs"]) if "kwargs" in opts else {}
        except json.JSONDecodeError as e:
            raise ValueError(f"env kwargs must be a JSON object, got {opts['kwargs']!r}: {e}") from e
        if not isinstance(kwargs, dict):
            raise ValueError(f"env kwargs must be a JSON object, got {opts['kwargs']!r}")
        split = (lambda s: tuple(x for x in s.split(",") if x))
        return cls(env_id, split(opts.get("cameras", "")), int(opts.get("repeat", 1)),
                   float(opts["fps"]) if "fps" in opts else None, split(opts.get("info", "")), kwargs,
                   int(opts["max_steps"]) if "max_steps" in opts else None)


def _make_env(spec: GymSpec, size: int):
    gym = require("gymnasium")
    if spec.env_id not in gym.registry:
        near = sorted(k for k in gym.registry if spec.env_id.split("-")[0].lower() in k.lower())[:8]
        raise ValueError(f"unknown Gymnasium id {spec.env_id!r}" + (f"; similar ids: {near}" if near else
                         " (is the package that registers it installed and imported?)"))
    entry = str(gym.spec(spec.env_id).entry_point)
    kwargs = dict(spec.kwargs)
    if "mujoco" in entry:
        os.environ.setdefault("MUJOCO_GL", "egl")
        kwargs.setdefault("width", 2 * size)
        kwargs.setdefault("height", 2 * size)
    try:
        env = gym.make(spec.env_id, render_mode="rgb_array", disable_env_checker=True, **kwargs)
    except TypeError as e:
        raise ValueError(f"gym.make({spec.env_id!r}) rejected keyword arguments {sorted(spec.kwargs)}: {e}") from e
    if "rgb_array" not in env.metadata.get("render_modes", ()):
        env.close()
        raise ValueError(f"{spec.env_id} cannot render 'rgb_array' frames (its render modes: "
                         f"{env.metadata.get('render_modes', [])}); a world model learns from pixels")
    return env


def _action_spec(space, env_id: str) -> dict:
    from gymnasium import spaces

    if isinstance(space, spaces.Discrete):
        if int(space.start) != 0:
            raise ValueError(f"{env_id}: Discrete actions must start at 0, got start={space.start}")
        return {"type": "discrete", "n": int(space.n)}
    if isinstance(space, spaces.Box) and len(space.shape) == 1:
        if space.shape[0] == 0:
            raise ValueError(f"{env_id}: its Box action space has no values (shape (0,)): there is no action to "
                             "condition a world model on")
        lo, hi = np.asarray(space.low, np.float64), np.asarray(space.high, np.float64)
        if not (np.isfinite(lo).all() and np.isfinite(hi).all()):
            raise ValueError(f"{env_id}: Box actions must be bounded to be recorded and sampled, got low={lo.tolist()} "
                             f"high={hi.tolist()}")
        return {"type": "box", "shape": [int(space.shape[0])], "low": lo.tolist(), "high": hi.tolist()}
    raise ValueError(f"{env_id}: a world model takes a Box of shape (A,) or a Discrete action space, got {space} "
                     "(Dict and Tuple spaces: flatten them with a wrapper registered under your own id)")


def _camera_ids(env, names: tuple[str, ...]) -> list[tuple[int, tuple | None]]:
    """``(mujoco camera id, (azimuth, elevation) or None)`` per name; -1 is the free camera."""
    mujoco = require("mujoco")
    model = getattr(env.unwrapped, "model", None)
    if model is None or not hasattr(env.unwrapped, "mujoco_renderer"):
        raise ValueError(f"--cameras needs a MuJoCo environment; {env.spec.id} renders one view (leave --cameras out)")
    have = [mujoco.mj_id2name(model, mujoco.mjtObj.mjOBJ_CAMERA, i) for i in range(model.ncam)]
    out = []
    for name in names:
        az = _FREE_AZ.match(name)
        if name == "free" or az:
            out.append((-1, (float(az.group(1)), -float(az.group(2)) if az.group(2) else None) if az else None))
        elif name in have:
            out.append((have.index(name), None))
        else:
            raise ValueError(f"{env.spec.id} has no camera {name!r}: its cameras are {have}, plus 'free' and "
                             "'free_az<deg>' or 'free_az<deg>_el<deg>' (the default view, turned)")
    return out


def _mujoco_views(names: tuple[str, ...], ids: list[tuple[int, float | None]], size: int):
    state = {"fast": False}

    def frames(env) -> dict[str, np.ndarray]:
        renderer = env.unwrapped.mujoco_renderer
        viewer = renderer._get_viewer("rgb_array")
        if not state["fast"]:
            fast_mujoco_render(env)
            state["fast"] = True
        viewer.make_context_current()  # several MuJoCo envs in one process: render in this one's context
        out = {}
        for name, (cid, az) in zip(names, ids):
            if cid == -1:
                saved = viewer.cam.azimuth, viewer.cam.elevation
                if az is not None:
                    viewer.cam.azimuth = az[0]
                    viewer.cam.elevation = saved[1] if az[1] is None else az[1]
                img = viewer.render(render_mode="rgb_array", camera_id=-1)
                viewer.cam.azimuth, viewer.cam.elevation = saved
            else:
                img = viewer.render(render_mode="rgb_array", camera_id=cid)
            out[name] = resize(np.ascontiguousarray(img), size)
        return out

    return frames


def _info_spec(env, spec: GymSpec) -> dict[str, tuple[tuple, str]]:
    """Shape and dtype of each chosen ``info`` field, read off one step from seed 0."""
    if not spec.info:
        return {}
    env.reset(seed=0)
    _, _, _, _, info = env.step(env.action_space.sample())
    out = {}
    for key in spec.info:
        if key not in info:
            raise ValueError(f"{spec.env_id}'s step info has no field {key!r}; it has {sorted(info)}")
        v = np.asarray(info[key])
        if not (np.issubdtype(v.dtype, np.number) or v.dtype == bool):
            raise ValueError(f"info field {key!r} of {spec.env_id} is {v.dtype}, not numeric: it cannot be stored")
        out[key] = (tuple(v.shape), "bool" if v.dtype == bool or key == "success" else "float32")
    return out


def _privileged(env, obs):
    """The env's own observation vector, for scripted policies (None for non-array observations)."""
    try:
        return ArmState(np.asarray(obs, np.float64).copy())
    except (TypeError, ValueError):
        return None


@lru_cache(maxsize=64)
def gym_source(name: str) -> Source:
    """The :class:`Source` a ``gym:`` name describes (built once per name and process)."""
    spec = GymSpec.parse(name)
    env = _make_env(spec, 64)
    try:
        cams = spec.cameras or (DEFAULT_CAMERA,)
        if spec.cameras:
            _camera_ids(env, spec.cameras)  # unknown names fail here, before anything is recorded
        action = _action_spec(env.action_space, spec.env_id)
        fps = spec.fps
        if fps is None:
            render_fps = env.metadata.get("render_fps")
            if not render_fps:
                raise ValueError(f"{spec.env_id} declares no render_fps: give the recording rate (--fps)")
            fps = float(render_fps) / spec.repeat
        limit = env.spec.max_episode_steps if env.spec is not None else None
        max_steps = spec.max_steps or (max(1, int(limit) // spec.repeat) if limit else 1000)
        info = _info_spec(env, spec)
    finally:
        env.close()
    package = str(require("gymnasium").spec(spec.env_id).entry_point).split(".")[0].split(":")[0]

    def make(size: int) -> Simulator:
        e = _make_env(spec, size)
        if spec.cameras:
            render = _mujoco_views(spec.cameras, _camera_ids(e, spec.cameras), size)
        else:
            render = (lambda env: {DEFAULT_CAMERA: resize(np.ascontiguousarray(_render(env)), size)})
        success = (lambda i: bool(np.asarray(i.get("success", False)).any())) if "success" in info else None
        return Simulator(e, cams, render, _privileged, success=success, action_repeat=spec.repeat,
                         info_keys=tuple(k for k in info if k != "success"))

    return Source(name, spec.env_id, f"Gymnasium {spec.env_id}", fps, cams, action, make, "random",
                  has_success="success" in info, max_steps=max_steps, package=package,
                  info_fields=tuple((k, s, d) for k, (s, d) in info.items() if k != "success"))


def _render(env) -> np.ndarray:
    img = env.render()
    if img is None or np.ndim(img) != 3 or np.shape(img)[-1] != 3:
        raise ValueError(f"{env.spec.id}.render() must return an (H, W, 3) frame in rgb_array mode, got "
                         f"{None if img is None else np.shape(img)}")
    return as_uint8_frames(img, f"{env.spec.id}.render()")
