"""Importers: a robot team's own recordings into the episode store.

* robomimic HDF5 (``data/demo_N/{actions, rewards, dones, obs/<camera>_image}``, demos in
  numeric order), the layout of robomimic and of MimicGen / RoboCasa exports;
* LeRobot dataset folders, codebase v2.x (one parquet file and one mp4 per camera per episode)
  and v3.0 (several episodes per parquet and mp4 file, located by ``meta/episodes``).

Both keep episode boundaries, select cameras by name, resize frames to ``size x size`` (aspect
ratio not kept) and store each episode under a stable key (``robomimic/<absolute file>/<demo>``,
``lerobot/<absolute folder>/episode=<i>``: two files or folders of the same name never share
keys), so an import killed half-way is completed, not duplicated, by running it again. A store written by an importer trains like a recorded one.

What cannot be mapped raises ``ImportFormatError`` naming what was expected: no camera frames,
a Dict of actions, a missing file, lengths that disagree, a video shorter than its episode.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from tqdm.auto import tqdm

from wfm_sim.datasets.episode import Episode, as_uint8_frames
from wfm_sim.datasets.store import EpisodeWriter

ROBOMIMIC_LAYOUT = "data/demo_N/{actions (T, A), rewards (T,), dones (T,), obs/<camera>_image (T, H, W, 3) uint8}"


class ImportFormatError(ValueError):
    """The input is not in the format the importer reads (the message says what was expected)."""


@dataclass(frozen=True)
class Plan:
    """What an importer found, checked before anything is written."""

    cameras: tuple[str, ...]
    action_space: dict
    fps: float
    source_env: str
    episodes: list
    """Importer-specific episode handles, in order."""
    extras: dict


def _resize(frames: np.ndarray, size: int, where: str) -> np.ndarray:
    """``(t, H, W, 3)`` frames -> ``(t, size, size, 3)`` uint8 (INTER_AREA, as recorded sources);
    float frames in [0, 1] are scaled, anything a cast would store wrong is refused."""
    frames = as_uint8_frames(frames, where)
    if frames.shape[1:3] == (size, size):
        return np.ascontiguousarray(frames, np.uint8)
    return np.stack([cv2.resize(f, (size, size), interpolation=cv2.INTER_AREA) for f in frames])


def _box(actions: list[np.ndarray], what: str) -> dict:
    """A Box spec covering every action: [-1, 1] when the data lie inside it, else the data's range."""
    if not actions:
        raise ImportFormatError(f"{what} holds no episodes")
    a = np.concatenate(actions)
    if a.ndim != 2 or not np.issubdtype(a.dtype, np.number):
        raise ImportFormatError(f"{what}: actions must be numeric (T, A) arrays, got shape {a.shape} {a.dtype}")
    if not np.isfinite(a).all():
        raise ImportFormatError(f"{what}: actions hold NaN or inf")
    lo, hi = a.min(0), a.max(0)
    if (lo >= -1).all() and (hi <= 1).all():
        lo, hi = -np.ones_like(lo), np.ones_like(hi)
    return {"type": "box", "shape": [int(a.shape[1])], "low": lo.astype(float).tolist(), "high": hi.astype(float).tolist()}


def _pick(available: list[str], cameras, what: str) -> tuple[str, ...]:
    if not available:
        raise ImportFormatError(f"{what} holds no camera frames; a world model learns from pixels")
    if cameras is None:
        return tuple(available)
    missing = [c for c in cameras if c not in available]
    if missing:
        raise ImportFormatError(f"{what} has no camera(s) {missing}; it has {available}")
    return tuple(cameras)


def _write(out, plan: Plan, size: int, load, key, metadata: dict, progress: bool, desc: str) -> dict:
    """Write every planned episode not yet in ``out`` (``load(handle) -> Episode``)."""
    t0, written, skipped, frames = time.perf_counter(), 0, 0, 0
    with EpisodeWriter(out, plan.cameras, size, plan.action_space, plan.fps, plan.source_env,
                       extras=plan.extras, metadata=metadata) as writer:
        for handle in tqdm(plan.episodes, desc=desc, unit="ep", disable=not progress):
            if writer.has(key(handle)):
                skipped += 1
                continue
            ep = load(handle)
            ep.key = key(handle)
            writer.write_episode(ep)
            written, frames = written + 1, frames + len(ep)
    return {"episodes": written, "skipped": skipped, "frames": frames, "seconds": time.perf_counter() - t0}


def _ends(done: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    terminated = np.asarray(done, bool).reshape(-1)[:n].copy()
    truncated = np.zeros(n, bool)
    truncated[-1] = not terminated[-1]
    return terminated, truncated


# -------------------------------------------------------------------------------- robomimic
def _h5(path: Path):
    try:
        import h5py
    except ImportError as e:
        raise ImportError("reading robomimic HDF5 needs h5py: pip install 'wfm-sim[io]'") from e
    if not path.is_file():
        raise FileNotFoundError(f"no robomimic file {path}")
    try:
        return h5py.File(path, "r")
    except OSError as e:
        raise ImportFormatError(f"{path} is not a readable HDF5 file (expected robomimic's {ROBOMIMIC_LAYOUT}): {e}") from e


ARRAY_LIMIT = 4 << 30
"""Largest array one demo may declare (bytes): it is read into memory whole. A few-KB file can
declare terabytes (HDF5 allocates lazily); that is refused before anything is read."""


def _check_declared(ds, where: str) -> None:
    size = int(np.prod(ds.shape, dtype=np.float64)) * ds.dtype.itemsize
    if size > ARRAY_LIMIT:
        raise ImportFormatError(f"{where} declares shape {ds.shape} {ds.dtype} ({size / 2**30:.1f} GiB), more than the "
                                f"{ARRAY_LIMIT >> 30} GiB one demo's array may hold in memory: a corrupt or hostile file?")


def _no_external_links(group, path: Path, where: str = "") -> None:
    """Refuse HDF5 external and soft links under ``group``: an import reads only the file it was given."""
    import h5py

    for name in group:
        link = group.get(name, getlink=True)
        if isinstance(link, (h5py.ExternalLink, h5py.SoftLink)):
            target = f"{link.filename}:{link.path}" if isinstance(link, h5py.ExternalLink) else link.path
            raise ImportFormatError(f"{path}: {where}{name} is a link to {target}; an import reads only the data "
                                    "stored in the file it is given")
        item = group[name]
        if isinstance(item, h5py.Group):
            _no_external_links(item, path, f"{where}{name}/")


def _robomimic_plan(f, path: Path, cameras, fps) -> Plan:
    if "data" in f:
        _no_external_links(f["data"], path, "data/")
    if "data" not in f:
        raise ImportFormatError(f"{path} has no 'data' group: expected robomimic's {ROBOMIMIC_LAYOUT}")
    demos = sorted(f["data"].keys(), key=lambda k: (int(k[5:]) if k.startswith("demo_") and k[5:].isdigit() else 1 << 62, k))
    available = None
    actions = []
    for d in demos:
        g = f["data"][d]
        for k in ("actions", "obs"):
            if k not in g:
                raise ImportFormatError(f"{path}: data/{d} has no '{k}' (expected {ROBOMIMIC_LAYOUT})")
        for k in ("actions", "rewards", "dones", "states"):
            if k in g:
                _check_declared(g[k], f"{path}: data/{d}/{k}")
        cams = sorted(k[: -len("_image")] for k, v in g["obs"].items() if k.endswith("_image") and v.ndim == 4)
        for c in cams:
            _check_declared(g["obs"][f"{c}_image"], f"{path}: data/{d}/obs/{c}_image")
        available = cams if available is None else [c for c in available if c in cams]
        t = g["actions"].shape[0]
        for k in ("rewards", "dones"):
            if k in g and g[k].shape[0] != t:
                raise ImportFormatError(f"{path}: data/{d}/{k} has {g[k].shape[0]} steps, actions {t}")
        for c in cams:
            img = g["obs"][f"{c}_image"]
            if img.shape[0] != t or img.shape[-1] != 3:
                raise ImportFormatError(f"{path}: data/{d}/obs/{c}_image must be ({t}, H, W, 3), got {img.shape}")
            if img.dtype != np.uint8:  # checked whole before anything is written: a cast would store it wrong
                as_uint8_frames(img[()], f"{path}: data/{d}/obs/{c}_image")
        actions.append(np.asarray(g["actions"]))
    chosen = _pick(available or [], cameras, str(path))
    env_args = {}
    if "env_args" in f["data"].attrs:
        try:
            env_args = json.loads(f["data"].attrs["env_args"])
        except (TypeError, ValueError):
            env_args = {}
    if fps is None:
        fps = (env_args.get("env_kwargs") or {}).get("control_freq")
        if not fps:
            raise ImportFormatError(f"{path} does not say its control rate (data.attrs['env_args'].env_kwargs."
                                    "control_freq): give fps (--fps)")
    extras = {}
    if demos and all("states" in f["data"][d] for d in demos):
        dims = {f["data"][d]["states"].shape[1:] for d in demos}
        if len(dims) == 1:
            extras["state"] = (tuple(dims.pop()), "float32")
    return Plan(chosen, _box(actions, str(path)), float(fps), str(env_args.get("env_name", "robomimic")), demos, extras)


def import_robomimic(path: str | Path, out: str | Path, cameras: list[str] | None = None, size: int = 64,
                     fps: float | None = None, progress: bool = True) -> dict:
    """Import a robomimic-style HDF5 file into the store ``out`` (created, or completed).

    Args:
        path: the ``.hdf5`` file.
        out: the store folder.
        cameras: camera names (``obs/<name>_image``) to keep; default: every camera all demos have.
        size: frame side in pixels after resizing.
        fps: control rate; default: ``env_args.env_kwargs.control_freq`` from the file.

    Returns:
        ``{"episodes": imported now, "skipped": already in the store, "frames", "seconds"}``.
    """
    path = Path(path)
    with _h5(path) as f:
        plan = _robomimic_plan(f, path, cameras, fps)

        def load(demo: str) -> Episode:
            g = f["data"][demo]
            a = np.asarray(g["actions"], np.float32)
            n = len(a)
            done = np.asarray(g["dones"]) if "dones" in g else np.zeros(n)
            term, trunc = _ends(done, n)
            extras = {"state": np.asarray(g["states"], np.float32)} if "state" in plan.extras else {}
            return Episode(obs={c: _resize(np.asarray(g["obs"][f"{c}_image"]), size, f"{path}: data/{demo}/obs/{c}_image")
                                for c in plan.cameras}, action=a,
                           reward=np.asarray(g["rewards"], np.float32).reshape(n) if "rewards" in g else np.zeros(n, np.float32),
                           terminated=term, truncated=trunc, extras=extras)

        return _write(out, plan, size, load, lambda d: f"robomimic/{path.resolve()}/{d}",
                      {"source": f"robomimic:{path.name}", "imported_from": str(path.resolve())}, progress,
                      f"import {path.name}")


# -------------------------------------------------------------------------------- LeRobot
JSON_LIMIT = 64 << 20
"""Largest metadata file read (bytes): a link to /dev/zero or a runaway file is refused, not read to exhaustion."""


def _read_json(path: Path) -> dict:
    if not path.exists():
        raise ImportFormatError(f"{path} is missing: a LeRobot dataset folder holds meta/info.json")
    if not path.is_file():
        raise ImportFormatError(f"{path} is not a regular file (a device, a folder or a link to one)")
    with open(path, "rb") as f:
        raw = f.read(JSON_LIMIT + 1)
    if len(raw) > JSON_LIMIT:
        raise ImportFormatError(f"{path} is larger than {JSON_LIMIT >> 20} MiB: not LeRobot metadata")
    try:
        out = json.loads(raw)
    except ValueError as e:
        raise ImportFormatError(f"{path} is not valid JSON: {e}") from e
    if not isinstance(out, dict):
        raise ImportFormatError(f"{path} holds a JSON {type(out).__name__}, expected an object")
    return out


def _parquet(path: Path):
    import pyarrow.parquet as pq

    if not path.is_file():
        raise ImportFormatError(f"LeRobot data file {path} is missing")
    try:
        return pq.read_table(path)
    except Exception as e:  # pyarrow raises its own error types for corrupt files
        raise ImportFormatError(f"{path} is not a readable parquet file: {e}") from e


def decode_video(path: Path) -> np.ndarray:
    """Every frame of a video file as ``(T, H, W, 3)`` uint8 RGB (PyAV: H.264, AV1, ...)."""
    import av

    if not path.is_file():
        raise ImportFormatError(f"video {path} is missing")
    try:
        with av.open(str(path)) as container:
            frames = [fr.to_ndarray(format="rgb24") for fr in container.decode(container.streams.video[0])]
    except (av.error.FFmpegError, IndexError) as e:
        raise ImportFormatError(f"{path} is not a decodable video: {e}") from e
    if not frames:
        raise ImportFormatError(f"{path} holds no frames")
    return np.stack(frames)


class _LeRobot:
    """A LeRobot dataset folder: per-episode table rows and camera frames, v2.x or v3.0."""

    def __init__(self, root: Path):
        if not root.is_dir():
            raise FileNotFoundError(f"no LeRobot dataset folder {root}")
        self.root = root
        self.info = _read_json(root / "meta" / "info.json")
        self.version = str(self.info.get("codebase_version", ""))
        if not (self.version.startswith("v2") or self.version.startswith("v3")):
            raise ImportFormatError(f"{root}: LeRobot codebase_version {self.version!r} is not supported (v2.x, v3.0)")
        self.features = self.info.get("features") or {}
        if "fps" not in self.info or not self.features:
            raise ImportFormatError(f"{root}/meta/info.json must give 'fps' and 'features'")
        self.fps = float(self.info["fps"]) if isinstance(self.info["fps"], (int, float)) else float("nan")
        if not (np.isfinite(self.fps) and self.fps > 0):
            raise ImportFormatError(f"{root}/meta/info.json gives fps {self.info['fps']!r}: a frame rate must be a "
                                    "positive number")
        self.visual = {k: v["dtype"] for k, v in self.features.items() if v.get("dtype") in ("video", "image")}
        self._tables: dict[Path, object] = {}
        self._videos: dict[Path, np.ndarray] = {}
        self.rows = self._rows_by_episode()

    def camera_name(self, key: str) -> str:
        return key.split(".")[-1]

    def _rows_by_episode(self) -> dict[int, dict]:
        """episode index -> its table columns (sorted by frame index)."""
        files = sorted((self.root / "data").glob("**/*.parquet"))
        if not files:
            raise ImportFormatError(f"{self.root} has no data/**/*.parquet files")
        out: dict[int, dict] = {}
        where: dict[int, Path] = {}
        for path in files:
            cols = _parquet(path).to_pydict()
            if "episode_index" not in cols:
                raise ImportFormatError(f"{path} has no episode_index column")
            ep = np.asarray(cols["episode_index"])
            for e in np.unique(ep):
                if int(e) in where:  # merging them would interleave two recordings into one episode
                    raise ImportFormatError(f"episode {int(e)} is claimed by both {where[int(e)]} and {path}: "
                                            "each LeRobot episode index must live in one data file")
                where[int(e)] = path
                sel = np.flatnonzero(ep == e)
                rows = {k: [v[i] for i in sel] for k, v in cols.items()}
                if "frame_index" in rows:
                    if len(set(rows["frame_index"])) != len(sel):
                        raise ImportFormatError(f"{path}: episode {int(e)} repeats frame indices "
                                                "(two recordings under one episode index?)")
                    order = np.argsort(rows["frame_index"], kind="stable")
                    rows = {k: [v[i] for i in order] for k, v in rows.items()}
                out[int(e)] = rows
        return dict(sorted(out.items()))

    def frames(self, key: str, episode: int, n: int) -> np.ndarray:
        if self.visual[key] == "image":
            col = self.rows[episode].get(key)
            if col is None:
                raise ImportFormatError(f"image feature {key} has no column in the data files")
            imgs = [cv2.imdecode(np.frombuffer(c["bytes"], np.uint8), cv2.IMREAD_COLOR) for c in col]
            if any(i is None for i in imgs):
                raise ImportFormatError(f"episode {episode}: an image of {key} cannot be decoded")
            return np.stack([i[:, :, ::-1] for i in imgs])
        if self.version.startswith("v2"):
            chunk = episode // int(self.info.get("chunks_size", 1000))
            rel = self.info.get("video_path", "videos/chunk-{episode_chunk:03d}/{video_key}/episode_{episode_index:06d}.mp4")
            video = decode_video(self._inside(rel.format(episode_chunk=chunk, video_key=key, episode_index=episode)))
            start = 0
        else:
            meta = self.episode_meta()[episode]
            rel = self.info.get("video_path", "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4")
            path = self._inside(rel.format(video_key=key, chunk_index=int(meta[f"videos/{key}/chunk_index"]),
                                           file_index=int(meta[f"videos/{key}/file_index"])))
            if path not in self._videos:
                self._videos = {path: decode_video(path)}  # episodes are in file order: keep one file decoded
            video, start = self._videos[path], int(round(float(meta[f"videos/{key}/from_timestamp"]) * self.fps))
        if len(video) < start + n:
            raise ImportFormatError(f"episode {episode}: video {key} has {len(video) - start} frames for {n} steps")
        return video[start:start + n]

    def _inside(self, rel: str) -> Path:
        """A path the metadata names, refused when it leads outside the dataset folder."""
        path = (self.root / rel).resolve()
        if not path.is_relative_to(self.root.resolve()):
            raise ImportFormatError(f"{self.root}/meta/info.json's video_path leads to {path}, outside the dataset "
                                    "folder: a LeRobot dataset reads only its own files")
        return path

    def episode_meta(self) -> dict[int, dict]:
        if not hasattr(self, "_meta"):
            files = sorted((self.root / "meta" / "episodes").glob("**/*.parquet"))
            if not files:
                raise ImportFormatError(f"{self.root}: a v3.0 dataset lists its episodes in meta/episodes/**/*.parquet")
            self._meta = {}
            for path in files:
                cols = _parquet(path).to_pydict()
                for i, e in enumerate(cols["episode_index"]):
                    self._meta[int(e)] = {k: v[i] for k, v in cols.items()}
        return self._meta


def import_lerobot(folder: str | Path, out: str | Path, cameras: list[str] | None = None, size: int = 64,
                   progress: bool = True) -> dict:
    """Import a local LeRobot dataset folder (v2.x or v3.0) into the store ``out``.

    Cameras are the ``video`` / ``image`` features, named by their last dotted part
    (``observation.images.top`` -> ``top``). ``action`` becomes the action, ``next.reward`` the
    reward (0 when absent), ``next.done`` the termination (else the last step is truncated), and
    ``observation.state`` the per-step ``state`` extra.

    Returns:
        ``{"episodes": imported now, "skipped": already in the store, "frames", "seconds"}``.
    """
    root = Path(folder)
    ds = _LeRobot(root)
    names = {ds.camera_name(k): k for k in ds.visual}
    chosen = _pick(sorted(names), cameras, str(root))
    feat = ds.features.get("action")
    if feat is None or len(feat.get("shape", [])) != 1:
        raise ImportFormatError(f"{root}: features must hold 'action' with shape [A], got {feat}")
    for e, rows in ds.rows.items():
        if "action" not in rows:
            raise ImportFormatError(f"{root}: episode {e} has no action column")
    actions = [np.asarray(rows["action"], np.float32).reshape(len(rows["action"]), -1) for rows in ds.rows.values()]
    state = ds.features.get("observation.state")
    extras = {"state": ((int(np.prod(state["shape"])),), "float32")} if state and state.get("dtype") != "video" else {}
    plan = Plan(tuple(chosen), _box(actions, str(root)), ds.fps, str(ds.info.get("robot_type") or "lerobot"),
                list(ds.rows), extras)

    def load(e: int) -> Episode:
        rows = ds.rows[e]
        a = np.asarray(rows["action"], np.float32)
        n = len(a)
        term, trunc = _ends(np.asarray(rows["next.done"]) if "next.done" in rows else np.zeros(n), n)
        reward = np.asarray(rows["next.reward"], np.float32).reshape(n) if "next.reward" in rows else np.zeros(n, np.float32)
        ex = {"state": np.asarray(rows["observation.state"], np.float32).reshape(n, -1)} if extras else {}
        return Episode(obs={c: _resize(ds.frames(names[c], e, n), size, f"{root}: episode {e}, {names[c]}")
                            for c in plan.cameras}, action=a,
                       reward=reward, terminated=term, truncated=trunc, extras=ex)

    return _write(out, plan, size, load, lambda e: f"lerobot/{root.resolve()}/episode={e}",
                  {"source": f"lerobot:{root.name}", "imported_from": str(root.resolve()),
                   "lerobot_version": ds.version}, progress, f"import {root.name}")
