"""Drive a policy in a vector env, real or imagined, and keep complete episodes.

:func:`play` is the one episode loop: the recorder (real twins), the Ray rollout workers and
the demo (imagined envs), and policy scoring all call it, so a policy meets both worlds through
the same code. Row ``i`` of the env runs the episode seeded ``seeds[i]``; the env reset and the
policy reset both get that seed, so an episode's content depends on its seed and the batch
layout, not on the worker that ran it.

With a model that groups ``g`` frames per step (grouped time), the env must give every frame
(``obs_frames='all'``); the policy sees each step's newest frame and answers ``g`` actions (a
policy that gives one holds it for the group; a plan gives the next ``g`` of its actions), and
the episode is recorded frame by frame, as the real twin's are: ``g`` rows per step, the step's
reward spread evenly over them and its termination, truncation and extras on its rows (ends on
the last one).

Dimension legend: :mod:`wfm_sim.dims`.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from wfm_sim.datasets.episode import Episode
from wfm_sim.envs.spaces import check_actions, model_action_space
from wfm_sim.policies.base import PlanPolicy, as_policy

PAD_SEED = 2**31 - 1
EXTRA_DTYPES = {"success": bool, "caption": np.int8}
"""Per-step extras stored with another dtype than float32."""


def play(env, policy, seeds: Sequence[int], horizon: int, options: dict | None = None,
         episodes: Sequence[int] | None = None) -> list[Episode]:
    """Run ``len(seeds)`` episodes side by side to their end or ``horizon`` steps.

    Args:
        env: a Gymnasium vector env (``ImaginedVectorEnv``, or real twins from ``make_real_vec``)
            with NEXT_STEP or SAME_STEP autoreset; rows past ``len(seeds)`` run throwaway seeds.
        policy: a :class:`~wfm_sim.policies.Policy` (or scripted policy).
        seeds: one seed per recorded episode (env reset and policy randomness).
        horizon: steps at most; the last recorded step is marked truncated.
        options: passed to ``env.reset`` (e.g. ``{"context": ctxs}`` for an imagined env).
        episodes: episode ids for per-episode plans (default: the row index).

    Returns:
        ``len(seeds)`` :class:`Episode` s: ``obs[i]`` is the frame the policy saw before
        ``action[i]``; ``reward[i]``, ``terminated[i]``, ``truncated[i]`` (and ``success`` when the
        env reports it) followed that action.
    """
    policy = as_policy(policy)
    n, k = env.num_envs, len(seeds)
    if not 1 <= k <= n:
        raise ValueError(f"play runs 1..{n} episodes on this env (num_envs={n}), got {k} seeds")
    if horizon < 1:
        raise ValueError(f"horizon must be >= 1, got {horizon}")
    g = frames_per_step(env)
    if g > 1 and getattr(env, "obs_frames", "last") != "all":
        raise ValueError(f"this model predicts {g} frames per step: make the env with obs_frames='all' "
                         "so that every frame is recorded")
    if g > 1 and isinstance(policy, PlanPolicy) and policy.group != g:
        policy = policy.grouped(g)
    frame_space = env.single_action_space if g == 1 else model_action_space(env.cfg, group=1)
    space = env.single_observation_space  # a trained policy refuses a rig or action space it was not trained for
    frame = next(iter(space.spaces.values())) if hasattr(space, "spaces") else space
    policy.check_spaces(env_cameras(env), int(frame.shape[-3]), frame_space)
    all_seeds = [int(s) for s in seeds] + [PAD_SEED - i for i in range(n - k)]
    ep_ids = None if episodes is None else [int(e) for e in episodes] + [int(episodes[0])] * (n - k)
    obs, info = env.reset(seed=all_seeds, options=options)
    origin = _origins(info, all_seeds)
    policy.reset(all_seeds, episodes=ep_ids)
    extra_keys = env_extras(env)
    rec: dict[str, list] = {k: [] for k in ("obs", "action", "reward", "terminated", "truncated", *extra_keys)}
    alive = np.arange(n) < k
    length = np.zeros(n, dtype=np.int64)
    final: dict[int, object] = {}
    name = f"{type(policy).__name__} actions"
    for t in range(horizon):
        raw = policy(obs if g == 1 else _newest(obs), info)
        if g > 1 and np.shape(raw)[1:] == frame_space.shape:  # one action per step: hold it for the group
            raw = np.repeat(np.asarray(raw)[:, None], g, axis=1)
        action = check_actions(env.single_action_space, raw, (n,), who=name)
        nxt, reward, term, trunc, info = env.step(action)
        trunc = np.asarray(trunc) | (t == horizon - 1)
        for key, value in (("obs", obs), ("action", action), ("reward", reward), ("terminated", term),
                           ("truncated", trunc), *((k, info.get(k)) for k in extra_keys)):
            rec[key].append(value)
        length[alive] += 1
        ended = alive & (np.asarray(term) | trunc)
        for i in np.flatnonzero(ended):  # the frame after the last action (SAME_STEP keeps it in info)
            same_step = "final_obs" in info and info.get("_final_obs", np.zeros(n, bool))[i]
            final[i] = info["final_obs"][i] if same_step else _row(nxt, i)
        alive &= ~ended
        obs = nxt
        if not alive.any():
            break
    episodes = [_episode(rec, env, i, int(length[i]), all_seeds[i], origin[i], final.get(i), extra_keys)
                for i in range(k)]
    return episodes if g == 1 else [_unroll_groups(e, g) for e in episodes]


def frames_per_step(env) -> int:
    """Frames one step of ``env`` predicts: ``k`` for a grouped world model, else 1."""
    cfg = getattr(env, "cfg", None)
    return int(getattr(cfg, "frames_per_step", 1)) if cfg is not None else 1


def _newest(obs):
    """The newest frame of each camera of ``obs_frames='all'`` observations ``(b, f, H, W, 3)``."""
    return {c: v[:, -1] for c, v in obs.items()} if isinstance(obs, dict) else obs[:, -1]


def _unroll_groups(ep: Episode, g: int) -> Episode:
    """A step-per-row episode of a grouped env (``obs (T, g, H, W, 3)``, ``action (T, g, ...)``,
    ``final_obs (g, H, W, 3)``) as a frame-per-row one (``T*g`` rows)."""
    T = len(ep.reward)
    obs = {}
    for c, v in ep.obs.items():  # frame before action j: the previous frame in time
        seq = np.concatenate((v[:1, -1], v[1:].reshape(-1, *v.shape[2:]), ep.final_obs[c]))  # 1 + T*g frames
        obs[c] = seq[: T * g]
    final = {c: v[-1] for c, v in ep.final_obs.items()}

    def ends(flags):
        out = np.zeros((T, g), bool)
        out[:, -1] = flags
        return out.reshape(-1)

    return Episode(obs=obs, action=ep.action.reshape(T * g, *ep.action.shape[2:]),
                   reward=np.repeat(ep.reward / g, g).astype(np.float32), terminated=ends(ep.terminated),
                   truncated=ends(ep.truncated), extras={k: np.repeat(v, g, axis=0) for k, v in ep.extras.items()},
                   seed=ep.seed, origin=ep.origin, final_obs=final)


def _row(obs, i: int):
    return {c: v[i] for c, v in obs.items()} if isinstance(obs, dict) else obs[i]


def env_cameras(env) -> tuple[str, ...]:
    """Camera names of a vector env: imagined envs carry them, real twins in a SyncVectorEnv too."""
    cams = getattr(env, "cameras", None)
    if cams is None and hasattr(env, "envs"):
        cams = getattr(env.envs[0].unwrapped, "cameras", None)
    if cams is None:
        space = env.single_observation_space
        cams = tuple(space.spaces) if hasattr(space, "spaces") else ("CAM_MAIN",)
    return tuple(cams)


def env_extras(env) -> tuple[str, ...]:
    """Per-step ``info`` fields an episode of ``env`` records: the real twin's source extras
    (success, a gym: source's chosen fields), or an imagined env's success and token entropy."""
    if hasattr(env, "envs"):
        source = getattr(env.envs[0].unwrapped, "source", None)
        if source is not None:
            return tuple(source.extras)
    return ("success", "entropy")


def _origins(info: dict, seeds: list[int]) -> list[str]:
    ctx = info.get("context")
    if ctx is not None:
        return [str(c) for c in ctx]
    return [f"seed={s}" for s in seeds]


def _episode(rec: dict, env, row: int, length: int, seed: int, origin: str, final, extra_keys) -> Episode:
    def col(key):
        return np.stack([np.asarray(step[row]) for step in rec[key][:length]])

    frames, cams = rec["obs"][:length], env_cameras(env)
    if isinstance(frames[0], dict):  # the env's camera order, not the Dict space's sorted one
        obs = {c: np.stack([f[c][row] for f in frames]) for c in cams}
    else:
        obs = {cams[0]: np.stack([f[row] for f in frames])}
    if final is not None:
        final = {c: np.asarray(final[c]) for c in cams} if isinstance(final, dict) else {cams[0]: np.asarray(final)}
    extras = {}
    for key in extra_keys:
        if all(s is not None for s in rec[key][:length]):
            values = col(key)
            extras[key] = values.astype(EXTRA_DTYPES.get(key, np.float32))
    return Episode(obs=obs, action=col("action"), reward=col("reward").astype(np.float32),
                   terminated=col("terminated").astype(bool), truncated=col("truncated").astype(bool),
                   extras=extras, seed=seed, origin=origin, final_obs=final)
