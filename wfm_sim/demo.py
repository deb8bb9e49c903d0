"""``wfm-sim demo``: an imagined multi-camera drive with the shipped model and a pixel-only driver,
written as an mp4 and a PNG contact sheet, with the frames per second printed."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from wfm_sim.envs.imagined import ImaginedVectorEnv
from wfm_sim.policies.driving import RoadCentroidDriver
from wfm_sim.viz import contact_sheet, mosaic, save_png, write_mp4


def run_demo(model: str = "driving", steps: int = 48, envs: int = 2, out: str | Path = "demo", seed: int = 0,
             decoder: str = "token", mode: str = "parallel", device: str = "auto") -> dict:
    """Drive ``envs`` imagined cars for ``steps`` steps; returns paths and throughput."""
    env = ImaginedVectorEnv(envs, model, decoder=decoder, mode=mode, max_episode_steps=steps + 1, device=device)
    cams = list(env.cameras)
    driver = RoadCentroidDriver(camera=cams[0])
    obs, info = env.reset(seed=seed)
    frames: list[list[np.ndarray]] = [[] for _ in range(envs)]

    def keep(o):
        for i in range(envs):
            views = [o[c][i] for c in cams] if isinstance(o, dict) else [o[i]]
            frames[i].append(mosaic(views, cams, cols=len(cams) if len(cams) <= 4 else 3))

    keep(obs)
    rewards = np.zeros(envs)
    t0 = time.perf_counter()
    for _ in range(steps):
        obs, r, term, trunc, info = env.step(driver(obs))
        rewards += r
        keep(obs)
    elapsed = time.perf_counter() - t0
    out = Path(out)
    video = write_mp4(out / "demo.mp4", [np.concatenate([f[t] for f in frames], axis=0) for t in range(steps + 1)],
                      fps=env.cfg.fps / 2, scale=2)
    picks = [int(t) for t in np.linspace(0, steps, 8)]
    sheet = save_png(out / "demo_contact_sheet.png",
                     contact_sheet([[frames[i][t] for t in picks] for i in range(envs)],
                                   [f"imagined episode {i} (seed {seed + i}), steps {list(picks)}" for i in range(envs)]))
    return {"video": str(video), "contact_sheet": str(sheet), "steps": steps, "envs": envs,
            "env_steps_per_s": steps * envs / elapsed, "frames_per_s": steps * envs * len(cams) / elapsed,
            "imagined_reward": rewards.tolist()}
