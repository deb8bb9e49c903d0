"""Behaviour cloning: a :class:`~wfm_sim.policies.ConvPolicy` regressed onto a store's actions.

Used to build graded policy sets for scoring (how well does imagination rank policies whose real
quality spreads from random to expert?): the same code with less data, fewer steps or noisier
targets gives a worse policy, by a known recipe, reproducibly from a seed.

Dimension legend: :mod:`wfm_sim.dims`.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from wfm_sim import checkpoint as ckpt
from wfm_sim.datasets.store import EpisodeReader, StoreError
from wfm_sim.envs.real import make_real_vec
from wfm_sim.envs.sources import get_source
from wfm_sim.policies.base import ConvPolicy, ConvPolicyConfig, Policy, camera_stack
from wfm_sim.rollout.play import play


@dataclass(frozen=True)
class BCConfig:
    """One behaviour-cloned policy."""

    episodes: int = 50
    """Train on the store's first ``episodes`` episodes (fewer: a weaker policy)."""
    steps: int = 1000
    batch_size: int = 64
    lr: float = 1e-3
    action_noise: float = 0.0
    """Gaussian noise (in action units) added to the targets: a deliberately worse teacher."""
    width: int = 32
    head: str = "pool"
    """The ConvPolicy's head (``ConvPolicyConfig.head``): ``"keypoints"`` sees where things are."""
    shift: int = 0
    """Random-shift augmentation: each training frame is padded by ``shift`` pixels (edge colour)
    and cropped back at a random offset (DrQ), so the policy does not fit exact pixel positions."""
    seed: int = 0

    def __post_init__(self):
        for name in ("episodes", "steps", "batch_size", "width"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.shift < 0:
            raise ValueError(f"shift must be >= 0, got {self.shift}")
        if self.action_noise < 0:
            raise ValueError(f"action_noise must be >= 0, got {self.action_noise}")


def _load(store: str | Path, episodes: int, cameras: tuple[str, ...] | None):
    r = EpisodeReader(store)
    if r.action_space["type"] != "box":
        raise StoreError(f"behaviour cloning a ConvPolicy needs Box actions; {store} has {r.action_space}")
    if episodes > r.num_episodes:
        raise StoreError(f"{store} holds {r.num_episodes} episodes; asked to clone from {episodes}")
    cams = tuple(sorted(cameras or r.cameras))  # the Dict observation's order
    end = r.episode_bounds(episodes - 1)[1]
    frames = np.stack([r.read(f"obs/{c}", 0, end) for c in cams], axis=1)  # (t, v, H, W, 3)
    return r, cams, frames, r.read("action", 0, end).astype(np.float32)


def random_shift(frames: torch.Tensor, pad: int, rng: np.random.Generator) -> torch.Tensor:
    """``(b, v, H, W, 3)`` frames, each sample moved by up to ``pad`` pixels (all its cameras alike)."""
    if pad == 0:
        return frames
    n, v, h, w, c = frames.shape
    x = frames.permute(0, 1, 4, 2, 3).reshape(n, v * c, h, w).float()
    padded = torch.nn.functional.pad(x, (pad,) * 4, mode="replicate")
    dy, dx = rng.integers(0, 2 * pad + 1, (2, n))
    out = torch.stack([padded[i, :, dy[i]:dy[i] + h, dx[i]:dx[i] + w] for i in range(n)])
    return out.reshape(n, v, c, h, w).permute(0, 1, 3, 4, 2).to(frames.dtype)


def _new_policy(reader: EpisodeReader, cameras: tuple[str, ...], cfg: BCConfig) -> ConvPolicy:
    a = reader.action_space
    torch.manual_seed(cfg.seed)
    return ConvPolicy(ConvPolicyConfig(image_size=reader.image_size, cameras=len(cameras), action_dim=a["shape"][0],
                                       low=tuple(a["low"]), high=tuple(a["high"]), width=cfg.width, head=cfg.head))


def fit_policy(policy: ConvPolicy, opt, frames: np.ndarray, actions: np.ndarray, cfg: BCConfig, steps: int,
         rng: np.random.Generator, desc: str, progress: bool) -> float:
    """``steps`` Adam steps of MSE regression of ``policy`` onto ``actions``; the last batch's loss."""
    lo, hi = policy.low.numpy(), policy.high.numpy()
    loss = float("nan")
    policy.train()
    for _ in tqdm(range(steps), desc=desc, disable=not progress):
        idx = rng.integers(0, len(frames), cfg.batch_size)
        target = actions[idx] + (rng.normal(0, cfg.action_noise, actions[idx].shape).astype(np.float32)
                                 if cfg.action_noise else 0.0)
        target = torch.from_numpy(np.clip(target, lo, hi))
        x = random_shift(torch.from_numpy(frames[idx]), cfg.shift, rng)
        mse = ((policy.forward(x) - target) ** 2).mean()  # the module (policy(obs) is the no-grad Policy call)
        opt.zero_grad(set_to_none=True)
        mse.backward()
        opt.step()
        loss = mse.item()
    policy.eval()
    return loss


def train_bc(store: str | Path, out: str | Path, cfg: BCConfig = BCConfig(), cameras: tuple[str, ...] | None = None,
             progress: bool = True) -> dict:
    """Clone the actions of ``store``'s first ``cfg.episodes`` episodes into a ConvPolicy saved at ``out``."""
    r, cams, frames, actions = _load(store, cfg.episodes, cameras)
    policy = _new_policy(r, cams, cfg)
    opt = torch.optim.Adam(policy.parameters(), lr=cfg.lr)
    loss = fit_policy(policy, opt, frames, actions, cfg, cfg.steps, np.random.default_rng(cfg.seed), f"bc {Path(out).name}",
                progress)
    policy.save_pretrained(out)
    record = {"data": str(store), "cameras": list(cams), "frames": int(len(frames)), "final_mse": loss, **asdict(cfg)}
    ckpt.atomic_write_json(Path(out) / "bc.json", record)  # last: its presence marks a finished policy
    return record


class ExpertLabels(Policy):
    """Acts with ``learner`` and keeps, for every frame the learner sees, the action ``expert``
    (a scripted policy reading the real twin's state) would take there: the data of one DAgger
    round (Ross et al. 2011), states from the learner's own mistakes, labels from the expert."""

    privileged = True  # play() hands it the twin's info, for the expert

    def __init__(self, learner: ConvPolicy, expert, cameras: tuple[str, ...]):
        self.learner, self.expert, self.cameras = learner, expert, cameras
        self.frames: list[np.ndarray] = []
        self.labels: list[np.ndarray] = []

    def reset(self, seeds, rows=None, episodes=None) -> None:
        self.learner.reset(seeds, rows, episodes)
        self.expert.reset(seeds, rows, episodes)

    def __call__(self, obs, info=None) -> np.ndarray:
        self.labels.append(np.asarray(self.expert(obs, info), np.float32))
        self.frames.append(camera_stack(obs, self.cameras))
        return self.learner(obs)


def train_dagger(store: str | Path, out: str | Path, source: str, expert, cfg: BCConfig = BCConfig(),
                 rounds: int = 4, episodes_per_round: int = 40, steps_per_round: int = 1000,
                 first_seed: int = 3_000_000, num_envs: int = 10, progress: bool = True) -> dict:
    """Behaviour cloning, then ``rounds`` of DAgger in the real twin ``source``.

    Each round plays the current policy for ``episodes_per_round`` fresh episodes (seeds from
    ``first_seed``: keep them apart from the seeds a policy is scored on), labels every frame it
    saw with ``expert``'s action, adds them to the data and trains ``steps_per_round`` more steps
    on all of it. Plain cloning only ever sees the expert's own states and drifts off them; here
    the learner is taught how to recover from where it actually goes. ``bc.json`` (written last)
    records each round's real return and success of the policy that played it.
    """
    if rounds < 0 or episodes_per_round < 1 or steps_per_round < 1:
        raise ValueError(f"DAgger needs rounds >= 0, episodes_per_round >= 1 and steps_per_round >= 1; got "
                         f"{rounds}, {episodes_per_round}, {steps_per_round}")
    r, cams, frames, actions = _load(store, cfg.episodes, None)
    recorded = r.attrs.get("source")
    if recorded is not None and recorded != source:
        raise ValueError(f"{store} was recorded from source {recorded!r}; DAgger rounds would run in {source!r}")
    policy = _new_policy(r, cams, cfg)
    opt = torch.optim.Adam(policy.parameters(), lr=cfg.lr)
    rng = np.random.default_rng(cfg.seed)
    name = Path(out).name
    loss = fit_policy(policy, opt, frames, actions, cfg, cfg.steps, rng, f"bc {name}", progress)
    horizon = get_source(source).max_steps
    env = make_real_vec(source, num_envs, r.image_size)
    history = []
    try:
        for k in range(rounds):
            labeller = ExpertLabels(policy, expert, cams)
            seeds = [first_seed + k * episodes_per_round + i for i in range(episodes_per_round)]
            eps = []
            for c in range(0, len(seeds), num_envs):
                eps += play(env, labeller, seeds[c : c + num_envs], horizon)
            succ = [bool(np.asarray(e.extras["success"]).any()) for e in eps if "success" in e.extras]
            frames = np.concatenate([frames, *labeller.frames])
            actions = np.concatenate([actions, *labeller.labels])
            history.append({"round": k, "return": float(np.mean([e.total_reward() for e in eps])),
                            "success": float(np.mean(succ)) if succ else None, "frames": int(len(frames))})
            loss = fit_policy(policy, opt, frames, actions, cfg, steps_per_round, rng, f"dagger {name} {k + 1}/{rounds}",
                        progress)
    finally:
        env.close()
    policy.save_pretrained(out)
    record = {"data": str(store), "source": source, "cameras": list(cams), "frames": int(len(frames)),
              "final_mse": loss, "rounds": history, "episodes_per_round": episodes_per_round,
              "steps_per_round": steps_per_round, "first_seed": first_seed, **asdict(cfg)}
    ckpt.atomic_write_json(Path(out) / "bc.json", record)
    return record


# A graded set: the same recipe, weakened step by step (data, training, teacher noise).
GRADED = {
    "bc-full": BCConfig(episodes=200, steps=3000),
    "bc-100ep": BCConfig(episodes=100, steps=2000),
    "bc-50ep": BCConfig(episodes=50, steps=1500),
    "bc-20ep": BCConfig(episodes=20, steps=1000),
    "bc-10ep-short": BCConfig(episodes=10, steps=300),
    "bc-noise0.5": BCConfig(episodes=100, steps=2000, action_noise=0.5),
    "bc-noise1.0": BCConfig(episodes=100, steps=2000, action_noise=1.0),
    "bc-3ep-50steps": BCConfig(episodes=3, steps=50),
}


def train_graded_set(store: str | Path, out: str | Path, names: list[str] | None = None, progress: bool = True) -> dict:
    """Train every policy of :data:`GRADED` (or ``names``) into ``out/<name>``; skips finished ones."""
    out = Path(out)
    results = {}
    for name in names or list(GRADED):
        folder = out / name
        if (folder / "bc.json").is_file():
            results[name] = json.loads((folder / "bc.json").read_text())
            continue
        results[name] = train_bc(store, folder, GRADED[name], progress=progress)
    return results
