"""Start states shared by both worlds: where scoring, graded plans and planning begin.

A start is a context for imagination (the last frames and the actions between them) and a way
to put the real twin in the same state: reset it at a seed and play the same warm-up actions.
Two kinds:

* :func:`seed_starts`: fresh real simulator seeds; the twin is reset and played neutral
  warm-up actions, and its own frames are the context.
* :func:`dataset_starts`: the first frames of recorded episodes (a ``wfm-sim collect`` store);
  the twin is reset at each episode's recorded seed and replays its recorded first actions. How
  closely that reproduces the stored frames is measured (``context_max_diff``), not assumed.

Dimension legend: :mod:`wfm_sim.dims`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from wfm_sim.datasets.store import EpisodeReader, StoreError
from wfm_sim.envs.contexts import Context
from wfm_sim.envs.real import RealEnv


def neutral_action(space) -> np.ndarray:
    """The action closest to zero within a Box (no steering, no gas: the car stands; the arm rests)."""
    return np.clip(np.zeros(space.shape, np.float32), space.low, space.high)


@dataclass
class Starts:
    """``S`` start states: ``contexts`` start imagination; the real twin starts by a reset at
    ``seeds[i]`` followed by ``warmups[i]``."""

    contexts: list[Context]
    seeds: list[int | None]
    """Real reset seeds; None where unknown (such a start can be imagined, not played for real)."""
    warmups: np.ndarray
    """``(i, s, a)``: the actions each start's context holds, played after the real reset."""
    labels: list[str]
    """Where each start comes from (``seed=N``, or ``STORE#episode=E``)."""
    origin: str = "seeds"
    """``seeds``, or the store the starts were read from."""
    context_max_diff: list[int] | None = None
    """Dataset starts checked against the real twin: per start, the largest pixel difference
    (0..255) between the stored context and the twin's after its reset and warm-up."""

    def __post_init__(self):
        if not (len(self.contexts) == len(self.seeds) == len(self.warmups) == len(self.labels)):
            raise ValueError(f"a start needs a context, a seed, a warm-up and a label: got {len(self.contexts)}, "
                             f"{len(self.seeds)}, {len(self.warmups)}, {len(self.labels)}")

    def __len__(self) -> int:
        return len(self.contexts)

    def check_real(self) -> None:
        """Refuse to play starts for real whose reset seed is unknown."""
        unknown = [lab for lab, s in zip(self.labels, self.seeds) if s is None]
        if unknown:
            raise ValueError(f"{len(unknown)} start(s) have no recorded reset seed (first: {unknown[0]}), so the real "
                             "simulator cannot start there: score them with --no-real, or start from seeds")

    def chunks(self, size: int) -> list[list[int]]:
        """Start indices in runs of at most ``size`` that share a warm-up (one vector-env reset each)."""
        out, i = [], 0
        while i < len(self):
            j = i + 1
            while j < len(self) and j - i < size and np.array_equal(self.warmups[j], self.warmups[i]):
                j += 1
            out.append(list(range(i, j)))
            i = j
        return out

    def real_options(self, chunk: list[int]) -> dict | None:
        """Reset options of a chunk of starts (they share a warm-up)."""
        warm = self.warmups[chunk[0]]
        return {"warmup": warm} if len(warm) else None

    def summary(self) -> dict:
        out = {"from": self.origin, "labels": self.labels, "seeds": self.seeds}
        if self.context_max_diff is not None:
            out["context_max_diff"] = self.context_max_diff
        return out


def seed_starts(source: str, seeds: list[int], size: int, warmup: int) -> Starts:
    """Reset the real twin at each seed and play ``warmup`` neutral actions: each start's context."""
    env = RealEnv(source, size, context_frames=warmup + 1)
    try:
        actions = np.tile(neutral_action(env.action_space), (warmup, 1))
        contexts = []
        for s in seeds:
            env.reset(seed=s, options={"warmup": actions} if warmup else None)
            contexts.append(env.context())
    finally:
        env.close()
    return Starts(contexts, list(seeds), np.broadcast_to(actions, (len(seeds), *actions.shape)).copy(),
                  [f"seed={s}" for s in seeds])


def check_store_rig(r: EpisodeReader, source: str, cameras: tuple[str, ...], size: int, use: str) -> None:
    """A recorded store must be of ``source`` (when it says), hold ``cameras`` and ``size``-px frames;
    ``use`` says why the source matters (appended to that message)."""
    recorded = r.attrs.get("source")
    if recorded is not None and recorded != source:
        raise ValueError(f"{r.path} was recorded from source {recorded!r}, not {source!r}: {use}")
    missing = [c for c in cameras if c not in r.cameras]
    if missing:
        raise StoreError(f"{r.path} lacks camera(s) {missing} the model sees; it has {list(r.cameras)}")
    if r.image_size != size:
        raise ValueError(f"{r.path} holds {r.image_size}px frames, the model takes {size}px")


def dataset_starts(store: str | Path, source: str, cameras: tuple[str, ...], size: int, warmup: int,
                   count: int, first: int = 0, check_real: bool = True) -> Starts:
    """The first ``warmup + 1`` frames (and the actions between) of episodes ``first ..
    first + count - 1`` of a recorded store. With ``check_real``, each start is also reset in the
    real twin at the episode's seed with its recorded warm-up, and the largest pixel difference
    from the stored context is kept (``Starts.context_max_diff``; 0: the twin is exactly there)."""
    r = EpisodeReader(store)
    check_store_rig(r, source, cameras, size, f"its starts are not states of {source}")
    if first < 0 or first + count > r.num_episodes:
        raise ValueError(f"starts {first}..{first + count - 1} asked of {store}, which holds episodes "
                         f"0..{r.num_episodes - 1}")
    contexts, warmups, seeds, labels = [], [], [], []
    for e in range(first, first + count):
        lo, hi = r.episode_bounds(e)
        if hi - lo < warmup + 1:
            raise ValueError(f"episode {e} of {store} has {hi - lo} frames; a start needs {warmup + 1}")
        label = f"{store}#episode={e}"
        frames = {c: r.read(f"obs/{c}", lo, lo + warmup + 1) for c in cameras}
        actions = r.read("action", lo, lo + warmup)
        contexts.append(Context(frames, actions, label))
        warmups.append(actions)
        seeds.append(r.episode_seeds[e])
        labels.append(label)
    starts = Starts(contexts, seeds, np.stack(warmups), labels, origin=str(store))
    if check_real:
        starts.check_real()
        starts.context_max_diff = _context_diffs(starts, source, size, warmup)
    return starts


def _context_diffs(starts: Starts, source: str, size: int, warmup: int) -> list[int]:
    env = RealEnv(source, size, context_frames=warmup + 1)
    try:
        diffs = []
        for ctx, seed, warm in zip(starts.contexts, starts.seeds, starts.warmups):
            env.reset(seed=seed, options={"warmup": warm} if warmup else None)
            real = env.context()
            diffs.append(max(int(np.abs(real.frames[c].astype(np.int16) - ctx.frames[c]).max()) for c in ctx.frames))
        return diffs
    finally:
        env.close()
