"""Record episodes from a real simulator into an episode store.

The recorder plays a policy in the real twin env (:class:`~wfm_sim.envs.real.RealEnv`) with
the one episode loop (:func:`~wfm_sim.rollout.play.play`), so a recorded episode is exactly
what that policy does in the twin: reset the twin with the episode's seed and replay its
actions, and the same frames come back.
"""

from __future__ import annotations

import time
from pathlib import Path

from tqdm.auto import tqdm

from wfm_sim.datasets.store import EpisodeWriter
from wfm_sim.envs.real import make_real_vec
from wfm_sim.envs.sources import Source, get_source
from wfm_sim.policies.base import PlanPolicy
from wfm_sim.policies.registry import make_policy
from wfm_sim.rollout.play import play


def episode_key(source: str, policy: str, size: int, steps: int, seed: int) -> str:
    """The stable identity of a recorded episode: what it was recorded from, how, and its seed."""
    return f"{source}/{policy}/{size}px/{steps}steps/seed={seed}"


def record(source: str | Source, out: str | Path, episodes: int, policy=None, size: int = 64,
           max_steps: int | None = None, seed: int = 0, progress: bool = True, tag: str | None = None) -> dict:
    """Record episodes seeded ``seed .. seed + episodes - 1`` into ``out`` (created, or appended to).

    Idempotent: an episode the store holds already (same source, policy, frame size, length and
    seed) is skipped, so re-running a command that was killed completes it without duplicates.
    To add more episodes to a store, record another seed range.

    Args:
        source: a source name (``wfm-sim collect --help`` lists them) or a :class:`Source`.
        out: the store folder.
        episodes: episodes to record (>= 1).
        policy: a policy name (see :mod:`wfm_sim.policies.registry`) or a policy object;
            default: the source's scripted one.
        size: frame side in pixels.
        max_steps: steps per episode (default: the source's).
        seed: the first episode's seed.
        tag: the policy's name in episode keys (default: the policy name, or its class name for
            an object: give different policy objects different tags).

    Returns:
        ``{"episodes": recorded now, "skipped": already in the store, "frames", "seconds", "frames_per_s"}``.
    """
    src = get_source(source) if isinstance(source, str) else source
    if episodes < 1:
        raise ValueError(f"episodes must be >= 1, got {episodes}")
    steps = src.max_steps if max_steps is None else int(max_steps)
    if steps < 1:
        raise ValueError(f"max_steps must be >= 1, got {max_steps}")
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    name = policy if isinstance(policy, str) else src.default_policy if policy is None else type(policy).__name__
    tag = tag or name
    env = make_real_vec(src.name, 1, size, max_episode_steps=steps)
    try:
        pol = make_policy(name, env.single_action_space, source=src.name) if policy is None or isinstance(policy, str) \
            else policy
        if isinstance(pol, PlanPolicy) and len(pol) < steps:
            raise ValueError(f"the plan has {len(pol)} steps and a {src.name} episode runs up to {steps}: give a plan "
                             f"of at least {steps} steps, or max_steps={len(pol)} (--max-steps)")
        writer = EpisodeWriter(out, src.cameras, size, src.action_space, src.fps, src.env_id, extras=src.extras,
                               metadata={"source": src.name, "source_version": src.env_version(), "policy": name})
    except BaseException:
        env.close()
        raise
    frames, skipped, t0 = 0, 0, time.perf_counter()
    bar = tqdm(total=episodes, desc=f"collect {src.name}", unit="ep", disable=not progress)
    try:
        for ep_seed in range(seed, seed + episodes):
            key = episode_key(src.name, tag, size, steps, ep_seed)
            if writer.has(key):
                skipped += 1
            else:
                [ep] = play(env, pol, [ep_seed], steps)
                ep.key = key
                writer.write_episode(ep)
                frames += len(ep)
            bar.update(1)
            bar.set_postfix(frames=frames, fps=f"{frames / max(time.perf_counter() - t0, 1e-9):.0f}")
    finally:
        bar.close()
        writer.close()
        env.close()
    elapsed = time.perf_counter() - t0
    return {"episodes": episodes - skipped, "skipped": skipped, "frames": frames, "seconds": elapsed,
            "frames_per_s": frames / max(elapsed, 1e-9)}
