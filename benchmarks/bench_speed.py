"""The one speed benchmark: every hot path as a share of this machine's own measured peak.

    python benchmarks/bench_speed.py [--quick] [--compile] [--precision auto] [--out speed.json]

In one run: the bf16 and fp32 matmul peaks; a training step of each component (tokenizer,
backbone, diffusion decoder) at the shipped driving model's size (``small-mv``, 4 cameras of
64x64) and the recipes' batch size; the batched imagined env step (batch 1, 16, 64; pixel and
token observations; sequential and parallel decoding); the RL trainer end to end on the ``rl``
preset; batch-1 latency of the driving model and the ``rl`` preset. Model FLOPs are counted by
``torch.utils.flop_counter`` on one step (matmuls and convolutions, not hardware counters), so
``share`` reads as the fraction of the peak of the precision in use.

The same script runs on a GPU (``--device cuda``): see ``benchmarks/gpu_speed.sh``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from bench_rl import CAR, env_speed, random_rl_model, trainer_speed
from common import emit, machine, sync
from wfm_sim.envs import ImaginedVectorEnv
from wfm_sim.envs.contexts import ContextBank
from wfm_sim.models import WorldModel, preset
from wfm_sim.models.rng import key
from wfm_sim.testing import square_world_store
from wfm_sim.training.loop import TrainConfig, make_optimizer, train_step
from wfm_sim.training.tasks import TASKS

CAMS = ("CAM_FRONT", "CAM_BACK", "CAM_LEFT", "CAM_RIGHT")


def peak_for(model: WorldModel, info: dict) -> float:
    """GFLOP/s of the precision the model runs in."""
    return info["bf16_matmul_gflops"] if model.amp_dtype == torch.bfloat16 else info["fp32_matmul_gflops"]


def flops_of(fn) -> float:
    with FlopCounterMode(display=False) as counter:
        fn()
    return float(counter.get_total_flops())


def training(store: Path, device: str, precision: str, steps: int, compile_: bool, info: dict) -> list[dict]:
    """One step of each component as ``wfm-sim train`` runs it: the backbone reads the per-frame
    token cache the trainer builds once (tokenisation off the critical path), so its step is the
    backbone's own work (the row "backbone, tokenised per batch" is the step without the cache,
    for comparison)."""
    rows = []
    for label in ("tokenizer", "backbone", "backbone, tokenised per batch", "decoder"):
        comp = label.split(",")[0]
        torch.manual_seed(0)
        model = WorldModel(preset("small-mv", cameras=CAMS, success_head=False)).setup(device, precision)
        cache = store.parent / "token_cache" if label == "backbone" else None
        task = TASKS[comp](model, str(store), None, cache_folder=cache, progress=False)
        module = task.module.train()
        params = [p for p in module.parameters() if p.requires_grad]
        opt = make_optimizer(params, TrainConfig(comp, str(store), "unused"))
        ds = task.dataset("train")
        batch = task.collate([ds[i % len(ds)] for i in range(16)]).to(model.device)
        run = torch.compile(task.loss) if compile_ else task.loss

        def step(i=0):
            return train_step(run, batch, key(i, 0, model.device), opt, params, 1.0, model.autocast)

        step()  # warm-up (and compile)
        flops = flops_of(step)
        sync()
        t0 = time.perf_counter()
        for i in range(steps):
            step(i)
        sync()
        dt = (time.perf_counter() - t0) / steps
        rows.append({"component": label, "batch": 16, "samples_s": 16 / dt, "ms_per_step": 1e3 * dt,
                     "gflop_per_step": flops / 1e9, "share_of_peak": flops / dt / 1e9 / peak_for(model, info)})
    return rows


def imagination(model: WorldModel, batches: list[int], steps: int, info: dict) -> list[dict]:
    rows = []
    c, s = model.cfg, model.cfg.tokenizer.image_size
    frames = np.random.default_rng(0).integers(0, 255, (c.context_video_frames, len(c.cameras), s, s, 3), np.uint8)
    for b in batches:
        for obs, mode in (("pixels", "parallel"), ("tokens", "parallel"), ("pixels", "sequential")):
            env = ImaginedVectorEnv(b, model, obs_mode=obs, mode=mode, max_episode_steps=None)
            env.reset(seed=0, options={"frames": frames, "actions": np.zeros((c.context_video_frames - 1, 3), np.float32)})
            act = np.tile(np.asarray(c.action.low, np.float32), (b, 1))
            env.step(act)
            flops = flops_of(lambda: env.step(act))
            n = steps if mode == "parallel" else max(2, steps // 3)
            t0 = time.perf_counter()
            for _ in range(n):
                env.step(act)
            dt = (time.perf_counter() - t0) / n
            rows.append({"batch": b, "obs": obs, "mode": mode, "env_steps_s": b / dt, "ms_per_step": 1e3 * dt,
                         "gflop_per_step": flops / 1e9, "share_of_peak": flops / dt / 1e9 / peak_for(model, info)})
    return rows


def rl(info: dict, batch: int, device: str, precision: str) -> list[dict]:
    model = random_rl_model(device, precision)
    rows = [env_speed(model, "rl preset env", 1, "pixels", 2, 30), env_speed(model, "rl preset env", 1, "tokens", 2, 30),
            env_speed(model, "rl preset env", batch, "tokens", 2, 5)]
    folder = tempfile.mkdtemp()
    model.save_pretrained(folder)
    s = model.cfg.tokenizer.image_size
    frames = np.random.default_rng(1).integers(0, 255, (8, model.cfg.context_frames, 1, s, s, 3), dtype=np.uint8)
    ContextBank(frames, np.zeros((8, model.cfg.context_frames - 1, 3), np.float32), ["bench"] * 8).save(folder)
    rows.append(trainer_speed(folder, batch, device))
    rows.append(trainer_speed(folder, batch, device, obs="tokens"))  # the latent actor-critic: no pixel decoding
    for r in rows:
        r.pop("cameras", None)
        r["ms_per_step"] = 1e3 * r["batch"] / r["env_steps_s"]
        r["imagined_steps_per_hour"] = 3600 * r["env_steps_s"]
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="fewer steps and batches (about 3 minutes)")
    ap.add_argument("--compile", action="store_true", help="torch.compile each training step")
    ap.add_argument("--precision", default="auto")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", default=None, help="write the figures as JSON here")
    args = ap.parse_args()
    info = machine()
    steps = 3 if args.quick else 6
    with tempfile.TemporaryDirectory() as tmp:
        store = square_world_store(Path(tmp) / "sq.zarr", episodes=4, steps=16, size=64, cameras=CAMS)
        train_rows = training(store, args.device, args.precision, steps, args.compile, info)
    emit(f"training steps (small-mv, 4 cameras, batch 16, {args.precision}{', compiled' if args.compile else ''})",
         train_rows, info)
    driving = WorldModel.from_pretrained("driving", device=args.device, precision=args.precision)
    env_rows = imagination(driving, [1, 16] if args.quick else [1, 16, 64], steps, info)
    emit("imagined env steps (shipped driving model, 4 cameras)", env_rows, info)
    rl_rows = rl(info, 16 if args.quick else 64, args.device, args.precision)
    emit("RL in imagination (rl preset, 1 camera)", rl_rows, info)
    if args.out:
        Path(args.out).write_text(json.dumps({"machine": info, "training": train_rows, "imagination": env_rows,
                                              "rl": rl_rows, "args": vars(args)}, indent=2))


if __name__ == "__main__":
    main()
