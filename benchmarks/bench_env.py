"""Imagined env throughput: env steps/s and camera frames/s for batch 1, 16, 64, with token or
diffusion decoding and pixel or latent (token) observations. For a model that predicts k frames
per step (grouped time) ``frames_s`` counts all k: frames of video per second of compute.

    python benchmarks/bench_env.py [--model driving | FOLDER] [--batches 1 16 64] [--steps 6]

Without a shipped model (or with --random), a random-weight model of the shipped driving
model's size stands in: speed does not depend on the weights.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from common import emit, machine
from wfm_sim.envs import ImaginedVectorEnv
from wfm_sim.models import ActionSpec, WorldModel, preset, shipped_models


def build(model_name: str, random: bool, precision: str) -> WorldModel:
    if not random and (model_name in shipped_models() or Path(model_name).is_dir()):
        return WorldModel.from_pretrained(model_name, device="auto", precision=precision)
    cams = ("CAM_FRONT", "CAM_BACK", "CAM_LEFT", "CAM_RIGHT")
    torch.manual_seed(0)
    return WorldModel(preset("small-mv", cameras=cams, action=ActionSpec())).setup("auto", precision).eval()


def run(model: WorldModel, b: int, decoder: str, obs_mode: str, mode: str, steps: int) -> dict:
    env = ImaginedVectorEnv(b, model, decoder=decoder, obs_mode=obs_mode, mode=mode, max_episode_steps=10_000)
    c, s = model.cfg, model.cfg.tokenizer.image_size
    C, k = c.context_video_frames, c.frames_per_step
    frames = np.random.default_rng(0).integers(0, 255, (C, len(c.cameras), s, s, 3), dtype=np.uint8)
    ctx_a = np.zeros((C - 1, c.action.dim), np.float32)
    env.reset(seed=0, options={"frames": frames, "actions": ctx_a})
    act = np.tile(np.asarray(c.action.low, np.float32), (b, k, 1) if k > 1 else (b, 1))
    env.step(act)  # warm-up
    t0 = time.perf_counter()
    for _ in range(steps):
        env.step(act)
    dt = time.perf_counter() - t0
    return {"batch": b, "mode": mode, "decoder": decoder, "obs": obs_mode, "frames_per_step": k,
            "env_steps_s": b * steps / dt, "frames_s": b * steps * k * len(c.cameras) / dt}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="driving")
    ap.add_argument("--random", action="store_true", help="random weights of the same size")
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 16, 64])
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--precision", default="auto")
    args = ap.parse_args()
    info = machine()
    model = build(args.model, args.random, args.precision)
    rows = []
    for b in args.batches:
        rows.append(run(model, b, "token", "pixels", "parallel", args.steps))
        rows.append(run(model, b, "diffusion", "pixels", "parallel", max(2, args.steps // 2)))
        rows.append(run(model, b, "token", "tokens", "parallel", args.steps))
        rows.append(run(model, b, "token", "pixels", "sequential", max(2, args.steps // 2)))
    emit(f"imagined env ({args.model}{' random weights' if args.random else ''}, {len(model.cfg.cameras)} cameras)", rows, info)


if __name__ == "__main__":
    main()
