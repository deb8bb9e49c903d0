"""Export a store as a LeRobot dataset (codebase v3.0), so episodes drop into LeRobot training code.

The layout is the one ``lerobot.datasets.lerobot_dataset.LeRobotDataset(repo_id, root=...)``
loads unchanged::

    meta/info.json                                   codebase_version v3.0, fps, features, paths
    meta/stats.json                                  min / max / mean / std / count per feature
    meta/tasks.parquet                               task string -> task_index
    meta/episodes/chunk-000/file-000.parquet         one row per episode: its rows and video spans
    data/chunk-CCC/file-FFF.parquet                  one row per step, many episodes per file
    videos/observation.images.<cam>/chunk-CCC/file-FFF.mp4   H.264 yuv420p, episodes end to end
    meta/wfm_sim.json                                where the episodes came from (not read by LeRobot)

Store keys map to LeRobot features: each camera to ``observation.images.<cam>`` (video),
``action`` to ``action``, ``reward`` to ``next.reward``, ``terminated`` to ``next.done``, the
``state`` extra to ``observation.state``, ``success`` to ``next.success``, ``ego_pose`` to
``observation.ego_pose``, and any other extra to ``wfm_sim.<name>`` (a generated store's
per-step provenance: ``entropy``, ``real_frame``, ``start_context``). A ``truncated`` step is a
step LeRobot has no column for; it is the episode's last row.

Crash safety: the dataset is built in ``<out>.partial`` and renamed to ``<out>`` when complete,
so a folder under the final name is always a finished export; a rerun after a kill starts the
partial folder over.

Dimension legend: :mod:`wfm_sim.dims`.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from wfm_sim.datasets.store import EpisodeReader, StoreError

CODEBASE_VERSION = "v3.0"
CHUNKS_SIZE = 1000
"""Files per chunk folder (LeRobot's default)."""
DATA_PATH = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
VIDEO_PATH = "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
EPISODES_PATH = "meta/episodes/chunk-000/file-000.parquet"
MARKER = ".wfm_sim_export"
"""Written first into the partial folder: a rerun removes only a partial folder that carries it."""
EXTRA_NAMES = {"state": "observation.state", "success": "next.success", "ego_pose": "observation.ego_pose"}


class ExportError(ValueError):
    """A store that cannot be written as a LeRobot dataset, or a destination that must not be touched."""


@dataclass
class _File:
    """One data parquet file and its videos, filled episode by episode."""

    index: int
    first_row: int = 0
    rows: int = 0

    @property
    def chunk_file(self) -> tuple[int, int]:
        return divmod(self.index, CHUNKS_SIZE)


def feature_names(reader: EpisodeReader) -> dict[str, str]:
    """Store key -> LeRobot feature name, for every camera and array the export writes."""
    names = {f"obs/{c}": f"observation.images.{c}" for c in reader.cameras}
    names |= {"action": "action", "reward": "next.reward", "terminated": "next.done"}
    names |= {k: EXTRA_NAMES.get(k, f"wfm_sim.{k}") for k in reader.extras}
    return names


def _features(reader: EpisodeReader, fps: int, codec: str) -> dict[str, dict]:
    size = reader.image_size
    feats: dict[str, dict] = {}
    for c in reader.cameras:
        feats[f"observation.images.{c}"] = {
            "dtype": "video", "shape": [size, size, 3], "names": ["height", "width", "channels"],
            "info": {"video.height": size, "video.width": size, "video.codec": codec, "video.pix_fmt": "yuv420p",
                     "video.is_depth_map": False, "video.fps": fps, "video.channels": 3, "has_audio": False}}
    space = reader.action_space
    if space.get("type") == "discrete":
        feats["action"] = {"dtype": "int64", "shape": [1], "names": None}
    else:
        shape = [int(np.prod(space["shape"]))]
        feats["action"] = {"dtype": "float32", "shape": shape, "names": [f"a{i}" for i in range(shape[0])]}
    feats["next.reward"] = {"dtype": "float32", "shape": [1], "names": None}
    feats["next.done"] = {"dtype": "bool", "shape": [1], "names": None}
    for key in reader.extras:
        arr = reader.arrays[key]
        if arr.ndim > 2:
            raise ExportError(f"{reader.path}: extra {key!r} has shape {arr.shape[1:]} per step; a LeRobot feature "
                              "of this export is a scalar or a vector")
        dtype = "bool" if arr.dtype == bool else ("int64" if np.issubdtype(arr.dtype, np.integer) else "float32")
        feats[EXTRA_NAMES.get(key, f"wfm_sim.{key}")] = {"dtype": dtype, "shape": [int(np.prod(arr.shape[1:]))],
                                                        "names": None}
    for name in ("timestamp", "frame_index", "episode_index", "index", "task_index"):
        feats[name] = {"dtype": "float32" if name == "timestamp" else "int64", "shape": [1], "names": None}
    return feats


def _integer_fps(reader: EpisodeReader, fps: int | None) -> int:
    if fps is not None:
        if fps <= 0:
            raise ExportError(f"--fps {fps}: a frame rate must be a positive integer")
        return int(fps)
    f = reader.fps
    if abs(f - round(f)) > 1e-9 or round(f) <= 0:
        raise ExportError(f"{reader.path} records at {f:g} fps; LeRobot datasets have an integer fps: pass --fps N "
                          "to declare one (timestamps become frame_index / N)")
    return round(f)


class _Stats:
    """Running min / max / sum / sum of squares per feature (images per channel, in [0, 1])."""

    def __init__(self):
        self.acc: dict[str, list] = {}

    def add(self, name: str, values: np.ndarray, image: bool = False) -> None:
        if image:  # (s, H, W, 3) uint8 -> per-channel over all pixels
            x = values.reshape(-1, 3).astype(np.float64) / 255.0
        else:
            x = np.asarray(values, np.float64).reshape(len(values), -1)
        a = self.acc.get(name)
        part = [x.min(0), x.max(0), x.sum(0), (x * x).sum(0), len(x)]
        if a is None:
            self.acc[name] = part
        else:
            self.acc[name] = [np.minimum(a[0], part[0]), np.maximum(a[1], part[1]), a[2] + part[2], a[3] + part[3],
                              a[4] + part[4]]

    def as_json(self, images: set[str]) -> dict:
        out = {}
        for name, (lo, hi, s, sq, n) in self.acc.items():
            mean = s / n
            std = np.sqrt(np.maximum(sq / n - mean * mean, 0.0))
            shape = (3, 1, 1) if name in images else (-1,)
            out[name] = {"min": lo.reshape(shape).tolist(), "max": hi.reshape(shape).tolist(),
                         "mean": mean.reshape(shape).tolist(), "std": std.reshape(shape).tolist(), "count": [int(n)]}
        return out


class _Video:
    """An H.264 mp4 written frame by frame with presentation times i / fps (what LeRobot seeks to)."""

    def __init__(self, path: Path, size: int, fps: int, crf: int, gop: int):
        import av

        path.parent.mkdir(parents=True, exist_ok=True)
        self.container = av.open(str(path), "w")
        self.stream = self.container.add_stream("libx264", rate=fps)
        self.stream.width = self.stream.height = size
        self.stream.pix_fmt = "yuv420p"
        self.stream.codec_context.time_base = Fraction(1, fps)
        # Small groups of pictures and no B-frames: a loader seeking to one timestamp decodes few frames.
        self.stream.options = {"crf": str(crf), "g": str(gop), "bf": "0", "preset": "medium"}
        self.n = 0

    def add(self, frames: np.ndarray) -> None:
        import av

        for f in frames:
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24")
            frame.pts = self.n
            self.n += 1
            for packet in self.stream.encode(frame):
                self.container.mux(packet)

    def close(self) -> None:
        for packet in self.stream.encode():
            self.container.mux(packet)
        self.container.close()


def _column(values: np.ndarray, feature: dict):
    import pyarrow as pa

    kind = {"float32": pa.float32(), "int64": pa.int64(), "bool": pa.bool_()}[feature["dtype"]]
    if feature["shape"] == [1]:
        return pa.array(np.asarray(values).reshape(len(values)).astype(feature["dtype"]), kind)
    flat = pa.array(np.asarray(values).reshape(-1).astype(feature["dtype"]), kind)
    return pa.FixedSizeListArray.from_arrays(flat, feature["shape"][0])


def export_lerobot(store: str | Path, out: str | Path, task: str | None = None, fps: int | None = None,
                   crf: int = 18, gop: int = 2, frames_per_file: int = 20_000, progress: bool = True) -> dict:
    """Write every complete episode of ``store`` as a LeRobot v3.0 dataset folder ``out``.

    Args:
        store: a wfm_sim episode store.
        out: the dataset folder to create; refused if it exists.
        task: the task string of every episode (default: the store's source, e.g. ``carracing-4cam``).
        fps: the dataset's integer frame rate, when the store's is not an integer.
        crf: H.264 quality (0 is lossless in YUV; LeRobot records at 30 with AV1).
        gop: frames between key frames (LeRobot's default, 2, makes random access cheap).
        frames_per_file: rows per data file and video file before the next file starts.

    Returns:
        ``{"episodes", "frames", "files", "cameras", "out", "seconds"}``.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    t0 = time.perf_counter()
    reader = EpisodeReader(store)
    reader.check_values()
    out = Path(out)
    if out.exists():
        raise ExportError(f"{out} exists; export writes a new dataset folder: remove it or choose another --out")
    if reader.num_episodes == 0:
        raise ExportError(f"{store} holds no complete episode to export")
    if reader.image_size % 2:
        raise ExportError(f"{store} has {reader.image_size} px frames; LeRobot videos are yuv420p, whose sides must "
                          "be even")
    if not 0 <= crf <= 51 or gop < 1 or frames_per_file < 1:
        raise ExportError(f"crf must lie in 0..51 (got {crf}), gop >= 1 (got {gop}), frames_per_file >= 1 "
                          f"(got {frames_per_file})")
    rate = _integer_fps(reader, fps)
    features = _features(reader, rate, "h264")
    names = feature_names(reader)
    task = task or str(reader.attrs.get("source_env") or reader.attrs.get("source") or "wfm_sim")

    partial = out.with_name(out.name + ".partial")
    if partial.exists():
        if not (partial / MARKER).exists():
            raise ExportError(f"{partial} exists and was not made by an export; remove it or choose another --out")
        shutil.rmtree(partial)  # a killed export's leftovers: start over
    (partial / "meta").mkdir(parents=True)
    (partial / MARKER).write_text("an unfinished wfm_sim export; a rerun removes it\n")

    stats = _Stats()
    episodes: dict[str, list] = {k: [] for k in (
        "episode_index", "tasks", "length", "data/chunk_index", "data/file_index", "dataset_from_index",
        "dataset_to_index", *[f"videos/{names[f'obs/{c}']}/{k}" for c in reader.cameras
                              for k in ("chunk_index", "file_index", "from_timestamp", "to_timestamp")],
        "meta/episodes/chunk_index", "meta/episodes/file_index")}
    file, table, videos, files = _File(0), [], {}, 1

    def open_videos(f: _File) -> dict:
        ci, fi = f.chunk_file
        return {c: _Video(partial / VIDEO_PATH.format(video_key=names[f"obs/{c}"], chunk_index=ci, file_index=fi),
                          reader.image_size, rate, crf, gop) for c in reader.cameras}

    def close_file(f: _File) -> None:
        ci, fi = f.chunk_file
        path = partial / DATA_PATH.format(chunk_index=ci, file_index=fi)
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.concat_tables(table), path)
        for v in videos.values():
            v.close()

    total = 0
    bar = tqdm(range(reader.num_episodes), desc="export lerobot", unit="ep", disable=not progress)
    for e in bar:
        ep = reader.episode(e)
        n = len(ep)
        if file.rows and file.rows + n > frames_per_file:
            close_file(file)
            file, table, files = _File(file.index + 1, first_row=total), [], files + 1
        if not videos or file.rows == 0:
            videos = open_videos(file)
        done = np.asarray(ep.terminated, bool) | np.asarray(ep.truncated, bool)
        cols = {"action": ep.action, "next.reward": ep.reward, "next.done": done,
                **{names[k]: v for k, v in ep.extras.items()}}
        frame_index = np.arange(n)
        cols |= {"timestamp": (frame_index / rate).astype(np.float32), "frame_index": frame_index,
                 "episode_index": np.full(n, e), "index": total + frame_index, "task_index": np.zeros(n, np.int64)}
        table.append(pa.table({k: _column(v, features[k]) for k, v in cols.items()}))
        for k, v in cols.items():
            stats.add(k, v)
        ci, fi = file.chunk_file
        start_ts = file.rows / rate
        for c in reader.cameras:
            key = names[f"obs/{c}"]
            videos[c].add(ep.obs[c])
            stats.add(key, ep.obs[c], image=True)
            episodes[f"videos/{key}/chunk_index"].append(ci)
            episodes[f"videos/{key}/file_index"].append(fi)
            episodes[f"videos/{key}/from_timestamp"].append(start_ts)
            episodes[f"videos/{key}/to_timestamp"].append(start_ts + n / rate)
        for k, v in (("episode_index", e), ("tasks", [task]), ("length", n), ("data/chunk_index", ci),
                     ("data/file_index", fi), ("dataset_from_index", total), ("dataset_to_index", total + n),
                     ("meta/episodes/chunk_index", 0), ("meta/episodes/file_index", 0)):
            episodes[k].append(v)
        file.rows += n
        total += n
    close_file(file)

    (partial / EPISODES_PATH).parent.mkdir(parents=True)
    pq.write_table(pa.table(episodes), partial / EPISODES_PATH)
    pq.write_table(pa.table({"task_index": pa.array([0], pa.int64()), "task": pa.array([task])}).replace_schema_metadata(
        {b"pandas": json.dumps(_pandas_index_metadata()).encode()}), partial / "meta" / "tasks.parquet")
    info = {
        "codebase_version": CODEBASE_VERSION, "robot_type": str(reader.attrs.get("source_env") or "wfm_sim"),
        "total_episodes": reader.num_episodes, "total_frames": total, "total_tasks": 1,
        "chunks_size": CHUNKS_SIZE, "data_files_size_in_mb": 100, "video_files_size_in_mb": 200, "fps": rate,
        "splits": {"train": f"0:{reader.num_episodes}"}, "data_path": DATA_PATH, "video_path": VIDEO_PATH,
        "features": features,
    }
    (partial / "meta" / "info.json").write_text(json.dumps(info, indent=2))
    images = {names[f"obs/{c}"] for c in reader.cameras}
    (partial / "meta" / "stats.json").write_text(json.dumps(stats.as_json(images), indent=2))
    provenance = {k: v for k, v in reader.attrs.items() if k not in ("stats", "keys", "cameras")}
    (partial / "meta" / "wfm_sim.json").write_text(json.dumps({
        "exported_from": str(Path(store).resolve()), "store_attrs": provenance, "feature_of_key": names,
        "episode_keys": reader.episode_keys, "episode_seeds": reader.episode_seeds}, indent=2, default=str))
    (partial / MARKER).unlink()
    partial.rename(out)  # the commit point: only now does a folder of the final name exist
    return {"episodes": reader.num_episodes, "frames": total, "files": files, "cameras": list(reader.cameras),
            "out": str(out), "seconds": round(time.perf_counter() - t0, 2)}


def _pandas_index_metadata() -> dict:
    """The pandas metadata that makes ``pd.read_parquet(meta/tasks.parquet)`` index tasks by their string,
    as LeRobot's ``load_tasks`` expects (``tasks.loc[task].task_index``)."""
    return {
        "index_columns": ["task"], "column_indexes": [], "pandas_version": "2.2.0", "creator": {"library": "pyarrow"},
        "columns": [
            {"name": "task_index", "field_name": "task_index", "pandas_type": "int64", "numpy_type": "int64",
             "metadata": None},
            {"name": "task", "field_name": "task", "pandas_type": "unicode", "numpy_type": "object", "metadata": None},
        ],
    }


__all__ = ["ExportError", "StoreError", "export_lerobot", "feature_names"]
