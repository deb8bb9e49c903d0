"""Store validation, check and repair: tell a crash's leftovers from an inconsistent store.

A writer appends an episode's rows to every data array, then its seed and key, and extends
``meta/episode_ends`` last (the commit point). A writer killed at any moment therefore leaves
only *provably partial* state past the last committed episode:

* rows past the last committed row in some arrays (the episode being written);
* trailing ``episode_ends`` entries that are still the fill value 0 (the commit itself was cut:
  zarr grew the array before the value landed). An episode never ends at row 0.

Those are repaired (dropped) by the next writer or by ``wfm-sim dataset check --repair``.
Anything else (an array shorter than the committed rows, ends that do not increase, a missing
array, NaN actions or rewards) means the store is *inconsistent*: it is refused on open with a
message saying what is wrong, and nothing committed is ever removed unless the user asks for it
explicitly (``--keep-episodes K``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np


@dataclass
class StoreHealth:
    """What :func:`inspect_store` found."""

    path: str
    episodes: int
    """Committed episodes (valid entries of ``meta/episode_ends``)."""
    rows: int
    """Rows of the committed episodes."""
    partial_rows: dict[str, int] = field(default_factory=dict)
    """Array -> rows past the committed ones (a crashed writer's unfinished episode)."""
    partial_commits: int = 0
    """Trailing ``episode_ends`` entries of an interrupted commit."""
    problems: list[str] = field(default_factory=list)
    """Inconsistencies: the store is refused until the user repairs it."""
    keep: int = 0
    """The most leading episodes that every array holds whole (what ``--keep-episodes`` can keep)."""

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def clean(self) -> bool:
        return self.ok and not self.partial_rows and not self.partial_commits

    def refusal(self) -> str:
        hint = (f"`wfm-sim dataset check {self.path} --repair --keep-episodes {self.keep}` keeps the first "
                f"{self.keep} complete episodes and drops the rest (copy the store first)")
        return (f"{self.path} is inconsistent: {'; '.join(self.problems)}. Nothing was changed. "
                f"`wfm-sim dataset check {self.path}` shows the details; {hint}")

    def summary(self) -> dict:
        return {**asdict(self), "ok": self.ok, "clean": self.clean}


def store_arrays(root, attrs: dict) -> dict[str, object]:
    """Every per-row array of the store, by key, and the per-episode meta arrays."""
    data = root["data"]
    arrays = {}
    for cam in attrs["cameras"]:
        arrays[f"obs/{cam}"] = data["obs"][cam] if cam in data["obs"] else None
    for key in attrs["keys"]:
        arrays[key] = data[key] if key in data else None
    return arrays


def inspect_store(root, path: str | Path, values: bool = False) -> StoreHealth:
    """Validate a store's structure (and, with ``values``, that actions and rewards are finite)."""
    attrs = dict(root.attrs)
    ends = np.asarray(root["meta"]["episode_ends"][:], dtype=np.int64)
    t = len(ends)
    while t > 0 and ends[t - 1] == 0:  # fill values of an interrupted commit
        t -= 1
    h = StoreHealth(str(path), 0, 0, partial_commits=len(ends) - t)
    core = ends[:t]
    steps = np.diff(np.concatenate(([0], core)))
    bad = np.flatnonzero(steps <= 0)
    valid = int(bad[0]) if bad.size else t
    if bad.size:
        i = valid
        h.problems.append(f"meta/episode_ends does not increase at entry {i} "
                          f"({int(core[i - 1]) if i else 0} then {int(core[i])})")
    h.episodes, h.rows = t, int(core[-1]) if t else 0
    arrays = store_arrays(root, attrs)
    shortest = h.rows
    for key, arr in arrays.items():
        if arr is None:
            h.problems.append(f"data/{key} is missing")
            shortest = 0
            continue
        n = int(arr.shape[0])
        if n < h.rows:
            h.problems.append(f"data/{key} holds {n} rows, but the {t} committed episodes end at row {h.rows}")
        elif n > h.rows:
            h.partial_rows[f"data/{key}"] = n - h.rows
        shortest = min(shortest, n)
    for key in ("episode_seeds", "episode_keys"):
        if key in root["meta"] and root["meta"][key].shape[0] < t:
            h.problems.append(f"meta/{key} holds {root['meta'][key].shape[0]} entries for {t} committed episodes")
    h.keep = int(np.searchsorted(core[:valid], shortest, side="right"))
    if values and h.ok:
        _check_values(arrays, h)
    return h


def _check_values(arrays: dict, h: StoreHealth) -> None:
    for key in ("action", "reward"):
        arr = arrays.get(key)
        if arr is None or not np.issubdtype(arr.dtype, np.floating):
            continue
        if h.rows == 0:
            continue
        v = np.asarray(arr[: h.rows])
        bad = ~np.isfinite(v.reshape(h.rows, -1)).all(axis=1)
        if bad.any():
            rows = np.flatnonzero(bad)
            h.problems.append(f"data/{key} holds NaN or inf at {len(rows)} rows (first: {rows[:5].tolist()})")


def truncate(root, rows: int, episodes: int) -> dict[str, int]:
    """Cut every per-row array to ``rows`` and the episode arrays to ``episodes``; returns what was cut."""
    attrs = dict(root.attrs)
    cut = {}
    for key, arr in store_arrays(root, attrs).items():
        if arr is not None and arr.shape[0] > rows:
            cut[f"data/{key}"] = int(arr.shape[0] - rows)
            arr.resize((rows,) + arr.shape[1:])
    for key in ("episode_ends", "episode_seeds", "episode_keys"):
        if key in root["meta"]:
            arr = root["meta"][key]
            if arr.shape[0] > episodes:
                cut[f"meta/{key}"] = int(arr.shape[0] - episodes)
                arr.resize((episodes,))
    return cut


def repair_store(path: str | Path, keep_episodes: int | None = None) -> dict:
    """Drop provably partial rows (and, only when asked, every episode past ``keep_episodes``).

    Takes the writer lock. Returns ``{"before": health, "removed": {array: rows}, "after": health}``.
    """
    import zarr

    from wfm_sim.datasets.lock import WriterLock
    from wfm_sim.datasets.store import StoreError, open_root

    if not (Path(path) / "zarr.json").is_file():
        open_root(path)  # not a store: refuse before the lock would create the folder
    lock = WriterLock(path).acquire()
    try:
        open_root(path)  # a wfm_sim store at all
        root = zarr.open_group(str(path), mode="r+")
        before = inspect_store(root, path, values=True)
        if keep_episodes is None:
            if not before.ok:
                raise StoreError(before.refusal())
            episodes = before.episodes
        else:
            if not 0 <= keep_episodes <= before.keep:
                raise StoreError(f"--keep-episodes must lie in [0, {before.keep}]: only the first {before.keep} "
                                 f"episodes are whole in {path}")
            episodes = keep_episodes
        rows = int(root["meta"]["episode_ends"][episodes - 1]) if episodes else 0
        removed = truncate(root, rows, episodes)
        return {"before": before.summary(), "removed": removed,
                "after": inspect_store(zarr.open_group(str(path), mode="r"), path, values=True).summary()}
    finally:
        lock.release()
