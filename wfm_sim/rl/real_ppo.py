"""The model-free baseline: Stable-Baselines3 PPO on the real twin, with a real-step budget.

Learning in imagination is worth its trouble only if it needs fewer real environment steps
than model-free RL. This trains SB3's PPO directly on a real simulator (``wfm-sim collect``
source, the same camera rig and frame size as a world model of it), counts every real step it
takes, and every ``eval_every`` real steps plays the current policy on ``eval_starts``
validation seeds for full episodes, twice: acting on its Gaussian's mean and sampling from it
(an early PPO policy's clipped mean can sit at "no gas" while its samples drive); the better
way is recorded and saved with the policy. Validation episodes are not charged to the
budget; training episodes use seeds from ``train_seed`` on, so neither touches the test seeds a
final ``wfm-sim score`` uses.

On disk (``out``): ``curve.jsonl`` (real steps, validation return, wall time per evaluation),
``policy/`` (the last policy) and ``best/`` (the best by validation return), each a
``config.json`` + ``model.safetensors`` that every ``--policy`` flag loads
(:class:`SB3PixelPolicy`), never a pickle; ``run.json`` (the config). A run killed between
evaluations resumes from the last one (weights, optimizer and step count; the training episodes
in flight restart).

Observations are the last ``frame_stack`` frames of every camera, channels first
(``(3 * V * frame_stack, H, W)`` uint8), the first frame repeated at an episode's start; the
saved policy stacks frames the same way when it drives.
"""

from __future__ import annotations

import json
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch

from wfm_sim import checkpoint as ckpt
from wfm_sim.envs.real import RealEnv
from wfm_sim.envs.sources import get_source
from wfm_sim.models.limits import check_numbers
from wfm_sim.policies.base import Policy, SeededPolicy, camera_stack

FORMAT = "wfm_sim.SB3Policy"


@dataclass(frozen=True)
class RealPPOConfig:
    """``wfm-sim baseline`` flags: SB3 PPO on the real twin."""

    source: str
    """The real simulator (``wfm-sim collect`` source), e.g. ``carracing-front``."""
    out: str
    """Run folder: curve.jsonl, policy/, best/, run.json, train_state/."""
    real_steps: int = 75_000
    """The budget: real environment steps (at the source's rate, summed over envs) of training."""
    num_envs: int = 4
    """Real twins stepped side by side."""
    size: int = 64
    """Frame side in pixels (a world model of this source sees the same frames)."""
    frame_stack: int = 2
    """Frames of each camera the policy sees (the latest last)."""
    eval_every: int = 10_000
    """Real training steps between validation scores."""
    eval_starts: int = 5
    """Validation episodes per score (full length; the policy's mean and sampled actions each)."""
    eval_seed: int = 1_000_000
    """First validation seed (Dyna scores its iterations on the same ones)."""
    train_seed: int = 8_000_000
    """First seed of the training episodes (one per episode, in order)."""
    n_steps: int = 256
    """PPO: steps per env between updates (RL Zoo's CarRacing settings below, for a fair baseline)."""
    batch_size: int = 128
    n_epochs: int = 10
    lr: float = 1e-4
    gamma: float = 0.99
    gae_lambda: float = 0.95
    clip: float = 0.2
    ent_coef: float = 0.0
    use_sde: bool = True
    """Generalised state-dependent exploration (resampled every 4 steps)."""
    log_std_init: float = -2.0
    seed: int = 0
    compare: str | None = None
    """A ``wfm-sim dyna`` run folder: plot its real return against real steps beside this curve."""
    progress: bool = True

    def __post_init__(self):
        for name in ("real_steps", "num_envs", "frame_stack", "eval_every", "eval_starts", "n_steps", "batch_size",
                     "n_epochs"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise ValueError(f"{name.replace('_', '-')} must be an integer >= 1, got {v!r}")
        if self.size < 36:
            raise ValueError(f"size must be >= 36 pixels (SB3's NatureCNN shrinks a frame 8x), got {self.size}")
        check_numbers(self, positive=("lr", "clip"), nonnegative=("ent_coef",), unit=("gamma", "gae_lambda"))
        for name in ("eval_seed", "train_seed", "seed"):
            if not 0 <= getattr(self, name) < 2**32:
                raise ValueError(f"{name.replace('_', '-')} must be in [0, 2**32), got {getattr(self, name)}")
        if (self.n_steps * self.num_envs) % self.batch_size:
            raise ValueError(f"n-steps * num-envs ({self.n_steps * self.num_envs}) must divide into batches of "
                             f"batch-size {self.batch_size}")
        lo, hi = self.eval_seed, self.eval_seed + self.eval_starts
        # at most one episode per step, seeds offset by the steps already done on a resume
        if self.train_seed < hi and lo < self.train_seed + 2 * self.real_steps + self.num_envs:
            raise ValueError(f"training seeds (from {self.train_seed}) would reach the validation seeds "
                             f"[{lo}, {hi}); give --train-seed or --eval-seed ranges apart")


class StackedFrames(gym.ObservationWrapper):
    """A real twin's observation as the last ``k`` frames of every camera, channels first."""

    def __init__(self, env: RealEnv, k: int):
        super().__init__(env)
        self.k, self.cameras = int(k), tuple(env.unwrapped.cameras)
        s = env.unwrapped.size
        self.observation_space = gym.spaces.Box(0, 255, (3 * len(self.cameras) * self.k, s, s), np.uint8)
        self._frames: deque = deque(maxlen=self.k)

    def reset(self, **kwargs):
        obs, info = self.env.reset(**kwargs)
        self._frames.clear()
        return self.observation(obs), info

    def observation(self, obs):
        frame = stack_channels(camera_stack(_batched(obs), self.cameras))[0]
        if not self._frames:
            self._frames.extend([frame] * self.k)
        else:
            self._frames.append(frame)
        return np.concatenate(list(self._frames), axis=0)


def _batched(obs):
    return {c: np.asarray(v)[None] for c, v in obs.items()} if isinstance(obs, dict) else np.asarray(obs)[None]


def stack_channels(frames: np.ndarray) -> np.ndarray:
    """``(b, v, H, W, 3)`` -> ``(b, 3v, H, W)``."""
    b, v, h, w, c = frames.shape
    return np.ascontiguousarray(frames.transpose(0, 1, 4, 2, 3).reshape(b, v * c, h, w))


def _policy_kwargs(cfg: RealPPOConfig) -> dict:
    return {"log_std_init": cfg.log_std_init, "ortho_init": False, "net_arch": {"pi": [256], "vf": [256]},
            "activation_fn": "gelu"}


def _build_kwargs(kw: dict) -> dict:
    acts = {"gelu": torch.nn.GELU, "relu": torch.nn.ReLU, "tanh": torch.nn.Tanh}
    return {**kw, "activation_fn": acts[kw["activation_fn"]]}


class SB3PixelPolicy(SeededPolicy):
    """A saved SB3 pixel policy as a wfm_sim :class:`~wfm_sim.policies.Policy`.

    It keeps the last ``frame_stack`` frames of each row, as :class:`StackedFrames` did in
    training; :meth:`reset` starts a row's stack afresh. Deterministic (the Gaussian's mean,
    clipped to the bounds) unless made with ``deterministic=False``: then each step draws from
    the policy's per-step Gaussian with the row's episode generator (seeded by :meth:`reset`).
    A clipped mean can sit at a bound the samples often leave (no gas while the samples press
    it), so an early PPO policy may drive only when sampled."""

    stream = 17

    def __init__(self, sb3_policy, meta: dict, deterministic: bool = True):
        super().__init__()
        self.net, self.meta, self.deterministic = sb3_policy.eval(), meta, bool(deterministic)
        self.cameras, self.k = tuple(meta["cameras"]), int(meta["frame_stack"])
        self.image_size = int(meta["image_size"])
        self._stacks: dict[int, deque] = {}

    def reset(self, seeds, rows=None, episodes=None) -> None:
        super().reset(seeds, rows, episodes)
        for r in self._rows(seeds, rows):
            self._stacks.pop(r, None)

    def check_spaces(self, cameras, image_size: int, action_space) -> None:
        if tuple(cameras) != self.cameras or int(image_size) != self.image_size:
            raise ValueError(f"this SB3 policy acts on cameras {list(self.cameras)} at {self.image_size}px; "
                             f"the env has cameras {list(cameras)} at {image_size}px")
        shape = tuple(getattr(action_space, "shape", ()) or ())
        if shape != (len(self.meta["low"]),):
            raise ValueError(f"this SB3 policy gives {len(self.meta['low'])} action values; the env takes {shape}")

    @torch.no_grad()
    def __call__(self, obs, info=None) -> np.ndarray:
        if isinstance(obs, dict):
            missing = [c for c in self.cameras if c not in obs]
            if missing:
                raise ValueError(f"this SB3 policy reads cameras {list(self.cameras)}; the observation lacks {missing}")
        frames = camera_stack(obs, self.cameras if isinstance(obs, dict) else None)
        want = (len(self.cameras), self.image_size, self.image_size, 3)
        if tuple(np.shape(frames)[1:]) != want:
            raise ValueError(f"this SB3 policy takes (n, {', '.join(map(str, want))}) frames, got {tuple(np.shape(frames))}")
        now = stack_channels(np.asarray(frames, np.uint8))
        stacked = []
        for r, f in enumerate(now):
            q = self._stacks.get(r)
            if q is None:
                q = self._stacks[r] = deque([f] * self.k, maxlen=self.k)
            else:
                q.append(f)
            stacked.append(np.concatenate(list(q), axis=0))
        if self.deterministic:
            actions, _ = self.net.predict(np.stack(stacked), deterministic=True)
        else:
            x, _ = self.net.obs_to_tensor(np.stack(stacked))
            dist = self.net.get_distribution(x).distribution
            mean, std = dist.mean.numpy(), dist.stddev.numpy()
            noise = np.stack([self.rng(r).standard_normal(mean.shape[1]) for r in range(len(mean))])
            actions = mean + std * noise
        return np.clip(actions, self.meta["low"], self.meta["high"]).astype(np.float32)

    @classmethod
    def from_pretrained(cls, path: str | Path, deterministic: bool | None = None) -> "SB3PixelPolicy":
        """``deterministic``: act on the mean or sample (default: the way the saved policy
        scored best on validation, ``config.json``'s ``deterministic``)."""
        from stable_baselines3.common.policies import ActorCriticCnnPolicy

        from wfm_sim.models.world_model import load_state_strict

        path = Path(path)
        meta = ckpt.read_json(path / "config.json", FORMAT)["config"]
        s, c = int(meta["image_size"]), 3 * len(meta["cameras"]) * int(meta["frame_stack"])
        net = ActorCriticCnnPolicy(gym.spaces.Box(0, 255, (c, s, s), np.uint8),
                                   gym.spaces.Box(np.asarray(meta["low"], np.float32), np.asarray(meta["high"], np.float32)),
                                   lambda _: 0.0, use_sde=bool(meta["use_sde"]), **_build_kwargs(meta["policy_kwargs"]))
        load_state_strict(net, ckpt.load_tensors(path / "model.safetensors"), path)
        return cls(net, meta, meta.get("deterministic", True) if deterministic is None else deterministic)


def save_sb3_policy(model, cfg: RealPPOConfig, path: Path, info: dict | None = None) -> Path:
    """The PPO's policy network as ``config.json`` + ``model.safetensors`` (no pickle)."""
    src = get_source(cfg.source)
    a = src.action_space
    meta = {"cameras": list(src.cameras), "image_size": cfg.size, "frame_stack": cfg.frame_stack,
            "low": np.asarray(a["low"], np.float32).tolist(), "high": np.asarray(a["high"], np.float32).tolist(),
            "use_sde": cfg.use_sde, "policy_kwargs": _policy_kwargs(cfg), "trained_on": f"{cfg.source} (real)",
            **(info or {})}
    path.mkdir(parents=True, exist_ok=True)
    # Cloned: the shared feature extractor appears under three names, which safetensors will not alias.
    state = {k: v.detach().cpu().clone() for k, v in model.policy.state_dict().items()}
    ckpt.save_tensors(path / "model.safetensors", state, {"format": FORMAT})
    ckpt.atomic_write_json(path / "config.json", {"format": FORMAT, "config": meta})
    return path


def evaluate_real(policy: Policy, source: str, seeds: list[int], size: int, with_steps: bool = False):
    """Full-episode real returns of ``policy`` from ``seeds`` (one twin per seed, side by side);
    ``with_steps``: also the real steps they took."""
    from wfm_sim.envs.real import make_real_vec
    from wfm_sim.rollout import play

    src = get_source(source)
    env = make_real_vec(source, len(seeds), size=size)
    try:
        eps = play(env, policy, seeds, horizon=src.max_steps - 1)
    finally:
        env.close()
    returns = [float(np.sum(e.reward)) for e in eps]
    return (returns, int(sum(len(e.reward) for e in eps))) if with_steps else returns


class _SeededReset(gym.Wrapper):
    """Each episode of this env gets the next seed of its own stream (envs interleave: env ``i``
    of ``n`` takes ``first + i, first + i + n, ...``), so training episodes are reproducible and
    never reach the validation seeds."""

    def __init__(self, env, first: int, stride: int):
        super().__init__(env)
        self.next_seed, self.stride = int(first), int(stride)

    def reset(self, **kwargs):
        kwargs["seed"] = self.next_seed
        self.next_seed += self.stride
        return self.env.reset(**kwargs)


def train_real_ppo(cfg: RealPPOConfig) -> list[dict]:
    """Train (or resume) the baseline; returns the validation curve."""
    out = Path(cfg.out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file; a baseline run needs a folder")
    src = get_source(cfg.source)
    run_file = out / "run.json"
    if cfg.compare is not None and not (Path(cfg.compare) / "dyna.jsonl").is_file():
        raise FileNotFoundError(f"--compare {cfg.compare}: not a wfm-sim dyna run folder (no dyna.jsonl)")
    mine = ckpt.run_settings(cfg, run_file, "baseline run", free=("real_steps", "compare"))
    out.mkdir(parents=True, exist_ok=True)
    ckpt.atomic_write_json(run_file, mine)
    curve_file, state_dir = out / "curve.jsonl", out / "train_state"
    curve = [json.loads(x) for x in curve_file.read_text().splitlines()] if curve_file.is_file() else []
    done = curve[-1]["real_steps"] if curve else 0
    if done < cfg.real_steps:
        _train(cfg, src, out, curve, done)
    if cfg.compare is not None:
        plot_real_steps(out / "real_steps.png", curve, Path(cfg.compare))
    return curve


def _train(cfg: RealPPOConfig, src, out: Path, curve: list[dict], done: int) -> None:
    from stable_baselines3 import PPO
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.vec_env import DummyVecEnv

    curve_file, state_dir = out / "curve.jsonl", out / "train_state"

    def make(i: int):
        def thunk():
            env = gym.wrappers.TimeLimit(RealEnv(src, cfg.size), src.max_steps)
            return StackedFrames(_SeededReset(env, cfg.train_seed + done + i, cfg.num_envs), cfg.frame_stack)
        return thunk

    venv = DummyVecEnv([make(i) for i in range(cfg.num_envs)])
    model = PPO("CnnPolicy", venv, n_steps=cfg.n_steps, batch_size=cfg.batch_size, n_epochs=cfg.n_epochs,
                learning_rate=cfg.lr, gamma=cfg.gamma, gae_lambda=cfg.gae_lambda, clip_range=cfg.clip,
                ent_coef=cfg.ent_coef, use_sde=cfg.use_sde, sde_sample_freq=4 if cfg.use_sde else -1,
                policy_kwargs=_build_kwargs(_policy_kwargs(cfg)), seed=cfg.seed, device="cpu", verbose=0)
    if done:  # resume: weights, optimizer and the step count of the last evaluation
        tensors = ckpt.load_tensors(state_dir / "state.safetensors")
        model.policy.load_state_dict({k[7:]: v for k, v in tensors.items() if k.startswith("policy.")})
        opt = json.loads((state_dir / "optimizer.json").read_text())
        model.policy.optimizer.load_state_dict(_optimizer_state(opt, tensors))
        model.num_timesteps = done
    best = max((c["val_return"] for c in curve), default=-np.inf)
    t0 = time.perf_counter() - (curve[-1]["wall_s"] if curve else 0.0)
    bar = None
    if cfg.progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=cfg.real_steps, initial=done, unit="real step", desc="PPO on the real twin")

    class Eval(BaseCallback):
        def _on_step(self) -> bool:
            nonlocal best
            if bar is not None:
                bar.update(cfg.num_envs)
            steps = self.model.num_timesteps
            if steps % cfg.eval_every < cfg.num_envs or steps >= cfg.real_steps:
                self._evaluate(steps)
            return steps < cfg.real_steps

        def _evaluate(self, steps: int) -> None:
            nonlocal best
            if curve and curve[-1]["real_steps"] >= steps:
                return
            policy_dir = save_sb3_policy(self.model, cfg, out / "policy", {"real_steps": steps})
            seeds = list(range(cfg.eval_seed, cfg.eval_seed + cfg.eval_starts))
            modes = {m: evaluate_real(SB3PixelPolicy.from_pretrained(policy_dir, deterministic=m == "mean"),
                                      cfg.source, seeds, cfg.size) for m in ("mean", "sampled")}
            mode = max(modes, key=lambda m: np.mean(modes[m]))  # the policy's better way to act
            row = {"real_steps": int(steps), "val_return": float(np.mean(modes[mode])),
                   "val_return_std": float(np.std(modes[mode])), "val_mode": mode,
                   **{f"val_return_{m}": float(np.mean(r)) for m, r in modes.items()},
                   "val_seeds": [cfg.eval_seed, cfg.eval_starts], "wall_s": time.perf_counter() - t0}
            save_sb3_policy(self.model, cfg, out / "policy", {"real_steps": steps, "deterministic": mode == "mean"})
            if row["val_return"] > best:
                best = row["val_return"]
                save_sb3_policy(self.model, cfg, out / "best", {"real_steps": steps, "val_return": best,
                                                                 "deterministic": mode == "mean"})
            _save_state(self.model, state_dir)
            curve.append(row)
            ckpt.atomic_write_bytes(curve_file, "".join(json.dumps(c) + "\n" for c in curve).encode())

    try:
        model.learn(cfg.real_steps - done, callback=Eval(), reset_num_timesteps=False)
    finally:
        venv.close()
        if bar is not None:
            bar.close()


def plot_real_steps(path: Path, curve: list[dict], dyna: Path) -> Path:
    """Real return against real environment steps: the PPO baseline's validation curve beside a
    Dyna run's iterations (real and imagined return; real steps are its data store's steps)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    logs = [json.loads(x) for x in (dyna / "dyna.jsonl").read_text().splitlines() if x.strip()]
    logs = [x for x in logs if "real_steps" in x]
    fig, ax = plt.subplots(figsize=(6.5, 4))
    ax.errorbar([c["real_steps"] for c in curve], [c["val_return"] for c in curve],
                yerr=[c["val_return_std"] for c in curve], fmt="o-", capsize=3, label="PPO on the real twin (model-free)")
    if logs:
        ax.errorbar([x["real_steps"] for x in logs], [x["real_return"] for x in logs],
                    yerr=[x["real_return_std"] for x in logs], fmt="s-", capsize=3, label="Dyna policy, real")
        ax.plot([x["real_steps"] for x in logs], [x["imagined_return"] for x in logs], "s--", alpha=0.6,
                label="Dyna policy, imagined")
    ax.set_xlabel("real environment steps used")
    ax.set_ylabel("return on the validation seeds")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    tmp = path.with_name(path.stem + ".partial.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)
    return path


def _save_state(model, folder: Path) -> None:
    """Weights and AdamW state as safetensors + JSON (the step count lives in ``curve.jsonl``)."""
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {f"policy.{k}": v.detach().cpu().clone() for k, v in model.policy.state_dict().items()}
    opt = model.policy.optimizer.state_dict()
    meta = {"param_groups": opt["param_groups"], "state": {}}
    for pid, st in opt["state"].items():
        meta["state"][str(pid)] = {}
        for k, v in st.items():
            if torch.is_tensor(v):
                tensors[f"opt.{pid}.{k}"] = v.detach().cpu().clone()
                meta["state"][str(pid)][k] = "tensor"
            else:
                meta["state"][str(pid)][k] = v
    ckpt.save_tensors(folder / "state.safetensors", tensors, {"format": FORMAT + ".state"})
    ckpt.atomic_write_json(folder / "optimizer.json", meta)


def _optimizer_state(meta: dict, tensors: dict) -> dict:
    state = {int(pid): {k: (tensors[f"opt.{pid}.{k}"] if v == "tensor" else v) for k, v in st.items()}
             for pid, st in meta["state"].items()}
    return {"param_groups": meta["param_groups"], "state": state}
