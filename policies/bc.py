"""Behaviour cloning: a :class:`~wfm_sim.policies.ConvPolicy` regressed onto a store's actions.

Used to build graded policy sets for scoring (how well does imagination rank policies whose real
quality spreads from random to expert?): the same code with less data, fewer steps or noisier
targets gives a worse policy, by a known recipe, reproducibly from a seed.

Dimension legend: ``n`` batch, ``V`` cameras, ``H W`` pixels, ``A`` action features.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from wfm_sim.datasets.store import EpisodeReader, StoreError
from wfm_sim.policies.base import ConvPolicy, ConvPolicyConfig


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
    seed: int = 0

    def __post_init__(self):
        for name in ("episodes", "steps", "batch_size", "width"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
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
    frames = np.stack([r.read(f"obs/{c}", 0, end) for c in cams], axis=1)  # (N, V, H, W, 3)
    return r, cams, frames, r.read("action", 0, end).astype(np.float32)


def train_bc(store: str | Path, out: str | Path, cfg: BCConfig = BCConfig(), cameras: tuple[str, ...] | None = None,
             progress: bool = True) -> dict:
    """Clone the actions of ``store``'s first ``cfg.episodes`` episodes into a ConvPolicy saved at ``out``."""
    r, cams, frames, actions = _load(store, cfg.episodes, cameras)
    a = r.action_space
    torch.manual_seed(cfg.seed)
    policy = ConvPolicy(ConvPolicyConfig(image_size=r.image_size, cameras=len(cams), action_dim=a["shape"][0],
                                         low=tuple(a["low"]), high=tuple(a["high"]), width=cfg.width))
    opt = torch.optim.Adam(policy.parameters(), lr=cfg.lr)
    rng = np.random.default_rng(cfg.seed)
    lo, hi = np.asarray(a["low"], np.float32), np.asarray(a["high"], np.float32)
    loss = float("nan")
    for _ in tqdm(range(cfg.steps), desc=f"bc {Path(out).name}", disable=not progress):
        idx = rng.integers(0, len(frames), cfg.batch_size)
        target = actions[idx] + (rng.normal(0, cfg.action_noise, actions[idx].shape).astype(np.float32)
                                 if cfg.action_noise else 0.0)
        target = torch.from_numpy(np.clip(target, lo, hi))
        pred = policy.forward(torch.from_numpy(frames[idx]))  # the module (policy(obs) is the no-grad Policy call)
        mse = ((pred - target) ** 2).mean()
        opt.zero_grad(set_to_none=True)
        mse.backward()
        opt.step()
        loss = mse.item()
    policy.eval().save_pretrained(out)
    record = {"data": str(store), "cameras": list(cams), "frames": int(len(frames)), "final_mse": loss, **asdict(cfg)}
    (Path(out) / "bc.json").write_text(json.dumps(record, indent=2) + "\n")
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
