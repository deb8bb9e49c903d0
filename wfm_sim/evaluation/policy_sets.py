"""Policy sets of graded quality, so a score means something on day one.

``graded_plans`` records the scripted expert (without exploration noise) in the real twin from
every start state, then degrades its action sequences in known ways: Gaussian noise of growing
scale, half-speed actions, the plan played at half speed (each action twice), a delayed start,
and uniform random actions. Real performance falls along that list; a world model that can be
trusted ranks the plans the same way. Plans are open-loop (:class:`PlanPolicy`, one plan per
start), so they play identically in both worlds.

Dimension legend: ``S`` starts, ``T`` steps, ``A`` action features.
"""

from __future__ import annotations

import numpy as np

from wfm_sim.envs.real import make_real_vec
from wfm_sim.policies.base import PlanPolicy
from wfm_sim.policies.driving import TrackFollower
from wfm_sim.rollout.play import play


def expert_for(source: str):
    """The source's scripted expert without exploration noise."""
    if source.startswith("carracing"):
        return TrackFollower(noise=0.0)
    if source.startswith("metaworld-"):
        from wfm_sim.envs.sources import metaworld_task
        from wfm_sim.policies.manipulation import MetaWorldExpert

        return MetaWorldExpert(metaworld_task(source), noise=0.0)
    raise ValueError(f"no scripted expert for source {source!r}")


def expert_plans(source: str, seeds: list[int], horizon: int, warmup: np.ndarray, size: int = 64,
                 batch: int = 4) -> np.ndarray:
    """``(S, horizon, A)``: the expert's actions from each start (after ``warmup``), in the real twin."""
    env = make_real_vec(source, min(batch, len(seeds)), size, context_frames=len(warmup) + 1)
    expert = expert_for(source)
    plans = []
    try:
        for c in range(0, len(seeds), env.num_envs):
            eps = play(env, expert, seeds[c : c + env.num_envs], horizon,
                       options={"warmup": warmup} if len(warmup) else None)
            for ep in eps:  # an episode that ended early is padded with its last action
                a = ep.action
                plans.append(np.concatenate((a, np.repeat(a[-1:], horizon - len(a), axis=0))) if len(a) < horizon else a)
    finally:
        env.close()
    return np.stack(plans).astype(np.float32)


def graded_plans(expert: np.ndarray, low, high, neutral, seed: int = 0) -> dict[str, PlanPolicy]:
    """Nine plans from ``expert`` ``(S, T, A)``, best to worst by construction."""
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


def graded_set(source: str, cfg, model) -> dict[str, PlanPolicy]:
    """The graded plan set for ``cfg``'s start states (the same warm-up as scoring uses)."""
    from wfm_sim.envs.sources import get_source
    from wfm_sim.envs.spaces import action_space
    from wfm_sim.evaluation.scoring import neutral_action

    warmup = model.cfg.context_frames - 1 if cfg.warmup is None else cfg.warmup
    space = action_space(get_source(source).action_space)
    neutral = neutral_action(space)
    expert = expert_plans(source, cfg.start_seeds, cfg.horizon, np.tile(neutral, (warmup, 1)),
                          model.cfg.tokenizer.image_size, cfg.real_batch)
    return graded_plans(expert, space.low, space.high, neutral, seed=cfg.seed)
