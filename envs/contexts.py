"""Where an imagined episode's first frames come from.

* an episode store (``dataset=PATH``): context windows cut from real recorded episodes;
* the contexts shipped beside a model (``contexts.safetensors``: real frames recorded from the
  simulator the model learned), used when no dataset is given;
* frames (and actions) the caller passes in ``reset(options={"frames": ..., "actions": ...})``.

Dimension legend: :mod:`wfm_sim.dims`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from wfm_sim import checkpoint as ckpt
from wfm_sim.datasets.store import EpisodeReader, StoreError

CONTEXTS_FILE = "contexts.safetensors"


@dataclass(frozen=True)
class Context:
    """Where a world is now: its last frames and the actions between them.

    A real env gives one with :meth:`~wfm_sim.envs.real.RealEnv.context`; an imagined env
    starts from it with ``reset(options={"context": ctx})`` (or a list, one per sub-env), so
    the same start state plays out in both worlds.

    Attributes:
        frames: camera name -> ``(t, H, W, 3)`` uint8, oldest first.
        actions: ``(t-1, a)`` float32 (Box) or ``(t-1,)`` int64 (Discrete), the actions between them.
        origin: where it came from (``"CarRacing-v3 seed=3 step=1"``), kept in the imagined env's info.
    """

    frames: dict[str, np.ndarray]
    actions: np.ndarray
    origin: str = ""

    def __post_init__(self):
        lengths = {c: np.shape(f)[0] for c, f in self.frames.items()}
        if not self.frames or len(set(lengths.values())) != 1:
            raise ValueError(f"a context needs the same number of frames for every camera, got {lengths}")
        c = next(iter(lengths.values()))
        if len(self.actions) != c - 1:
            raise ValueError(f"a context of {c} frames needs {c - 1} actions between them, got {len(self.actions)}")

    @property
    def cameras(self) -> tuple[str, ...]:
        return tuple(self.frames)

    def __len__(self) -> int:
        return len(self.actions) + 1

    def last(self, frames: int) -> "Context":
        """The most recent ``frames`` frames (and the actions between them)."""
        if not 1 <= frames <= len(self):
            raise ValueError(f"this context holds {len(self)} frames; asked for the last {frames}")
        acts = self.actions[len(self) - frames:] if frames > 1 else self.actions[:0]
        return Context({c: f[-frames:] for c, f in self.frames.items()}, acts, self.origin)


class ContextBank:
    """A pool of real context windows: ``frames (M, C, V, H, W, 3)`` uint8, ``actions (M, C-1, A)``."""

    def __init__(self, frames: np.ndarray, actions: np.ndarray, origin: list[str]):
        if frames.ndim != 6 or frames.dtype != np.uint8:
            raise ValueError(f"context frames must be (M, C, V, H, W, 3) uint8, got {frames.dtype} {frames.shape}")
        self.frames, self.actions, self.origin = frames, actions, origin

    def __len__(self) -> int:
        return len(self.frames)

    @classmethod
    def from_store(cls, path: str | Path, cameras: tuple[str, ...], context: int, per_episode: int = 4,
                   max_contexts: int = 512, episodes: list[int] | None = None) -> "ContextBank":
        r = EpisodeReader(path)
        missing = [c for c in cameras if c not in r.cameras]
        if missing:
            raise StoreError(f"{path} lacks camera(s) {missing} this model needs; it has {list(r.cameras)}")
        frames, actions, origin = [], [], []
        for e in (range(r.num_episodes) if episodes is None else episodes):
            lo, hi = r.episode_bounds(int(e))
            if hi - lo < context:
                continue
            for s in np.linspace(lo, hi - context, per_episode).astype(int):
                frames.append(np.stack([r.read(f"obs/{c}", s, s + context) for c in cameras], axis=1))
                actions.append(r.read("action", s, s + context - 1))
                origin.append(f"{path}#episode={e},step={s - lo}")
            if len(frames) >= max_contexts:
                break
        if not frames:
            raise StoreError(f"{path} has no episode with at least {context} steps to start from")
        return cls(np.stack(frames), np.stack(actions), origin)

    @classmethod
    def load(cls, folder: str | Path) -> "ContextBank | None":
        path = Path(folder) / CONTEXTS_FILE
        if not path.is_file():
            return None
        t = ckpt.load_tensors(path)
        return cls(t["frames"].numpy(), t["actions"].numpy(), [f"{path}#{i}" for i in range(len(t["frames"]))])

    def save(self, folder: str | Path) -> Path:
        path = Path(folder) / CONTEXTS_FILE
        ckpt.save_tensors(path, {"frames": torch.from_numpy(self.frames), "actions": torch.from_numpy(self.actions)},
                          {"format": "wfm_sim.Contexts"})
        return path

    def pick(self, rng: np.random.Generator, index: int | None = None) -> tuple[np.ndarray, np.ndarray, str]:
        i = int(rng.integers(len(self))) if index is None else int(index)
        if not 0 <= i < len(self):
            raise ValueError(f"context index {i} out of range [0, {len(self)})")
        return self.frames[i], self.actions[i], self.origin[i]
