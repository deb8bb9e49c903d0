"""A zarr 3 episode store in the robot-learning layout (diffusion_policy's ReplayBuffer)::

    root attrs     schema_version, fps, cameras, image_size, action_space, source_env, stats, ...
    data/obs/<cam> uint8 (N, H, W, 3)   one frame per chunk, several frames per shard
    data/action    float32 (N, A) | int64 (N,)
    data/reward    float32 (N,)
    data/terminated, data/truncated  bool (N,)
    data/<extra>   e.g. success bool (N,), ego_pose float32 (N, 3)
    meta/episode_ends   int64 (E,), exclusive ends: the commit point
    meta/episode_seeds  int64 (E,), each episode's reset seed (-1: unknown)
    meta/episode_keys   str (E,), each episode's stable identity (source or generator, model, policy, seed)

Guarantees (what a crash can and cannot lose):

* **One writer per store**: a writer holds an exclusive lock (:mod:`wfm_sim.datasets.lock`)
  that the kernel releases when it exits, however it exits; a second writer is refused.
* **Atomic episodes**: an episode is buffered in memory, its rows appended to every array, its
  seed and key written, and ``meta/episode_ends`` extended last. zarr's LocalStore replaces each
  file atomically, so a writer killed at any point loses at most the episode it was writing.
* **Validation on open** (:mod:`wfm_sim.datasets.health`): a crash's leftovers (rows past the
  last committed episode, an interrupted commit) are invisible to readers and dropped by the
  next writer; an inconsistent store (an array shorter than the committed rows, ends that do
  not increase) is refused with a repair hint, and no committed episode is ever removed.
* **Idempotent writes**: writers skip episodes whose key the store already holds.

Dimension legend: :mod:`wfm_sim.dims`.
"""

from __future__ import annotations

import math

import uuid
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from wfm_sim.datasets.episode import CORE_KEYS, SCHEMA_VERSION, Episode
from wfm_sim.datasets.health import inspect_store, truncate
from wfm_sim.datasets.lock import WriterLock


class StoreError(ValueError):
    """A store is missing, foreign, inconsistent, or does not match what the caller expected."""


def open_root(path: str | Path, mode: str = "r"):
    """The zarr root group of a wfm_sim episode store, or a :class:`StoreError` saying what it is instead."""
    path = Path(path)
    if not path.exists():
        raise StoreError(f"{path} does not exist; create a store with `wfm-sim collect`")
    if not path.is_dir():
        raise StoreError(f"{path} is a file; an episode store is a folder (*.zarr) made by `wfm-sim collect`")
    if not (path / "zarr.json").is_file():
        raise StoreError(f"{path} is not a zarr episode store (no zarr.json); create one with `wfm-sim collect`")
    try:
        root = zarr.open_group(str(path), mode=mode)
        attrs = dict(root.attrs)
    except Exception as e:  # a corrupt zarr.json
        raise StoreError(f"{path} cannot be opened as a zarr group: {e}") from e
    if attrs.get("schema") != "wfm_sim.episodes":
        creating = (path / ".writer.lock").exists() and not attrs
        raise StoreError(f"{path} is a zarr group but not a wfm_sim episode store (attrs 'schema' missing)"
                         + ("; a writer is creating it right now" if creating else ""))
    if attrs.get("schema_version", 0) > SCHEMA_VERSION:
        raise StoreError(f"{path} has schema_version {attrs['schema_version']}; this wfm_sim reads <= {SCHEMA_VERSION}")
    missing = [k for k in ("cameras", "keys", "image_size", "fps", "action_space") if k not in attrs]
    if missing or "data" not in root or "meta" not in root or "episode_ends" not in root["meta"]:
        raise StoreError(f"{path} is a damaged wfm_sim store: missing {missing or 'data/ or meta/episode_ends'}")
    return root


class EpisodeReader:
    """Read-only view of a store. Only complete episodes are visible; an inconsistent store is refused."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.root = open_root(self.path)
        self.attrs = dict(self.root.attrs)
        self.health = inspect_store(self.root, self.path)
        if not self.health.ok:
            raise StoreError(self.health.refusal())
        self.cameras: tuple[str, ...] = tuple(self.attrs["cameras"])
        data = self.root["data"]
        self.arrays: dict[str, Any] = {f"obs/{c}": data["obs"][c] for c in self.cameras}
        for key in self.attrs["keys"]:
            self.arrays[key] = data[key]
        self.episode_ends = np.asarray(self.root["meta"]["episode_ends"][: self.health.episodes], dtype=np.int64)

    @cached_property
    def episode_seeds(self) -> list[int | None]:
        meta = self.root["meta"]
        if "episode_seeds" in meta:
            return [None if s < 0 else int(s) for s in meta["episode_seeds"][: self.num_episodes]]
        seeds = list(self.attrs.get("episode_seeds") or [])[: self.num_episodes]  # schema 1
        return seeds + [None] * (self.num_episodes - len(seeds))

    @cached_property
    def episode_keys(self) -> list[str]:
        meta = self.root["meta"]
        keys = [str(k) for k in meta["episode_keys"][: self.num_episodes]] if "episode_keys" in meta else []
        # Episodes without a recorded key (schema 1) are known by the store and their index.
        return keys + [f"{self.attrs.get('store_id')}#{i}" for i in range(len(keys), self.num_episodes)]

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
        if not 0 <= start <= stop <= self.num_steps:
            raise IndexError(f"rows [{start}, {stop}) of {self.path}: expected 0 <= start <= stop <= "
                             f"{self.num_steps} (the committed rows)")
        if key not in self.arrays:
            raise StoreError(f"{self.path} has no array {key!r}; it holds {sorted(self.arrays)}")
        return self.arrays[key][start:stop]

    def episode(self, i: int) -> Episode:
        start, stop = self.episode_bounds(i)
        extras = {k: self.read(k, start, stop) for k in self.extras}
        return Episode(
            obs={c: self.read(f"obs/{c}", start, stop) for c in self.cameras},
            action=self.read("action", start, stop),
            reward=self.read("reward", start, stop),
            terminated=self.read("terminated", start, stop),
            truncated=self.read("truncated", start, stop),
            extras=extras,
            seed=self.episode_seeds[i],
            key=self.episode_keys[i],
        )

    def check_values(self) -> None:
        """Refuse NaN or inf actions and rewards (a store written by another tool, or damaged)."""
        h = inspect_store(self.root, self.path, values=True)
        if not h.ok:
            raise StoreError(f"{self.path}: " + "; ".join(h.problems) + ". Re-record those episodes, or keep the "
                             "clean ones with `wfm-sim dataset check --repair --keep-episodes K`")

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

    Holds the store's writer lock from construction to :meth:`close` (also a context manager).

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
        if isinstance(fps, bool) or not isinstance(fps, (int, float)) or not math.isfinite(fps) or fps <= 0:
            raise ValueError(f"fps must be a positive finite number of frames per second, got {fps!r} "
                             f"(nothing was written to {self.path})")
        self.cameras, self.image_size = tuple(cameras), int(image_size)
        self.action_space = _check_action_space(action_space)
        self.extras = {k: (tuple(s), str(d)) for k, (s, d) in (extras or {}).items()}
        self._buffer: list[dict] = []
        self._stats_acc: dict[str, list] = {}
        if self.path.exists() and not self.path.is_dir():
            raise StoreError(f"{self.path} is a file; an episode store is a folder (*.zarr)")
        if not (self.path / "zarr.json").is_file():
            model = _model_folder_above(self.path)
            if model is not None:
                raise StoreError(f"{self.path} would be written inside the model folder {model} (it holds config.json "
                                 "and model.safetensors): write episode stores beside models, e.g. data/NAME.zarr")
        self._lock = WriterLock(self.path).acquire()
        try:
            if (self.path / "zarr.json").is_file():
                self._resume(fps, source_env)
            else:
                self._create(fps, source_env, frames_per_shard, metadata or {})
        except BaseException:
            self._lock.release()
            raise
        self._keys = set(EpisodeReader(self.path).episode_keys)

    def __enter__(self) -> "EpisodeWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------- set-up
    def _specs(self) -> dict[str, tuple[tuple, str]]:
        a = self.action_space
        act = ((int(a["shape"][0]),), "float32") if a["type"] == "box" else ((), "int64")
        specs = {"action": act, "reward": ((), "float32"), "terminated": ((), "bool"), "truncated": ((), "bool")}
        specs.update(self.extras)
        return specs

    def _create(self, fps, source_env, frames_per_shard, metadata) -> None:
        root = zarr.open_group(str(self.path), mode="a")  # the folder holds our lock file already
        s = self.image_size
        for cam in self.cameras:
            root.create_array(f"data/obs/{cam}", shape=(0, s, s, 3), dtype="uint8", chunks=(1, s, s, 3),
                              shards=(frames_per_shard, s, s, 3), fill_value=0)
        for key, (shape, dtype) in self._specs().items():
            root.create_array(f"data/{key}", shape=(0,) + shape, dtype=dtype, chunks=(4096,) + shape, fill_value=0)
        _meta_arrays(root)
        root.attrs.update({
            "schema": "wfm_sim.episodes", "schema_version": SCHEMA_VERSION, "store_id": uuid.uuid4().hex,
            "fps": float(fps), "cameras": list(self.cameras), "image_size": s, "action_space": self.action_space,
            "source_env": source_env, "keys": list(self._specs()), "extras": {k: [list(v[0]), v[1]] for k, v in self.extras.items()},
            "stats": {}, **metadata,
        })
        self.root = root
        self.num_steps, self.num_episodes = 0, 0

    def _resume(self, fps, source_env) -> None:
        reader = EpisodeReader(self.path)  # refuses an inconsistent store: nothing is touched
        a = reader.attrs
        mismatch = [f"{k}: store has {a.get(k)!r}, writer wants {v!r}" for k, v in
                    (("cameras", list(self.cameras)), ("image_size", self.image_size),
                     ("action_space", self.action_space), ("source_env", source_env), ("keys", list(self._specs())))
                    if a.get(k) != v]
        if mismatch:
            raise StoreError(f"cannot append to {self.path}: " + "; ".join(mismatch))
        seeds, keys = reader.episode_seeds, reader.episode_keys
        self.root = zarr.open_group(str(self.path), mode="r+")
        self.num_steps, self.num_episodes = reader.num_steps, reader.num_episodes
        truncate(self.root, self.num_steps, self.num_episodes)  # a killed writer's unfinished episode
        if "episode_keys" not in self.root["meta"]:  # a schema-1 store: seeds and keys become arrays
            _meta_arrays(self.root)
            for name, values, fill in (("episode_seeds", seeds, -1), ("episode_keys", keys, "")):
                arr = self.root[f"meta/{name}"]
                arr.resize((len(values),))
                if values:
                    arr[:] = np.asarray([fill if v is None else v for v in values], dtype=arr.dtype)
            self.root.attrs.update({"schema_version": SCHEMA_VERSION, "episode_seeds": None})
        self.root.attrs["stats"] = self._recompute_stats()

    # -------------------------------------------------------------- steps
    def has(self, key: str) -> bool:
        """Whether the store already holds a committed episode with this key."""
        return key in self._keys

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
            if action.shape != (a["shape"][0],) or not np.issubdtype(action.dtype, np.number) or np.iscomplexobj(action):
                raise StoreError(f"action must be a real array of shape ({a['shape'][0]},), got {action.dtype} {action.shape}")
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
            if np.issubdtype(np.asarray(v).dtype, np.floating) and not np.all(np.isfinite(v)):
                raise StoreError(f"extra {k!r} contains NaN or inf: {v}")
        self._buffer.append({"obs": {c: np.asarray(f) for c, f in obs.items()}, "action": action,
                             "reward": float(reward), "terminated": bool(terminated), "truncated": bool(truncated),
                             **{k: np.asarray(v) for k, v in extras.items()}})

    def discard_episode(self) -> None:
        self._buffer.clear()

    def end_episode(self, seed: int | None = None, key: str | None = None) -> int:
        """Write the buffered episode; it becomes visible when ``episode_ends`` grows. Returns its length.

        ``key`` is the episode's stable identity (default: the store and the episode's index);
        an episode whose key the store holds already is refused (see :meth:`has`).
        """
        if not self._lock.held:
            raise StoreError(f"the writer of {self.path} is closed")
        if not self._buffer:
            raise StoreError("end_episode() with no buffered steps")
        key = key if key is not None else f"{self.root.attrs['store_id']}#{self.num_episodes}"
        if key in self._keys:
            self._buffer.clear()
            raise StoreError(f"{self.path} holds episode {key!r} already; skip it with writer.has(key)")
        steps, self._buffer = self._buffer, []
        n0, n, e = self.num_steps, len(steps), self.num_episodes
        for cam in self.cameras:
            self._append(self.root[f"data/obs/{cam}"], np.stack([s["obs"][cam] for s in steps]), n0)
        for name, (_, dtype) in self._specs().items():
            self._append(self.root[f"data/{name}"], np.stack([s[name] for s in steps]).astype(dtype), n0)
        self._append(self.root["meta/episode_seeds"], np.asarray([-1 if seed is None else int(seed)], np.int64), e)
        self._append(self.root["meta/episode_keys"], np.asarray([key], dtype=object), e)
        self._accumulate(steps)
        self.root.attrs["stats"] = self._stats()
        self._append(self.root["meta/episode_ends"], np.asarray([n0 + n], np.int64), e)  # the commit point
        self.num_steps, self.num_episodes = n0 + n, e + 1
        self._keys.add(key)
        return n

    def write_episode(self, ep: Episode) -> int:
        """Validate and write a whole :class:`Episode` (under its ``key``, when it has one)."""
        for i in range(len(ep)):
            self.add_step({c: ep.obs[c][i] for c in self.cameras}, ep.action[i], float(ep.reward[i]),
                          bool(ep.terminated[i]), bool(ep.truncated[i]), **{k: ep.extras[k][i] for k in self.extras})
        return self.end_episode(ep.seed, ep.key)

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
        """Drop an unfinished episode (it is never written) and release the store's lock."""
        self._buffer.clear()
        self._lock.release()


def _model_folder_above(path: Path) -> Path | None:
    """The nearest folder above ``path`` that is a saved model (config.json + model.safetensors), if any."""
    for parent in path.resolve().parents:
        if (parent / "config.json").is_file() and (parent / "model.safetensors").is_file():
            return parent
    return None


def _meta_arrays(root) -> None:
    """The per-episode seed and key arrays (created with the store, or when a schema-1 store resumes)."""
    import warnings

    have = set(root["meta"].array_keys()) if "meta" in root else set()
    if "episode_ends" not in have:
        root.create_array("meta/episode_ends", shape=(0,), dtype="int64", chunks=(4096,), fill_value=0)
    if "episode_seeds" not in have:
        root.create_array("meta/episode_seeds", shape=(0,), dtype="int64", chunks=(4096,), fill_value=-1)
    if "episode_keys" not in have:
        with warnings.catch_warnings():  # zarr: variable-length strings have no finalised v3 spec yet
            warnings.simplefilter("ignore")
            root.create_array("meta/episode_keys", shape=(0,), dtype=str, chunks=(4096,))


def _check_action_space(a: dict) -> dict:
    if a.get("type") == "box":
        shape = list(a.get("shape", []))
        if len(shape) != 1 or len(a.get("low", [])) != shape[0] or len(a.get("high", [])) != shape[0]:
            raise StoreError(f"a box action_space needs shape [A] and low/high of length A, got {a}")
        return {"type": "box", "shape": shape, "low": [float(x) for x in a["low"]], "high": [float(x) for x in a["high"]]}
    if a.get("type") == "discrete" and int(a.get("n", 0)) >= 2:
        return {"type": "discrete", "n": int(a["n"])}
    raise StoreError(f"action_space must be {{'type': 'box', ...}} or {{'type': 'discrete', 'n': K}}, got {a}")
