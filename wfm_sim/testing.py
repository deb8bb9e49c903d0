"""Small synthetic data for tests and examples: a square that the action moves (real dynamics,
tiny frames), written through the same EpisodeWriter the simulators use."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from wfm_sim.datasets.store import EpisodeWriter
from wfm_sim.models import WorldModel


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


def steer_reward_model(cfg, seed: int = 0):
    """A world model whose reward is a known, increasing function of ``action[0]``, whatever the
    frames: the optimal policy is ``action[0] = high`` at every step. For tests of RL in imagination.

    Built from ``cfg`` (a Box-action preset, e.g. ``preset("tiny")``) with random frame
    weights, then: every transformer block is the identity (zero output projections), the
    action embedding carries ``action[0]`` alone into feature 0, the action token's kind
    embedding fills the other features with a constant (so RMSNorm keeps feature 0 monotone),
    the reward head reads feature 0, and the termination head never fires.
    """
    import torch

    torch.manual_seed(seed)
    model = WorldModel(cfg)
    bb = model.backbone
    with torch.no_grad():
        for block in bb.blocks:
            block.attn.proj.weight.zero_()
            block.mlp.w2.weight.zero_()
        first, last = bb.act_emb.mlp[0], bb.act_emb.mlp[2]
        first.weight.zero_()
        first.bias.zero_()
        first.weight[0, 0], first.bias[0] = 1.0, 2.0  # silu(a0 + 2): increasing on the action range
        last.weight.zero_()
        last.bias.zero_()
        last.weight[0, 0] = 4.0
        bb.kind_emb.weight[:, 1:] = 3.0
        bb.kind_emb.weight[:, 0] = 0.0
        for head in (bb.head_reward,):
            head[0].weight.zero_()
            head[0].bias.zero_()
            head[0].weight[0, 0] = 1.0
            head[2].weight.zero_()
            head[2].bias.zero_()
            head[2].weight[0, 0] = 1.0
        bb.head_done[-1].weight.zero_()
        bb.head_done[-1].bias.fill_(-8.0)
    return model.eval()
