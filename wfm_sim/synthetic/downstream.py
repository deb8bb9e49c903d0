"""Is synthetic data useful? A downstream model trained on real data alone and on real plus
synthetic data, with training steps and seeds matched, evaluated on held-out real episodes.

The downstream task is inverse dynamics: which action took every camera's frame t to frame t+1.
Synthetic episodes carry the exact actions that produced them, so they are labelled for free;
the question is whether what the world model imagined in response to those actions is close
enough to reality to teach the mapping. :class:`InverseDynamics` is a small convolutional net on
the two frames of every camera stacked on channels; its error is reported per action dimension
as a mean squared error in the action space's own units and as R^2 against predicting the
training mean (0: no better than the mean; 1: exact).

``wfm-sim downstream`` (:mod:`wfm_sim.synthetic.study`) runs the whole study on the driving data.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from wfm_sim.checkpoint import atomic_write_json
from wfm_sim.datasets.store import EpisodeReader, StoreError


@dataclass(frozen=True)
class Transitions:
    """``(N, 2V, H, W, 3)`` uint8 frame pairs (every camera at t, then at t+1) and ``(N, A)`` actions."""

    frames: np.ndarray
    actions: np.ndarray
    cameras: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.actions)


def camera_frames(store: str | Path, episodes, cameras: tuple[str, ...]) -> np.ndarray:
    """Every frame of ``episodes`` of ``store``, all ``cameras`` of a step together: ``(N, V, H, W, 3)`` uint8."""
    r = EpisodeReader(store)
    parts = []
    for e in episodes:
        a, b = r.episode_bounds(int(e))
        parts.append(np.stack([r.read(f"obs/{c}", a, b) for c in cameras], axis=1))
    return np.concatenate(parts)


def load_transitions(store: str | Path, episodes: list[int] | None = None, stride: int = 1,
                     cameras: tuple[str, ...] | None = None) -> Transitions:
    """Every ``stride``-th transition (frame t, action t, frame t+1) of ``episodes`` of ``store``."""
    r = EpisodeReader(store)
    if r.action_space["type"] != "box":
        raise StoreError(f"inverse dynamics regresses continuous actions; {store} has {r.action_space['type']} actions")
    cams = tuple(cameras or r.cameras)
    missing = [c for c in cams if c not in r.cameras]
    if missing:
        raise StoreError(f"{store} has no camera {missing}; it holds {list(r.cameras)}")
    frames, actions = [], []
    for e in range(r.num_episodes) if episodes is None else episodes:
        a, b = r.episode_bounds(int(e))
        if b - a < 2:
            continue
        obs = np.stack([r.read(f"obs/{c}", a, b) for c in cams], axis=1)  # (T, V, H, W, 3)
        act = r.read("action", a, b)
        idx = np.arange(0, b - a - 1, stride)
        frames.append(np.concatenate([obs[idx], obs[idx + 1]], axis=1))
        actions.append(act[idx])
    if not frames:
        raise StoreError(f"{store}: no episode of the chosen ones has two frames")
    return Transitions(np.concatenate(frames), np.concatenate(actions).astype(np.float32), cams)


class InverseDynamics(nn.Module):
    """Two frames of every camera -> the action between them (in the action space's units)."""

    def __init__(self, cameras: int, action_dim: int, low, high, width: int = 32):
        super().__init__()
        c = 2 * cameras * 3
        w = width
        self.net = nn.Sequential(
            nn.Conv2d(c, w, 4, 2, 1), nn.SiLU(), nn.Conv2d(w, 2 * w, 4, 2, 1), nn.SiLU(),
            nn.Conv2d(2 * w, 4 * w, 4, 2, 1), nn.SiLU(), nn.Conv2d(4 * w, 4 * w, 4, 2, 1), nn.SiLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4 * w, 4 * w), nn.SiLU(), nn.Linear(4 * w, action_dim))
        self.register_buffer("low", torch.tensor(low, dtype=torch.float32))
        self.register_buffer("high", torch.tensor(high, dtype=torch.float32))

    def forward(self, pairs: torch.Tensor) -> torch.Tensor:
        """``(n, 2V, H, W, 3)`` uint8 -> ``(n, A)`` actions within [low, high]."""
        n, k, h, w, _ = pairs.shape
        x = pairs.permute(0, 1, 4, 2, 3).reshape(n, k * 3, h, w).float() / 127.5 - 1.0
        unit = torch.sigmoid(self.net(x))
        return self.low + unit * (self.high - self.low)


@dataclass(frozen=True)
class IDMConfig:
    steps: int = 1500
    batch_size: int = 32
    lr: float = 1e-3
    width: int = 32
    seed: int = 0


def train_idm(parts: list[Transitions], space: dict, cfg: IDMConfig, progress: bool = False) -> InverseDynamics:
    """Train on the union of ``parts`` (batches drawn uniformly over all their transitions)."""
    if not parts or any(p.cameras != parts[0].cameras for p in parts):
        raise ValueError("train_idm needs transition sets of one camera rig")
    frames = np.concatenate([p.frames for p in parts])
    actions = torch.from_numpy(np.concatenate([p.actions for p in parts]))
    torch.manual_seed(cfg.seed)
    model = InverseDynamics(len(parts[0].cameras), actions.shape[1], space["low"], space["high"], cfg.width)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, cfg.steps)
    rng = np.random.default_rng(cfg.seed)
    scale = torch.tensor(space["high"], dtype=torch.float32) - torch.tensor(space["low"], dtype=torch.float32)
    for _ in tqdm(range(cfg.steps), desc="idm", disable=not progress):
        idx = rng.integers(0, len(frames), cfg.batch_size)
        pred = model(torch.from_numpy(frames[idx]))
        loss = (((pred - actions[idx]) / scale) ** 2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    return model.eval()


@torch.no_grad()
def evaluate_idm(model: InverseDynamics, test: Transitions, train_mean: np.ndarray, batch: int = 256) -> dict:
    """Per action dimension: MSE and R^2 (1 - MSE / MSE of predicting ``train_mean``)."""
    preds = np.concatenate([model(torch.from_numpy(test.frames[i : i + batch])).numpy()
                            for i in range(0, len(test), batch)])
    mse = ((preds - test.actions) ** 2).mean(0)
    base = ((train_mean[None] - test.actions) ** 2).mean(0)
    return {"mse": mse.tolist(), "r2": (1 - mse / np.maximum(base, 1e-12)).tolist(), "transitions": len(test)}


def run_arms(arms: dict[str, list[Transitions]], test: Transitions, space: dict, cfg: IDMConfig, seeds: list[int],
             out: str | Path | None = None, names: tuple[str, ...] = ("steer", "gas", "brake"),
             progress: bool = True) -> dict:
    """Train every arm with every seed (same steps, batch and learning rate) and score it on ``test``."""
    results = {}
    for arm, parts in arms.items():
        mean = np.concatenate([p.actions for p in parts]).mean(0)
        runs = [evaluate_idm(train_idm(parts, space, IDMConfig(**{**asdict(cfg), "seed": s})), test, mean)
                for s in tqdm(seeds, desc=arm, disable=not progress)]
        r2 = np.array([r["r2"] for r in runs])
        results[arm] = {"train_transitions": int(sum(len(p) for p in parts)), "seeds": seeds,
                        "r2_mean": dict(zip(names, r2.mean(0).round(4).tolist())),
                        "r2_std": dict(zip(names, r2.std(0).round(4).tolist())),
                        "mse_mean": dict(zip(names, np.array([r["mse"] for r in runs]).mean(0).round(5).tolist()))}
    report = {"config": asdict(cfg), "test_transitions": len(test), "arms": results}
    if out is not None:
        Path(out).mkdir(parents=True, exist_ok=True)
        atomic_write_json(Path(out) / "downstream.json", report)
    return report


def table(report: dict) -> str:
    names = list(next(iter(report["arms"].values()))["r2_mean"])
    lines = ["| arm | training transitions | " + " | ".join(f"R^2 {n}" for n in names) + " |",
             "| --- | --- | " + " | ".join("---" for _ in names) + " |"]
    for arm, r in report["arms"].items():
        lines.append(f"| {arm} | {r['train_transitions']} | " + " | ".join(
            f"{r['r2_mean'][n]:.3f} +- {r['r2_std'][n]:.3f}" for n in names) + " |")
    return "\n".join(lines)


__all__ = ["IDMConfig", "InverseDynamics", "Transitions", "camera_frames", "evaluate_idm", "load_transitions", "run_arms", "table",
           "train_idm"]

