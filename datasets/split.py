"""Which episodes of a store are held out, decided once and kept with the model.

Training draws the split the first time a model folder trains on a store and writes it to
``MODEL/split.json`` (keyed by the store's ``store_id``); every later component, ``wfm-sim
evaluate --split val`` and the shipping script read it back, so "held out" means the same
episodes everywhere whatever ``--seed`` each command is given.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from wfm_sim.checkpoint import atomic_write_json
from wfm_sim.datasets.store import EpisodeReader, StoreError

SPLIT_FILE = "split.json"
FORMAT = "wfm_sim.Split"


def split_episodes(num_episodes: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Shuffle episode indices with ``seed``; the first ``val_fraction`` (at least 1 when there
    are >= 2 episodes and val_fraction > 0) are held out."""
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must lie in [0, 1), got {val_fraction}")
    order = np.random.default_rng(seed).permutation(num_episodes)
    n_val = int(round(num_episodes * val_fraction))
    if val_fraction > 0 and num_episodes >= 2:
        n_val = max(1, n_val)
    return np.sort(order[n_val:]), np.sort(order[:n_val])


@dataclass(frozen=True)
class Split:
    """The held-out episodes of one store.

    Attributes:
        store_id: the store's ``store_id`` attribute (survives moving the folder).
        path: where the store was when the split was drawn.
        episodes: episodes the store held then; episodes appended later are in neither split.
        val: held-out episode indices.
        val_fraction, seed: how ``val`` was drawn.
    """

    store_id: str
    path: str
    episodes: int
    val: tuple[int, ...]
    val_fraction: float
    seed: int

    @classmethod
    def draw(cls, data: str | Path, val_fraction: float = 0.1, seed: int = 0) -> "Split":
        r = EpisodeReader(data)
        _, val = split_episodes(r.num_episodes, val_fraction, seed)
        return cls(str(r.attrs["store_id"]), str(data), r.num_episodes, tuple(int(v) for v in val), val_fraction, seed)

    def indices(self, which: str) -> np.ndarray:
        """Episode indices of ``which``: 'train', 'val' or 'all' (both)."""
        if which == "val":
            return np.asarray(self.val, dtype=np.int64)
        if which == "train":
            return np.setdiff1d(np.arange(self.episodes), self.val)
        if which == "all":
            return np.arange(self.episodes)
        raise ValueError(f"split must be 'train', 'val' or 'all', got {which!r}")

    def check(self, reader: EpisodeReader) -> None:
        if reader.attrs.get("store_id") != self.store_id:
            raise StoreError(f"{reader.path} is not the store this split was drawn from ({self.path})")
        if reader.num_episodes < self.episodes:
            raise StoreError(f"{reader.path} holds {reader.num_episodes} episodes; the split was drawn over "
                             f"{self.episodes}: episodes were removed since training")


def _read(folder: Path) -> dict:
    path = folder / SPLIT_FILE
    if not path.is_file():
        return {"format": FORMAT, "stores": {}}
    meta = json.loads(path.read_text())
    if meta.get("format") != FORMAT:
        raise StoreError(f"{path} is not a wfm_sim split file")
    return meta


def save_split(folder: str | Path, split: Split) -> Path:
    """Record ``split`` in ``folder/split.json`` (atomically), beside the splits of other stores."""
    folder = Path(folder)
    meta = _read(folder)
    meta["stores"][split.store_id] = asdict(split)
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_json(folder / SPLIT_FILE, meta)
    return folder / SPLIT_FILE


def load_split(folder: str | Path, data: str | Path) -> Split:
    """The split ``folder``'s model was trained with on store ``data``; a clear error if none."""
    folder = Path(folder)
    reader = EpisodeReader(data)
    stores = _read(folder)["stores"]
    entry = stores.get(reader.attrs.get("store_id"))
    if entry is None:
        seen = [s["path"] for s in stores.values()]
        raise StoreError(f"{folder} holds no train/val split for {data}: the model was trained on "
                         f"{seen or 'no recorded store'}; evaluate a store it never saw with --split all")
    split = Split(**{**entry, "val": tuple(entry["val"])})
    split.check(reader)
    return split


def ensure_split(folder: str | Path, data: str | Path, val_fraction: float, seed: int) -> Split:
    """The folder's split for ``data``, drawn (from ``val_fraction`` and ``seed``) and saved on first use."""
    try:
        return load_split(folder, data)
    except StoreError as e:
        if "holds no train/val split" not in str(e):
            raise
    split = Split.draw(data, val_fraction, seed)
    save_split(folder, split)
    return split
