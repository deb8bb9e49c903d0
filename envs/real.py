"""Real-simulator twins: the simulator a model learned, as a Gymnasium env with the imagined env's spaces.

``gym.make("wfm_sim/RealDriving-v0")`` beside ``gym.make("wfm_sim/Driving-v0")``: same
observation space (camera rig, frame size), same action space, same fps and action repeat, so
a policy, a plan or an evaluation loop runs in either world unchanged, and an imagined env can
start exactly where a real one is (:meth:`RealEnv.context`).

Dimension legend: :mod:`wfm_sim.dims`.
"""

from __future__ import annotations

from collections import deque

import gymnasium as gym
import numpy as np

from wfm_sim.envs.contexts import Context
from wfm_sim.envs.sources import Source, get_source
from wfm_sim.envs.spaces import action_space, check_actions, pixel_space
from wfm_sim.viz import mosaic


class RealEnv(gym.Env):
    """A real simulator (CarRacing, Meta-World, MuJoCo) seen through a model's camera rig.

    ## Description
    The simulator a recording source names (``wfm-sim collect SOURCE``), stepped at the
    source's rate: each ``step`` repeats the action for the source's action repeat (4 physics
    steps for CarRacing, 8 for Meta-World) and renders every camera, exactly as the data the
    world model learned from was recorded. ``reset(seed=s)`` gives the same start state in any
    freshly made env, so a recorded episode replays from its seed.

    ## Observation Space
    One camera: ``Box(0, 255, (size, size, 3), uint8)``; several: a ``Dict`` keyed by camera
    name. Equal to the observation space of the imagined env of a model trained on this source.

    ## Action Space
    The source's: ``Box([-1, 0, 0], [1, 1, 1])`` (steer, gas, brake) for CarRacing,
    ``Box(-1, 1, (4,))`` (end-effector delta + gripper) for Meta-World, ``Box(-2, 2, (7,))``
    for Pusher. Mis-shaped, NaN or out-of-bound actions raise ``ValueError``.

    ## Rewards
    The simulator's reward, summed over the repeated physics steps.

    ## Episode End
    Terminated when the simulator terminates (CarRacing: lap complete or off the playfield);
    truncated by the simulator's own limit, or by ``max_episode_steps`` when made with
    ``gym.make`` (the registered twins use the source's recording length).

    ## Info
    ``privileged``: the simulator state scripted experts read (:class:`~wfm_sim.envs.sources.CarState`,
    :class:`~wfm_sim.envs.sources.ArmState`); ``success`` where the simulator has one;
    ``seed`` after a seeded reset; the step-info fields a ``gym:`` source was asked to record.

    ## Reset options
    ``{"warmup": actions}``: ``(n, a)`` actions played right after the reset, before the episode
    starts, so that :meth:`context` holds ``n + 1`` frames (policy scoring starts both worlds there).

    ## Arguments
    source (a name from ``wfm-sim collect --help``), size (frame side, default 64),
    context_frames (frames kept for :meth:`context`, default 2), render_mode ('rgb_array').
    """

    metadata = {"render_modes": ["rgb_array"]}

    def __init__(self, source: str | Source = "carracing-4cam", size: int = 64, context_frames: int = 2,
                 render_mode: str | None = None):
        self.source = get_source(source) if isinstance(source, str) else source
        if size < 8:
            raise ValueError(f"size must be >= 8 pixels, got {size}")
        if context_frames < 1:
            raise ValueError(f"context_frames must be >= 1, got {context_frames}")
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode must be None or 'rgb_array', got {render_mode!r}")
        self.sim = self.source.make(size)
        self.size, self.render_mode, self.cameras = size, render_mode, self.source.cameras
        self.metadata = {**self.metadata, "render_fps": self.source.fps}
        self.observation_space = pixel_space(self.cameras, size)
        self.action_space = action_space(self.source.action_space)
        self._frames: deque = deque(maxlen=context_frames)
        self._actions: deque = deque(maxlen=max(context_frames - 1, 1))
        self._steps, self._seed, self._obs = 0, None, None

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer))
                                 or not 0 <= int(seed) < 2**32):
            raise ValueError(f"seed must be an integer in [0, 2**32) or None, got {seed!r}")
        if options is not None and not isinstance(options, dict):
            raise TypeError(f"reset options must be a dict ({{'warmup': actions}}), got {type(options).__name__}")
        super().reset(seed=seed)
        options = dict(options or {})
        warmup = options.pop("warmup", None)
        if options:
            raise ValueError(f"RealEnv.reset takes only options['warmup'], got {sorted(options)}")
        raw = self.sim.reset(seed)
        self._frames.clear()
        self._actions.clear()
        self._steps, self._seed = 0, seed
        obs = self._observe()
        if warmup is not None:  # actions before the episode starts (so a context holds several frames)
            warm = check_actions(self.action_space, warmup, (len(np.asarray(warmup)),), who="warmup actions")
            for a in warm:
                self.sim.step(a)
                self._actions.append(a.copy())
                obs = self._observe()
            raw = self.sim.raw_obs
        info = {"privileged": self.sim.privileged(self.sim.env, raw)}
        if seed is not None:
            info["seed"] = int(seed)
        return obs, info

    def step(self, action):
        if self._obs is None:
            raise RuntimeError("step() called before reset(): call reset(seed=...) first")
        a = check_actions(self.action_space, action, who="action")
        reward, terminated, truncated, sim_info = self.sim.step(a)
        self._actions.append(a.copy())
        self._steps += 1
        obs = self._observe()
        info = {"privileged": self.sim.privileged(self.sim.env, self.sim.raw_obs)}
        if self.sim.success is not None:
            info["success"] = self.sim.success(sim_info)
        declared = {k: d for k, _, d in self.source.info_fields}
        if self.sim.annotate is not None and declared:  # fields computed from the state (captions)
            sim_info = {**sim_info, **self.sim.annotate(self.sim.env, info["privileged"])}
        for key, dtype in declared.items():  # step-info fields the source records
            if key not in sim_info:
                raise KeyError(f"the simulator's step info lacks {key!r} (recorded from its first step); it has {sorted(sim_info)}")
            info[key] = np.asarray(sim_info[key], dtype)
        return obs, float(reward), terminated, truncated, info

    def _observe(self):
        frames = self.sim.render(self.sim.env)
        self._frames.append(frames)
        self._obs = frames
        return frames[self.cameras[0]] if len(self.cameras) == 1 else dict(frames)

    def context(self, frames: int | None = None) -> Context:
        """The last ``frames`` frames of every camera and the actions between them (default: all kept).

        Pass it to an imagined env's ``reset(options={"context": ctx})`` to start imagination
        from where this env is now.
        """
        if self._obs is None:
            raise RuntimeError("context() needs a reset() first")
        have = len(self._frames)
        frames = have if frames is None else int(frames)
        if not 1 <= frames <= have:
            raise ValueError(f"this env holds the last {have} frames (context_frames={self._frames.maxlen}); "
                             f"asked for {frames}")
        stacked = {c: np.stack([f[c] for f in list(self._frames)[-frames:]]) for c in self.cameras}
        acts = np.stack(list(self._actions)[len(self._actions) - (frames - 1):]) if frames > 1 else \
            np.zeros((0,) + self.action_space.shape, self.action_space.dtype)
        return Context(stacked, acts, f"{self.source.env_id} seed={self._seed} step={self._steps}")

    def render(self):
        if self.render_mode != "rgb_array" or self._obs is None:
            return None
        return mosaic([self._obs[c] for c in self.cameras], list(self.cameras))

    def close(self):
        if getattr(self, "sim", None) is not None:
            self.sim.close()
            self.sim = None


def make_real_vec(source: str = "carracing-4cam", num_envs: int = 1, size: int = 64, context_frames: int = 2,
                  max_episode_steps: int | None = None) -> gym.vector.SyncVectorEnv:
    """``num_envs`` real twins stepped together (a ``SyncVectorEnv``, NEXT_STEP autoreset).

    Its spaces equal an :class:`~wfm_sim.envs.imagined.ImaginedVectorEnv`'s of the same size;
    ``vec.call("context")`` returns each sub-env's :class:`~wfm_sim.envs.contexts.Context`.
    """
    src = get_source(source)
    if isinstance(num_envs, bool) or not isinstance(num_envs, (int, np.integer)) or num_envs < 1:
        raise ValueError(f"num_envs must be an integer >= 1, got {num_envs!r}")
    limit = src.max_steps if max_episode_steps is None else int(max_episode_steps)

    def make():
        return gym.wrappers.TimeLimit(RealEnv(src, size, context_frames), limit)

    return gym.vector.SyncVectorEnv([make for _ in range(int(num_envs))])
