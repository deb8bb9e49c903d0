"""Small synthetic data for tests and examples: a square that the action moves (real dynamics,
tiny frames), written through the same EpisodeWriter the simulators use."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from wfm_sim.datasets.store import EpisodeWriter


def square_world_store(path: str | Path, episodes: int = 6, steps: int = 12, size: int = 16,
                       cameras: tuple[str, ...] = ("CAM_FRONT",), seed: int = 0) -> Path:
    """Write a store where a white square moves by ``action[:2]`` (in pixels) on a dark field.

    Reward is the square's x position in [0, 1]; the episode terminates when it touches the
    right edge. A second camera, if asked for, sees the scene mirrored.
    """
    rng = np.random.default_rng(seed)
    w = EpisodeWriter(path, cameras, size, {"type": "box", "shape": [3], "low": [-1, 0, 0], "high": [1, 1, 1]},
                      fps=10, source_env="SquareWorld", extras={"success": ((), "bool")})
    for e in range(episodes):
        x, y = rng.integers(2, size - 6, size=2).astype(float)
        for t in range(steps):
            frame = np.full((size, size, 3), 30, np.uint8)
            frame[int(y) : int(y) + 4, int(x) : int(x) + 4] = (250, 250, 250)
            obs = {c: (frame if i == 0 else frame[:, ::-1].copy()) for i, c in enumerate(cameras)}
            action = np.array([rng.uniform(-1, 1), rng.uniform(0, 1), rng.uniform(0, 1)], np.float32)
            x = float(np.clip(x + 2 * action[0], 0, size - 4))
            y = float(np.clip(y + 2 * (action[1] - 0.5), 0, size - 4))
            terminated = x >= size - 4
            w.add_step(obs, action, x / (size - 4), terminated, t == steps - 1 and not terminated, success=x > size / 2)
            if terminated:
                break
        w.end_episode(seed=e)
    return Path(path)
