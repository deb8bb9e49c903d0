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
from wfm_sim.rollout.play import play


def record(source: str | Source, out: str | Path, episodes: int, policy=None, size: int = 64,
           max_steps: int | None = None, seed: int = 0, progress: bool = True) -> dict:
    """Record ``episodes`` episodes (appending if ``out`` exists). Returns throughput figures.

    Args:
        source: a source name (``wfm-sim collect --help`` lists them) or a :class:`Source`.
        out: the store folder.
        episodes: episodes to record.
        policy: a policy name (see :mod:`wfm_sim.policies.registry`) or a policy object;
            default: the source's scripted one.
        size: frame side in pixels.
        max_steps: steps per episode (default: the source's).
        seed: episode ``i`` of this call is seeded ``seed + (episodes already in the store) + i``,
            so resuming an interrupted run continues the same sequence of seeds.
    """
    from wfm_sim.policies.registry import make_policy

    src = get_source(source) if isinstance(source, str) else source
    if episodes < 1:
        raise ValueError(f"episodes must be >= 1, got {episodes}")
    steps = src.max_steps if max_steps is None else int(max_steps)
    if steps < 1:
        raise ValueError(f"max_steps must be >= 1, got {max_steps}")
    name = policy if isinstance(policy, str) else src.default_policy if policy is None else type(policy).__name__
    env = make_real_vec(src.name, 1, size, max_episode_steps=steps)
    pol = make_policy(name, env.single_action_space, source=src.name) if policy is None or isinstance(policy, str) \
        else policy
    writer = EpisodeWriter(out, src.cameras, size, src.action_space, src.fps, src.env_id, extras=src.extras,
                           metadata={"source": src.name, "source_version": src.env_version(), "policy": name})
    start_ep = writer.num_episodes
    frames, t0 = 0, time.perf_counter()
    bar = tqdm(total=episodes, desc=f"collect {src.name}", unit="ep", disable=not progress)
    try:
        for i in range(episodes):
            [ep] = play(env, pol, [seed + start_ep + i], steps)
            writer.write_episode(ep)
            frames += len(ep)
            bar.update(1)
            bar.set_postfix(frames=frames, fps=f"{frames / (time.perf_counter() - t0):.0f}")
    finally:
        bar.close()
        writer.close()
        env.close()
    elapsed = time.perf_counter() - t0
    return {"episodes": episodes, "frames": frames, "seconds": elapsed, "frames_per_s": frames / max(elapsed, 1e-9)}
