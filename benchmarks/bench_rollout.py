"""Ray rollout throughput for 1 and 2 workers, ``wfm-sim generate`` camera frames/s for 1 and 2
workers (streamed to zarr with provenance), and model memory per preset (to size replicas).

    python benchmarks/bench_rollout.py [--model driving] [--episodes 8] [--horizon 8]
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch
from common import emit, machine

from wfm_sim.models import WorldModel, preset
from wfm_sim.rollout import RolloutPool, RolloutRequest
from wfm_sim.synthetic.generate import GenerateConfig, generate

MEASURE = """
import os, sys, numpy as np, torch
from wfm_sim.envs import ImaginedVectorEnv
from wfm_sim.models import WorldModel, preset
def rss():  # resident memory now, MiB (not the peak: imports may have peaked higher)
    return int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
name, cams, envs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
before = rss()
model = WorldModel(preset(name, cameras=tuple(f"CAM_{i}" for i in range(cams)))).setup("cpu", "fp32")
env = ImaginedVectorEnv(envs, model)
s = model.cfg.tokenizer.image_size
env.reset(seed=0, options={"frames": np.zeros((1, cams, s, s, 3), np.uint8)})
env.step(np.zeros((envs, 3), np.float32))
print(rss() - before)
"""


def measured_mib(name: str, cams: int, envs: int) -> float:
    """Resident memory (MiB) added by one replica with ``envs`` imagined envs after a step."""
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", MEASURE, name, str(cams), str(envs)], capture_output=True, text=True)
    return float(out.stdout.strip().splitlines()[-1]) if out.returncode == 0 else float("nan")


def memory_rows() -> list[dict]:
    """Parameters, bf16 weight bytes and KV-cache bytes per imagined env for each preset; for the
    CPU presets also the measured resident memory of a replica with 16 and 64 envs after one step (fp32)."""
    rows = []
    for name, cams in (("small", 1), ("small-mv", 4), ("base", 6), ("large", 6)):
        cfg = preset(name, cameras=tuple(f"CAM_{i}" for i in range(cams)))
        with torch.device("meta"):
            m = WorldModel(cfg)
        params = sum(p.numel() for p in m.parameters())
        bb = cfg.backbone
        dims = m.backbone.dims
        kv = bb.depth * dims.max_len * bb.kv_heads * (bb.dim // bb.heads) * 2 * 2  # bf16 k and v
        rows.append({"preset": name, "cameras": cams, "params_M": params / 1e6, "weights_GiB_bf16": params * 2 / 2**30,
                     "kv_cache_MiB_per_env": kv / 2**20, "tokens_per_step": dims.frame_tokens,
                     **{f"measured_MiB_{e}_envs": measured_mib(name, cams, e) if name.startswith("small") else float("nan")
                        for e in (16, 64)}})
    return rows


def generate_rows(args) -> list[dict]:
    """Camera frames/s of ``generate`` (policy ``road``, the model's shipped contexts) per worker count,
    end to end: Ray actor start-up and model loading included, as a user's run pays them."""
    rows = []
    for workers in (1, 2):
        envs = args.envs_per_worker
        cfg = GenerateConfig(model=args.model, episodes=2 * workers * envs, horizon=args.gen_horizon, workers=workers,
                             envs=envs)
        with tempfile.TemporaryDirectory() as tmp:
            generate(GenerateConfig(model=args.model, episodes=workers, horizon=2, workers=workers, envs=1),
                     f"{tmp}/warm.zarr", progress=False)
            stats = generate(cfg, f"{tmp}/g.zarr", progress=False)
        rows.append({"workers": workers, "episodes": cfg.episodes, "envs_per_batch": envs,
                     "camera_frames": stats["camera_frames"], "camera_frames_s": stats["camera_frames_per_s"],
                     "per_worker_camera_frames_s": stats["camera_frames_per_s"] / workers})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="driving")
    ap.add_argument("--episodes", type=int, default=8)
    ap.add_argument("--horizon", type=int, default=8)
    ap.add_argument("--envs-per-worker", type=int, default=4)
    ap.add_argument("--gen-horizon", type=int, default=48, help="steps per generated episode")
    args = ap.parse_args()
    import ray

    info = machine()
    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False)
    rows = []
    for workers in (1, 2):
        pool = RolloutPool(args.model, workers=workers, envs_per_worker=args.envs_per_worker, num_cpus=1)
        req = RolloutRequest(args.episodes, args.horizon, seed=0)
        pool.run(RolloutRequest(workers, 2, seed=999))  # warm-up
        t0 = time.perf_counter()
        with tempfile.TemporaryDirectory() as tmp:
            pool.run_to_store(req, f"{tmp}/r.zarr", progress=False)
        dt = time.perf_counter() - t0
        cams = len(pool.info()[0] and ray.get(pool.workers[0].spec.remote())["cameras"])
        rows.append({"workers": workers, "episodes": args.episodes, "steps": args.episodes * args.horizon,
                     "env_steps_s": args.episodes * args.horizon / dt, "frames_s": args.episodes * args.horizon * cams / dt})
        pool.shutdown()
    emit(f"ray rollouts ({args.model})", rows, info)
    emit(f"wfm-sim generate ({args.model})", generate_rows(args), info)
    emit("model memory per preset", memory_rows(), info)


if __name__ == "__main__":
    main()
