"""``wfm-sim demo``: an imagined multi-camera drive with the shipped model and a pixel-only driver,
written as an mp4 and a PNG contact sheet, with the frames per second printed."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from wfm_sim.envs.imagined import ImaginedVectorEnv
from wfm_sim.policies.driving import RoadCentroidDriver
from wfm_sim.rollout.play import play
from wfm_sim.viz import contact_sheet, mosaic, save_png, write_mp4


def run_demo(model: str = "driving", steps: int = 48, envs: int = 2, out: str | Path = "demo", seed: int = 0,
             decoder: str = "token", mode: str = "parallel", device: str = "auto") -> dict:
    """Drive ``envs`` imagined cars for ``steps`` steps; returns paths and throughput.

    Throughput counts the whole episode loop (context encoding at reset, the policy, the
    world-model steps and pixel decoding).
    """
    if steps < 1 or envs < 1:
        raise ValueError(f"steps and envs must be >= 1, got steps={steps}, envs={envs}")
    env = ImaginedVectorEnv(envs, model, decoder=decoder, mode=mode, max_episode_steps=steps + 1, device=device)
    cams = list(env.cameras)
    driver = RoadCentroidDriver(camera=cams[0])
    t0 = time.perf_counter()
    episodes = play(env, driver, [seed + i for i in range(envs)], steps)
    elapsed = time.perf_counter() - t0
    cols = len(cams) if len(cams) <= 4 else 3
    frames = [[mosaic([ep.obs[c][t] for c in cams], cams, cols=cols, scale=2) for t in range(len(ep))]
              + [mosaic([ep.final_obs[c] for c in cams], cams, cols=cols, scale=2)] for ep in episodes]
    length = min(len(f) for f in frames)
    out = Path(out)
    video = write_mp4(out / "demo.mp4", [np.concatenate([f[t] for f in frames], axis=0) for t in range(length)],
                      fps=env.cfg.fps / 2)
    picks = [int(t) for t in np.linspace(0, length - 1, 8)]
    sheet = save_png(out / "demo_contact_sheet.png",
                     contact_sheet([[frames[i][t] for t in picks] for i in range(envs)],
                                   [f"imagined episode {i} (seed {seed + i})" for i in range(envs)], scale=1,
                                   col_labels=[f"step {t}" for t in picks]))
    n_steps = sum(len(ep) for ep in episodes)
    return {"video": str(video), "contact_sheet": str(sheet), "steps": steps, "envs": envs,
            "env_steps_per_s": n_steps / elapsed, "frames_per_s": n_steps * len(cams) / elapsed,
            "imagined_reward": [ep.total_reward() for ep in episodes]}
