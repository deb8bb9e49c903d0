"""Policy sets of graded quality, so a score means something on day one.

``graded_plans`` records the scripted expert (without exploration noise) in the real twin from
every start state, then degrades its action sequences in known ways: Gaussian noise of growing
scale, half-speed actions, the plan played at half speed (each action twice), a delayed start,
and uniform random actions. Real performance falls along that list; a world model that can be
trusted ranks the plans the same way. Plans are open-loop (:class:`PlanPolicy`, one plan per
start), so they play identically in both worlds.

Dimension legend: :mod:`wfm_sim.dims`.
"""

from __future__ import annotations

import numpy as np

from wfm_sim.envs.real import make_real_vec
from wfm_sim.envs.sources import get_source, metaworld_task
from wfm_sim.envs.spaces import action_space
from wfm_sim.evaluation.starts import neutral_action
from wfm_sim.policies.base import PlanPolicy
from wfm_sim.policies.driving import TrackFollower
from wfm_sim.policies.manipulation import MetaWorldExpert
from wfm_sim.rollout.play import play


def expert_for(source: str):
    """The source's scripted expert without exploration noise."""
    if source.startswith("carracing"):
        return TrackFollower(noise=0.0)
    if source.startswith("metaworld-"):
        return MetaWorldExpert(metaworld_task(source), noise=0.0)
    raise ValueError(f"no scripted expert for source {source!r}")


def expert_plans(source: str, starts, horizon: int, size: int = 64, batch: int = 4) -> np.ndarray:
    """``(i, horizon, a)``: the expert's actions from each start (a :class:`~wfm_sim.evaluation.starts.Starts`,
    reset and warmed up as scoring does), in the real twin."""
    starts.check_real()
    env = make_real_vec(source, min(batch, len(starts)), size, context_frames=starts.warmups.shape[1] + 1)
    expert = expert_for(source)
    plans = []
    try:
        for chunk in starts.chunks(env.num_envs):
            eps = play(env, expert, [starts.seeds[i] for i in chunk], horizon, options=starts.real_options(chunk))
            for ep in eps:  # an episode that ended early is padded with its last action
                a = ep.action
                plans.append(np.concatenate((a, np.repeat(a[-1:], horizon - len(a), axis=0))) if len(a) < horizon else a)
    finally:
        env.close()
    return np.stack(plans).astype(np.float32)


def graded_plans(expert: np.ndarray, low, high, neutral, seed: int = 0) -> dict[str, PlanPolicy]:
    """Nine plans from ``expert`` ``(i, s, a)``, best to worst by construction."""
    rng = np.random.default_rng(seed)
    low, high = np.asarray(low, np.float32), np.asarray(high, np.float32)
    S, T, A = expert.shape

    def clip(p):
        return np.clip(p, low, high).astype(np.float32)

    span = (high - low) / 2
    plans = {"expert": expert}
    for scale in (0.3, 0.6, 1.0, 1.5):
        plans[f"expert+noise{scale}"] = clip(expert + rng.normal(0, scale, expert.shape) * span)
    plans["half-actions"] = clip(neutral + (expert - neutral) * 0.5)
    plans["slowed-2x"] = np.repeat(expert, 2, axis=1)[:, :T]
    delay = max(1, T // 3)
    plans[f"delayed-{delay}"] = np.concatenate((np.broadcast_to(neutral, (S, delay, A)), expert[:, : T - delay]), axis=1)
    plans["random-plan"] = rng.uniform(low, high, expert.shape).astype(np.float32)
    return {name: PlanPolicy(clip(p)) for name, p in plans.items()}


def graded_set(source: str, starts, cfg, model) -> dict[str, PlanPolicy]:
    """The graded plan set for the start states ``starts`` (:func:`~wfm_sim.evaluation.scoring.make_starts`)."""
    space = action_space(get_source(source).action_space)
    expert = expert_plans(source, starts, cfg.horizon, model.cfg.tokenizer.image_size, cfg.real_batch)
    return graded_plans(expert, space.low, space.high, neutral_action(space), seed=cfg.seed)
