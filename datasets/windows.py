"""Fixed-length training windows over an episode store, split into train / held-out by episode.

A window is ``frames`` consecutive steps of one episode (never straddling an episode end): the
frames of every camera, the actions between them, and the reward / termination (/ success)
that followed each action. Works with a multi-worker ``DataLoader``: each worker opens the
store itself on first use.

Dimension legend: :mod:`wfm_sim.dims`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from wfm_sim.datasets.split import Split, split_episodes
from wfm_sim.datasets.store import EpisodeReader, StoreError
from wfm_sim.records import Batch


WINDOW_EXTRAS = ("success", "caption")
"""Per-step extras a window carries when its store holds them (task success, scene caption)."""


class WindowDataset(Dataset):
    """Windows of ``frames`` steps from the episodes of one split.

    Args:
        path: episode store.
        frames: window length T.
        split: "train", "val" or "all".
        val_fraction: share of episodes held out (chosen by ``seed``) when no ``episodes`` split is given.
        episodes: the model's recorded :class:`~wfm_sim.datasets.split.Split` (takes precedence).
        stride: step between window starts inside an episode.
        cameras: cameras to return, in order (default: all the store has).
    """

    def __init__(self, path: str | Path, frames: int, split: str = "train", val_fraction: float = 0.1,
                 seed: int = 0, stride: int = 1, cameras: tuple[str, ...] | None = None,
                 episodes: Split | None = None):
        if split not in ("train", "val", "all"):
            raise ValueError(f"split must be 'train', 'val' or 'all', got {split!r}")
        if frames < 1 or stride < 1:
            raise ValueError("frames and stride must be >= 1")
        self.path, self.frames = Path(path), frames
        reader = EpisodeReader(path)
        if reader.num_episodes == 0:
            raise StoreError(f"{path} holds no complete episode; record some with `wfm-sim collect`")
        self.cameras = tuple(cameras) if cameras else reader.cameras
        missing = [c for c in self.cameras if c not in reader.cameras]
        if missing:
            raise StoreError(f"{path} has no camera {missing}; it has {list(reader.cameras)}")
        self.extras = reader.extras
        self.action_space = reader.action_space
        if episodes is not None:
            episodes.check(reader)
            self.episodes = episodes.indices(split)
        else:
            train, val = split_episodes(reader.num_episodes, val_fraction if split != "all" else 0.0, seed)
            self.episodes = {"train": train, "val": val, "all": train}[split]
        starts = []
        for e in self.episodes:
            lo, hi = reader.episode_bounds(int(e))
            starts += list(range(lo, hi - frames + 1, stride))
        if not starts:
            raise StoreError(f"no {split} episode of {path} is at least {frames} steps long")
        self.starts = np.asarray(starts, dtype=np.int64)
        self._reader: EpisodeReader | None = None

    def __len__(self) -> int:
        return len(self.starts)

    @property
    def reader(self) -> EpisodeReader:
        if self._reader is None:  # opened lazily, once per DataLoader worker
            self._reader = EpisodeReader(self.path)
        return self._reader

    def __getitem__(self, i: int) -> dict[str, np.ndarray]:
        s = int(self.starts[i])
        e = s + self.frames
        r = self.reader
        item = {
            "obs": np.stack([r.read(f"obs/{c}", s, e) for c in self.cameras], axis=1),  # (t, v, H, W, 3)
            "action": r.read("action", s, e),
            "reward": r.read("reward", s, e).astype(np.float32),
            "terminated": r.read("terminated", s, e),
        }
        for key in WINDOW_EXTRAS:
            if key in self.extras:
                item[key] = r.read(key, s, e)
        return item


def collate(items: list[dict[str, np.ndarray]]) -> Batch:
    """Stack window dicts into a :class:`Batch` of tensors."""
    stack = {k: torch.from_numpy(np.stack([it[k] for it in items])) for k in items[0]}
    action = stack["action"]
    return Batch(obs=stack.get("obs", torch.empty(0, dtype=torch.uint8)),
                 action=action.float() if action.is_floating_point() else action.long(),
                 reward=stack["reward"], terminated=stack["terminated"].bool(),
                 success=stack["success"].bool() if "success" in stack else None, tokens=stack.get("tokens"),
                 caption=stack["caption"].long() if "caption" in stack else None)
