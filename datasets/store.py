"""A zarr 3 episode store in the robot-learning layout (diffusion_policy's ReplayBuffer)::

    root attrs     schema_version, fps, cameras, image_size, action_space, source_env, stats, ...
    data/obs/<cam> uint8 (N, H, W, 3)   one frame per chunk, several frames per shard
    data/action    float32 (N, A) | int64 (N,)
    data/reward    float32 (N,)
    data/terminated, data/truncated  bool (N,)
    data/<extra>   e.g. success bool (N,), ego_pose float32 (N, 3)
    meta/episode_ends  int64 (E,), exclusive ends

Crash safety: an episode is buffered in memory, then its rows are appended to every data array,
and ``meta/episode_ends`` is extended last. zarr's LocalStore replaces each file atomically, so a
writer killed at any point leaves every finished episode intact; readers trust only the valid
prefix of ``episode_ends`` and ignore rows past its last entry. A new writer truncates those rows
and appends.

Dimension legend: ``N`` rows (all episodes concatenated), ``E`` episodes, ``H W`` pixels.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from wfm_sim.datasets.episode import CORE_KEYS, SCHEMA_VERSION, Episode


class StoreError(ValueError):
    """A store is missing, foreign, or does not match what the caller expected."""


def valid_ends(ends: np.ndarray, rows: int) -> np.ndarray:
    """The longest prefix of ``ends`` that is strictly increasing, positive and within ``rows``."""
    ends = np.asarray(ends, dtype=np.int64)
    prev, n = 0, 0
    for e in ends:
        if e <= prev or e > rows:
            break
        prev, n = e, n + 1
    return ends[:n]


class EpisodeReader:
    """Read-only view of a store. Only complete episodes are visible."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not (self.path / "zarr.json").is_file():
            raise StoreError(f"{self.path} is not a zarr episode store (no zarr.json); create one with `wfm-sim collect`")
        self.root = zarr.open_group(str(self.path), mode="r")
        self.attrs = dict(self.root.attrs)
        if self.attrs.get("schema") != "wfm_sim.episodes":
            raise StoreError(f"{self.path} is a zarr group but not a wfm_sim episode store (attrs 'schema' missing)")
        if self.attrs.get("schema_version", 0) > SCHEMA_VERSION:
            raise StoreError(f"{self.path} has schema_version {self.attrs['schema_version']}; this wfm_sim reads <= {SCHEMA_VERSION}")
        self.cameras: tuple[str, ...] = tuple(self.attrs["cameras"])
        data = self.root["data"]
        self.arrays: dict[str, Any] = {f"obs/{c}": data["obs"][c] for c in self.cameras}
        for key in self.attrs["keys"]:
            self.arrays[key] = data[key]
        rows = min(a.shape[0] for a in self.arrays.values())
        self.episode_ends = valid_ends(self.root["meta"]["episode_ends"][:], rows)

    # ---------------------------------------------------------------- shape
    @property
    def num_episodes(self) -> int:
        return len(self.episode_ends)

    @property
    def num_steps(self) -> int:
        return int(self.episode_ends[-1]) if len(self.episode_ends) else 0

    @property
    def image_size(self) -> int:
        return int(self.attrs["image_size"])

    @property
    def fps(self) -> float:
        return float(self.attrs["fps"])

    @property
    def action_space(self) -> dict:
        return dict(self.attrs["action_space"])

    @property
    def extras(self) -> tuple[str, ...]:
        return tuple(k for k in self.attrs["keys"] if k not in CORE_KEYS)

    def episode_bounds(self, i: int) -> tuple[int, int]:
        if not 0 <= i < self.num_episodes:
            raise IndexError(f"episode {i} out of range [0, {self.num_episodes})")
        start = int(self.episode_ends[i - 1]) if i else 0
        return start, int(self.episode_ends[i])

    def episode_lengths(self) -> np.ndarray:
        return np.diff(np.concatenate(([0], self.episode_ends)))

    # ----------------------------------------------------------------- read
    def read(self, key: str, start: int, stop: int) -> np.ndarray:
        if stop > self.num_steps:
            raise IndexError(f"rows [{start}, {stop}) exceed the {self.num_steps} committed rows")
        return self.arrays[key][start:stop]

    def episode(self, i: int) -> Episode:
        start, stop = self.episode_bounds(i)
        extras = {k: self.read(k, start, stop) for k in self.extras}
        seeds = self.attrs.get("episode_seeds") or []
        return Episode(
            obs={c: self.read(f"obs/{c}", start, stop) for c in self.cameras},
            action=self.read("action", start, stop),
            reward=self.read("reward", start, stop),
            terminated=self.read("terminated", start, stop),
            truncated=self.read("truncated", start, stop),
            extras=extras,
            seed=seeds[i] if i < len(seeds) else None,
        )

    def summary(self) -> dict:
        lengths = self.episode_lengths()
        reward = self.arrays["reward"][: self.num_steps] if self.num_steps else np.zeros(0)
        return {
            "path": str(self.path),
            "episodes": self.num_episodes,
            "frames": self.num_steps,
            "cameras": list(self.cameras),
            "image_size": self.image_size,
            "fps": self.fps,
            "source_env": self.attrs.get("source_env"),
            "action_space": self.action_space,
            "episode_length": {"min": int(lengths.min()), "mean": float(lengths.mean()), "max": int(lengths.max())} if len(lengths) else {},
            "reward_per_episode": float(reward.sum() / max(1, self.num_episodes)),
            "stats": self.attrs.get("stats", {}),
            "extras": list(self.extras),
        }


class EpisodeWriter:
    """Append complete episodes to a store (creating it, or resuming an existing one).

    Args:
        path: store folder (``*.zarr``).
        cameras: camera names, in order.
        image_size: frame side in pixels.
        action_space: ``{"type": "box", "shape": [A], "low": [...], "high": [...]}`` or
            ``{"type": "discrete", "n": K}``.
        fps: frames per second of the source.
        source_env: id of the simulator, e.g. ``"CarRacing-v3"``.
        extras: extra per-step keys -> ``(shape, dtype)`` of one step, e.g. ``{"success": ((), "bool")}``.
        frames_per_shard: image frames per shard file (the write unit).
        metadata: more root attributes (source version, policy, ...).
    """

    def __init__(self, path: str | Path, cameras: tuple[str, ...], image_size: int, action_space: dict,
                 fps: float, source_env: str, extras: dict[str, tuple[tuple, str]] | None = None,
                 frames_per_shard: int = 64, metadata: dict | None = None):
        self.path = Path(path)
        self.cameras, self.image_size = tuple(cameras), int(image_size)
        self.action_space = _check_action_space(action_space)
        self.extras = {k: (tuple(s), str(d)) for k, (s, d) in (extras or {}).items()}
        self._buffer: list[dict] = []
        self._stats_acc: dict[str, list[float]] = {}
        if (self.path / "zarr.json").is_file():
            self._resume(fps, source_env)
        else:
            self._create(fps, source_env, frames_per_shard, metadata or {})

    # ------------------------------------------------------------- set-up
    def _specs(self) -> dict[str, tuple[tuple, str]]:
        a = self.action_space
        act = ((int(a["shape"][0]),), "float32") if a["type"] == "box" else ((), "int64")
        specs = {"action": act, "reward": ((), "float32"), "terminated": ((), "bool"), "truncated": ((), "bool")}
        specs.update(self.extras)
        return specs

    def _create(self, fps, source_env, frames_per_shard, metadata) -> None:
        root = zarr.open_group(str(self.path), mode="w-")
        s = self.image_size
        for cam in self.cameras:
            root.create_array(f"data/obs/{cam}", shape=(0, s, s, 3), dtype="uint8", chunks=(1, s, s, 3),
                              shards=(frames_per_shard, s, s, 3), fill_value=0)
        for key, (shape, dtype) in self._specs().items():
            root.create_array(f"data/{key}", shape=(0,) + shape, dtype=dtype, chunks=(4096,) + shape, fill_value=0)
        root.create_array("meta/episode_ends", shape=(0,), dtype="int64", chunks=(4096,), fill_value=0)
        root.attrs.update({
            "schema": "wfm_sim.episodes", "schema_version": SCHEMA_VERSION, "store_id": uuid.uuid4().hex,
            "fps": float(fps), "cameras": list(self.cameras), "image_size": s, "action_space": self.action_space,
            "source_env": source_env, "keys": list(self._specs()), "extras": {k: [list(v[0]), v[1]] for k, v in self.extras.items()},
            "episode_seeds": [], "stats": {}, **metadata,
        })
        self.root = root
        self.num_steps, self.num_episodes = 0, 0

    def _resume(self, fps, source_env) -> None:
        reader = EpisodeReader(self.path)
        a = reader.attrs
        mismatch = [f"{k}: store has {a.get(k)!r}, writer wants {v!r}" for k, v in
                    (("cameras", list(self.cameras)), ("image_size", self.image_size),
                     ("action_space", self.action_space), ("source_env", source_env), ("keys", list(self._specs())))
                    if a.get(k) != v]
        if mismatch:
            raise StoreError(f"cannot append to {self.path}: " + "; ".join(mismatch))
        self.root = zarr.open_group(str(self.path), mode="r+")
        self.num_steps, self.num_episodes = reader.num_steps, reader.num_episodes
        # Drop whatever a killed writer left past the last complete episode.
        for arr in self._all_arrays():
            if arr.shape[0] != self.num_steps:
                arr.resize((self.num_steps,) + arr.shape[1:])
        ends = self.root["meta/episode_ends"]
        if ends.shape[0] != self.num_episodes:
            ends.resize((self.num_episodes,))
        seeds = list(a.get("episode_seeds") or [])[: self.num_episodes]
        self.root.attrs.update({"episode_seeds": seeds, "stats": self._recompute_stats()})

    def _all_arrays(self):
        yield from (self.root[f"data/obs/{c}"] for c in self.cameras)
        yield from (self.root[f"data/{k}"] for k in self._specs())

    # -------------------------------------------------------------- steps
    def add_step(self, obs: dict[str, np.ndarray], action, reward: float, terminated: bool, truncated: bool,
                 **extras) -> None:
        """Validate and buffer one step; nothing reaches disk until :meth:`end_episode`."""
        s = self.image_size
        if set(obs) != set(self.cameras):
            raise StoreError(f"obs must have cameras {list(self.cameras)}, got {sorted(obs)}")
        for cam, frame in obs.items():
            frame = np.asarray(frame)
            if frame.dtype != np.uint8 or frame.shape != (s, s, 3):
                raise StoreError(f"obs[{cam!r}] must be uint8 ({s}, {s}, 3), got {frame.dtype} {frame.shape}")
        action = np.asarray(action)
        a = self.action_space
        if a["type"] == "box":
            if action.shape != (a["shape"][0],) or not np.issubdtype(action.dtype, np.number):
                raise StoreError(f"action must be a float array of shape ({a['shape'][0]},), got {action.dtype} {action.shape}")
            if not np.all(np.isfinite(action)):
                raise StoreError(f"action contains NaN or inf: {action}")
        elif action.shape != () or not np.issubdtype(action.dtype, np.integer) or not 0 <= int(action) < a["n"]:
            raise StoreError(f"action must be an integer in [0, {a['n']}), got {action!r}")
        if not np.isfinite(reward):
            raise StoreError(f"reward must be finite, got {reward}")
        if set(extras) != set(self.extras):
            raise StoreError(f"extras must be exactly {sorted(self.extras)}, got {sorted(extras)}")
        for k, v in extras.items():
            if np.shape(v) != self.extras[k][0]:
                raise StoreError(f"extra {k!r} must have shape {self.extras[k][0]}, got {np.shape(v)}")
        self._buffer.append({"obs": {c: np.asarray(f) for c, f in obs.items()}, "action": action,
                             "reward": float(reward), "terminated": bool(terminated), "truncated": bool(truncated),
                             **{k: np.asarray(v) for k, v in extras.items()}})

    def discard_episode(self) -> None:
        self._buffer.clear()

    def end_episode(self, seed: int | None = None) -> int:
        """Write the buffered episode; it becomes visible when ``episode_ends`` grows. Returns its length."""
        if not self._buffer:
            raise StoreError("end_episode() with no buffered steps")
        steps, self._buffer = self._buffer, []
        n0, n = self.num_steps, len(steps)
        for cam in self.cameras:
            self._append(self.root[f"data/obs/{cam}"], np.stack([s["obs"][cam] for s in steps]), n0)
        for key, (_, dtype) in self._specs().items():
            self._append(self.root[f"data/{key}"], np.stack([s[key] for s in steps]).astype(dtype), n0)
        self._accumulate(steps)
        self.root.attrs.update({"stats": self._stats(),
                                "episode_seeds": list(self.root.attrs.get("episode_seeds") or []) + [seed]})
        ends = self.root["meta/episode_ends"]
        ends.resize((self.num_episodes + 1,))
        ends[self.num_episodes] = n0 + n  # the commit point
        self.num_steps, self.num_episodes = n0 + n, self.num_episodes + 1
        return n

    def write_episode(self, ep: Episode) -> int:
        """Validate and write a whole :class:`Episode`."""
        for i in range(len(ep)):
            self.add_step({c: ep.obs[c][i] for c in self.cameras}, ep.action[i], float(ep.reward[i]),
                          bool(ep.terminated[i]), bool(ep.truncated[i]), **{k: ep.extras[k][i] for k in self.extras})
        return self.end_episode(ep.seed)

    @staticmethod
    def _append(arr, values: np.ndarray, n0: int) -> None:
        arr.resize((n0 + len(values),) + arr.shape[1:])
        arr[n0:] = values

    # -------------------------------------------------------------- stats
    def _accumulate(self, steps: list[dict]) -> None:
        for key in ("action", "reward"):
            v = np.stack([s[key] for s in steps]).astype(np.float64).reshape(len(steps), -1)
            acc = self._stats_acc.setdefault(key, [0.0, np.zeros(v.shape[1]), np.zeros(v.shape[1]), None, None])
            acc[0] += len(v)
            acc[1] = acc[1] + v.sum(0)
            acc[2] = acc[2] + (v**2).sum(0)
            acc[3] = v.min(0) if acc[3] is None else np.minimum(acc[3], v.min(0))
            acc[4] = v.max(0) if acc[4] is None else np.maximum(acc[4], v.max(0))

    def _stats(self) -> dict:
        out = {}
        for key, (n, s, s2, lo, hi) in self._stats_acc.items():
            mean = s / n
            std = np.sqrt(np.maximum(s2 / n - mean**2, 0.0))
            out[key] = {"mean": mean.tolist(), "std": std.tolist(), "min": lo.tolist(), "max": hi.tolist(), "count": int(n)}
        return out

    def _recompute_stats(self) -> dict:
        self._stats_acc = {}
        if self.num_steps:
            rows = [{"action": a, "reward": r} for a, r in zip(self.root["data/action"][: self.num_steps],
                                                                self.root["data/reward"][: self.num_steps])]
            self._accumulate(rows)
        return self._stats()

    def close(self) -> None:
        if self._buffer:
            self._buffer.clear()  # an unfinished episode is never written


def _check_action_space(a: dict) -> dict:
    if a.get("type") == "box":
        shape = list(a.get("shape", []))
        if len(shape) != 1 or len(a.get("low", [])) != shape[0] or len(a.get("high", [])) != shape[0]:
            raise StoreError(f"a box action_space needs shape [A] and low/high of length A, got {a}")
        return {"type": "box", "shape": shape, "low": [float(x) for x in a["low"]], "high": [float(x) for x in a["high"]]}
    if a.get("type") == "discrete" and int(a.get("n", 0)) >= 2:
        return {"type": "discrete", "n": int(a["n"])}
    raise StoreError(f"action_space must be {{'type': 'box', ...}} or {{'type': 'discrete', 'n': K}}, got {a}")


def merge_stores(sources: list[str | Path], dest: str | Path, progress: bool = False) -> int:
    """Append every complete episode of ``sources`` to ``dest`` (created from the first source's schema).

    Each source is merged once: ``dest`` records merged ``store_id``s, so re-running an
    interrupted merge neither loses nor duplicates episodes. Returns episodes appended.
    """
    readers = [EpisodeReader(p) for p in sources]
    if not readers:
        raise StoreError("merge needs at least one source store")
    first = readers[0]
    writer = EpisodeWriter(dest, first.cameras, first.image_size, first.action_space, first.fps,
                           first.attrs.get("source_env", ""),
                           extras={k: (tuple(v[0]), v[1]) for k, v in first.attrs.get("extras", {}).items()})
    done = set(writer.root.attrs.get("merged_from") or [])
    added = 0
    for r in readers:
        sid = r.attrs["store_id"]
        if sid in done:
            continue
        # Note where this source starts before copying: after a crash, the committed episode
        # count (episode_ends is the commit point) says how many of its episodes already landed.
        partial = dict(writer.root.attrs.get("merging") or {})
        if partial.get("store_id") != sid:
            partial = {"store_id": sid, "base": writer.num_episodes}
            writer.root.attrs["merging"] = partial
        for i in range(writer.num_episodes - partial["base"], r.num_episodes):
            writer.write_episode(r.episode(i))
            added += 1
        done.add(sid)
        writer.root.attrs.update({"merged_from": sorted(done), "merging": {}})
    return added
