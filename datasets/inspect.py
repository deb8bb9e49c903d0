"""Human-readable views of a store: contact sheets of sample frames from every camera."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from wfm_sim.datasets.store import EpisodeReader, StoreError
from wfm_sim.viz import contact_sheet, save_png


def dataset_sheet(reader: EpisodeReader, out: str | Path, episodes: int = 3, frames: int = 8) -> Path:
    """A PNG with one row per (episode, camera): ``frames`` frames spread over the episode."""
    if reader.num_episodes == 0:
        raise StoreError(f"{reader.path} holds no complete episode to draw; record some with `wfm-sim collect`")
    rows, labels = [], []
    picks = np.linspace(0, reader.num_episodes - 1, min(episodes, reader.num_episodes)).astype(int)
    for e in picks:
        start, stop = reader.episode_bounds(int(e))
        idx = np.linspace(start, stop - 1, frames).astype(int)
        for cam in reader.cameras:
            arr = reader.arrays[f"obs/{cam}"]
            rows.append([arr[i] for i in idx])
            labels.append(f"episode {e}  {cam}  steps {start - start}..{stop - start - 1}")
    return save_png(out, contact_sheet(rows, labels))
