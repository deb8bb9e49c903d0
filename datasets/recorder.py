"""Record episodes from a real simulator with any policy into an episode store.

A policy is a callable ``policy(obs, env) -> action`` where ``obs`` maps camera names to
frames and ``env`` is the :class:`~wfm_sim.datasets.sources.SourceEnv` (scripted experts read
the simulator state from it; learned policies ignore it).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import numpy as np
from tqdm.auto import tqdm

from wfm_sim.datasets.sources import SOURCES, Source
from wfm_sim.datasets.store import EpisodeWriter


def get_source(name: str) -> Source:
    if name not in SOURCES:
        raise ValueError(f"unknown source {name!r}; choose one of {sorted(SOURCES)}")
    return SOURCES[name]


def record(source: str | Source, out: str | Path, episodes: int, policy: str | Callable | None = None,
           size: int = 64, max_steps: int | None = None, seed: int = 0, progress: bool = True) -> dict:
    """Record ``episodes`` episodes (appending if ``out`` exists). Returns throughput figures.

    Episode ``i`` of this call is reset with seed ``seed + (episodes already in the store) + i``,
    so resuming an interrupted run continues the same sequence of seeds.
    """
    src = get_source(source) if isinstance(source, str) else source
    max_steps = max_steps or src.max_steps
    writer = EpisodeWriter(out, src.cameras, size, src.action_space, src.fps, src.env_id, extras=src.extras,
                           metadata={"source": src.name, "source_version": src.env_version(),
                                     "policy": policy or src.default_policy if not callable(policy) else getattr(policy, "__name__", "callable")})
    start_ep = writer.num_episodes
    env = src.make(size)
    policy_name = None
    if policy is None or isinstance(policy, str):
        policy_name = policy or src.default_policy
        if policy_name not in src.policies:
            raise ValueError(f"source {src.name} has policies {sorted(src.policies)}, not {policy_name!r}")
    frames, t0 = 0, time.perf_counter()
    bar = tqdm(total=episodes, desc=f"collect {src.name}", unit="ep", disable=not progress)
    try:
        for i in range(episodes):
            ep_seed = seed + start_ep + i
            act = src.policies[policy_name](ep_seed) if policy_name is not None else policy
            obs = env.reset(seed=ep_seed)
            for t in range(max_steps):
                action = np.asarray(act(obs, env))
                next_obs, reward, terminated, truncated, extras = env.step(action)
                truncated = truncated or t == max_steps - 1
                writer.add_step(obs, action, reward, terminated, truncated, **extras)
                obs = next_obs
                frames += 1
                if terminated or truncated:
                    break
            writer.end_episode(seed=ep_seed)
            bar.update(1)
            bar.set_postfix(frames=frames, fps=f"{frames / (time.perf_counter() - t0):.0f}")
    finally:
        bar.close()
        writer.close()
        env.close()
    elapsed = time.perf_counter() - t0
    return {"episodes": episodes, "frames": frames, "seconds": elapsed, "frames_per_s": frames / max(elapsed, 1e-9)}
