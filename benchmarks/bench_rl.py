"""RL in imagination: imagined env steps/s at batch 64 for the shipped 4-camera driving model and
the one-camera ``rl`` preset, and the PPO trainer's end-to-end imagined steps/s.

    python benchmarks/bench_rl.py [--rl-model runs/driving_rl] [--batch 64] [--steps 5]

Without ``--rl-model`` a random-weight ``rl`` preset model stands in (speed does not depend on
the weights). The machine's matmul peak is printed in the same run, so figures read as ratios.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np
import torch

from common import emit, machine
from wfm_sim.envs import ImaginedVectorEnv
from wfm_sim.models import ActionSpec, WorldModel, preset

CAR = ActionSpec("box", dim=3, low=(-1.0, 0.0, 0.0), high=(1.0, 1.0, 1.0))


def random_rl_model(device: str = "cpu", precision: str = "auto") -> WorldModel:
    """The ``rl`` preset with random weights, except that its termination head never fires.

    A random termination head ends most imagined rollouts at every step, so every step would
    also re-prefill those rows' contexts (the first version of this benchmark timed that: its
    PPO trainer and env rows were 2x slow). A trained CarRacing model terminates about never:
    its episodes end by truncation."""
    torch.manual_seed(0)
    model = WorldModel(preset("rl", cameras=("CAM_FRONT",), action=CAR, name="rl-random"))
    with torch.no_grad():
        model.backbone.head_done[-1].bias.fill_(-30.0)
    return model.setup(device, precision).eval()


def rl_model(path: str | None) -> WorldModel:
    if path:
        return WorldModel.from_pretrained(path, device="cpu", precision="auto")
    return random_rl_model()


def env_speed(model, name: str, batch: int, obs_mode: str, passes: int, steps: int) -> dict:
    env = ImaginedVectorEnv(batch, model, obs_mode=obs_mode, parallel_steps=passes, max_episode_steps=None)
    s, c = model.cfg.tokenizer.image_size, model.cfg.context_frames
    frames = np.random.default_rng(0).integers(0, 255, (c, len(model.cfg.cameras), s, s, 3), dtype=np.uint8)
    env.reset(seed=0, options={"frames": frames, "actions": np.zeros((c - 1, 3), np.float32)})
    act = np.tile(np.array([0.0, 0.5, 0.0], np.float32), (batch, 1))
    for _ in range(3):  # warm-up (the first steps allocate and pick kernels)
        env.step(act)
    t0 = time.perf_counter()
    for _ in range(steps):
        env.step(act)
    dt = time.perf_counter() - t0
    return {"model": name, "cameras": len(model.cfg.cameras), "batch": batch, "obs": obs_mode, "passes": passes,
            "env_steps_s": batch * steps / dt}


def trainer_speed(model_dir: str, batch: int, device: str = "cpu", obs: str = "pixels") -> dict:
    """The whole PPO loop in imagination (collect, update, a checkpoint every 5 iterations), with
    the policy reading decoded frames (``pixels``) or the sampled token ids (``tokens``)."""
    from wfm_sim.rl import ImaginationRLConfig, ImaginationTrainer

    with tempfile.TemporaryDirectory() as out:
        cfg = ImaginationRLConfig(model_dir, out, iterations=2, num_envs=batch, horizon=15, parallel_steps=2,
                                  device=device, progress=False, minibatches=4, obs=obs)
        trainer = ImaginationTrainer(cfg)
        trainer.train()
        t0 = time.perf_counter()
        cfg2 = trainer.cfg
        trainer.cfg = type(cfg2)(**{**cfg2.__dict__, "iterations": 7})  # 5 iterations, one checkpoint, as in a run
        trainer.train()
        dt = time.perf_counter() - t0
    return {"model": "PPO trainer (collect + update)", "cameras": 1, "batch": batch, "obs": obs, "passes": 2,
            "env_steps_s": 5 * batch * 15 / dt}


def encoder_precision_ab(model_dir: str, batch: int, reps: int = 4) -> list[dict]:
    """The PPO iteration (collect + update, no checkpoint) with the policy's conv encoder in fp32
    against the model's precision (bf16 autocast where native), interleaved in one process."""
    from wfm_sim.rl.imagination import ImaginationRLConfig, ImaginationTrainer

    trainers, times = {}, {}
    with tempfile.TemporaryDirectory() as out:
        for name in ("fp32", "model precision"):
            cfg = ImaginationRLConfig(model_dir, f"{out}/{len(trainers)}", iterations=100, num_envs=batch, horizon=15,
                                      parallel_steps=2, device="cpu", progress=False, minibatches=4)
            t = ImaginationTrainer(cfg)
            if name == "fp32":
                t.amp = None
            t.update(t.collect())  # warm-up
            trainers[name], times[name] = t, []
        for _ in range(reps):
            for name, t in trainers.items():
                t0 = time.perf_counter()
                roll = t.collect()
                t1 = time.perf_counter()
                t.update(roll)
                times[name].append((t1 - t0, time.perf_counter() - t1))
    rows = []
    for name, v in times.items():
        c, u = np.mean(v, axis=0)
        rows.append({"model": f"PPO iteration, policy encoder {name}", "cameras": 1, "batch": batch, "obs": "pixels",
                     "passes": 2, "env_steps_s": batch * 15 / (c + u), "update_s": u})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rl-model", default=None, help="a trained rl-preset model folder (default: random weights)")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--skip-shipped", action="store_true")
    args = ap.parse_args()
    info = machine()
    rows = []
    if not args.skip_shipped:
        shipped = WorldModel.from_pretrained("driving", device="cpu", precision="auto")
        rows.append(env_speed(shipped, "driving (shipped, small-mv)", args.batch, "pixels", 8, args.steps))
        rows.append(env_speed(shipped, "driving (shipped, small-mv)", args.batch, "tokens", 2, args.steps))
    rl = rl_model(args.rl_model)
    for obs, passes in (("pixels", 4), ("pixels", 2), ("tokens", 2)):
        rows.append(env_speed(rl, f"rl preset ({rl.cfg.name})", args.batch, obs, passes, args.steps))
    folder = args.rl_model
    if folder is None:
        tmp = tempfile.mkdtemp()
        rl.save_pretrained(tmp)
        folder = tmp
    from wfm_sim.envs.contexts import ContextBank

    if ContextBank.load(folder) is None:
        s = rl.cfg.tokenizer.image_size
        frames = np.random.default_rng(1).integers(0, 255, (8, rl.cfg.context_frames, 1, s, s, 3), dtype=np.uint8)
        ContextBank(frames, np.zeros((8, rl.cfg.context_frames - 1, 3), np.float32), ["bench"] * 8).save(folder)
    rows.append(trainer_speed(folder, args.batch))
    rows.append(trainer_speed(folder, args.batch, obs="tokens"))
    rows += encoder_precision_ab(folder, args.batch)
    emit("RL in imagination", rows, info)


if __name__ == "__main__":
    main()
