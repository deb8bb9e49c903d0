"""Importers: robomimic HDF5 and LeRobot folders written here round-trip into the store."""

import json

import numpy as np
import pytest

from wfm_sim.datasets.importers import ImportFormatError, decode_video, import_lerobot, import_robomimic
from wfm_sim.datasets.store import EpisodeReader

h5py = pytest.importorskip("h5py")
av = pytest.importorskip("av")
pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")


def _episodes(n=3, cams=("agentview", "wrist"), size=(48, 64), seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        t = 5 + 2 * i
        out.append({
            "frames": {c: rng.integers(0, 256, (t, *size, 3), dtype=np.uint8) for c in cams},
            "actions": rng.uniform(-1, 1, (t, 7)).astype(np.float32),
            "rewards": rng.normal(size=t).astype(np.float32),
            "dones": np.r_[np.zeros(t - 1), 1.0 if i != 1 else 0.0].astype(np.int64),
            "states": rng.normal(size=(t, 5)).astype(np.float32),
        })
    return out


def _write_robomimic(path, eps, control_freq=20):
    with h5py.File(path, "w") as f:
        data = f.create_group("data")
        data.attrs["env_args"] = json.dumps({"env_name": "Lift", "env_kwargs": {"control_freq": control_freq}})
        for i, ep in enumerate(eps):
            g = data.create_group(f"demo_{i}")
            g.create_dataset("actions", data=ep["actions"])
            g.create_dataset("rewards", data=ep["rewards"])
            g.create_dataset("dones", data=ep["dones"])
            g.create_dataset("states", data=ep["states"])
            for c, fr in ep["frames"].items():
                g.create_dataset(f"obs/{c}_image", data=fr)
            g.attrs["num_samples"] = len(ep["actions"])


def _write_video(path, frames, fps=10):
    """Lossless RGB H.264 (libx264rgb, qp 0), so imported frames can be compared exactly."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264rgb", rate=fps)
        s.width, s.height, s.pix_fmt = frames.shape[2], frames.shape[1], "rgb24"
        s.options = {"qp": "0", "preset": "ultrafast"}
        for fr in frames:
            for p in s.encode(av.VideoFrame.from_ndarray(fr, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)


def _features(eps):
    cams = list(eps[0]["frames"])
    h, w = eps[0]["frames"][cams[0]].shape[1:3]
    feats = {f"observation.images.{c}": {"dtype": "video", "shape": [h, w, 3], "names": ["height", "width", "channel"]}
             for c in cams}
    feats.update({"action": {"dtype": "float32", "shape": [7]}, "observation.state": {"dtype": "float32", "shape": [5]},
                  "next.reward": {"dtype": "float32", "shape": [1]}, "next.done": {"dtype": "bool", "shape": [1]},
                  "episode_index": {"dtype": "int64", "shape": [1]}, "frame_index": {"dtype": "int64", "shape": [1]}})
    return feats


def _table(ep, e):
    t = len(ep["actions"])
    return pa.table({"action": ep["actions"].tolist(), "observation.state": ep["states"].tolist(),
                     "next.reward": ep["rewards"].tolist(), "next.done": ep["dones"].astype(bool).tolist(),
                     "episode_index": [e] * t, "frame_index": list(range(t))})


def _write_lerobot_v2(root, eps, fps=10):
    (root / "meta").mkdir(parents=True)
    (root / "meta" / "info.json").write_text(json.dumps({
        "codebase_version": "v2.1", "fps": fps, "robot_type": "so100", "chunks_size": 1000, "features": _features(eps),
        "data_path": "data/chunk-{episode_chunk:03d}/episode_{episode_index:06d}.parquet",
        "video_path": "videos/chunk-{episode_chunk:03d}/{video_key}/episode_{episode_index:06d}.mp4"}))
    for e, ep in enumerate(eps):
        (root / "data" / "chunk-000").mkdir(parents=True, exist_ok=True)
        pq.write_table(_table(ep, e), root / "data" / "chunk-000" / f"episode_{e:06d}.parquet")
        for c, fr in ep["frames"].items():
            _write_video(root / "videos" / "chunk-000" / f"observation.images.{c}" / f"episode_{e:06d}.mp4", fr, fps)


def _write_lerobot_v3(root, eps, fps=10):
    """v3.0: all episodes in one parquet and one mp4 per camera, located by meta/episodes."""
    (root / "meta" / "episodes" / "chunk-000").mkdir(parents=True)
    (root / "meta" / "info.json").write_text(json.dumps({
        "codebase_version": "v3.0", "fps": fps, "features": _features(eps),
        "video_path": "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"}))
    (root / "data" / "chunk-000").mkdir(parents=True)
    pq.write_table(pa.concat_tables([_table(ep, e) for e, ep in enumerate(eps)]), root / "data" / "chunk-000" / "file-000.parquet")
    meta = {"episode_index": [], "length": []}
    starts = np.cumsum([0] + [len(ep["actions"]) for ep in eps])
    for c in eps[0]["frames"]:
        key = f"observation.images.{c}"
        _write_video(root / "videos" / key / "chunk-000" / "file-000.mp4", np.concatenate([ep["frames"][c] for ep in eps]), fps)
        meta[f"videos/{key}/chunk_index"] = [0] * len(eps)
        meta[f"videos/{key}/file_index"] = [0] * len(eps)
        meta[f"videos/{key}/from_timestamp"] = [float(s) / fps for s in starts[:-1]]
    meta["episode_index"] = list(range(len(eps)))
    meta["length"] = [len(ep["actions"]) for ep in eps]
    pq.write_table(pa.table(meta), root / "meta" / "episodes" / "chunk-000" / "file-000.parquet")


def _check_round_trip(store, eps, cams, size=None):
    r = EpisodeReader(store)
    assert r.num_episodes == len(eps)
    for i, ep in enumerate(eps):
        got = r.episode(i)
        t = len(ep["actions"])
        for c in cams:
            want = ep["frames"][c]
            if size is not None:
                import cv2

                want = np.stack([cv2.resize(f, (size, size), interpolation=cv2.INTER_AREA) for f in want])
            np.testing.assert_array_equal(got.obs[c], want)
        np.testing.assert_array_equal(got.action, ep["actions"])
        np.testing.assert_array_equal(got.reward, ep["rewards"])
        np.testing.assert_array_equal(got.terminated, ep["dones"].astype(bool))
        np.testing.assert_array_equal(got.truncated, np.r_[np.zeros(t - 1, bool), not ep["dones"][-1]])
        np.testing.assert_allclose(got.extras["state"], ep["states"])


def test_robomimic_round_trip_and_resume(tmp_path):
    eps = _episodes(12, size=(48, 48))  # demo_10, demo_11: numeric order, not string order
    _write_robomimic(tmp_path / "lift.hdf5", eps)
    store = tmp_path / "lift.zarr"
    stats = import_robomimic(tmp_path / "lift.hdf5", store, size=48, progress=False)
    assert stats["episodes"] == 12
    _check_round_trip(store, eps, ("agentview", "wrist"))
    r = EpisodeReader(store)
    assert r.fps == 20 and r.action_space["low"] == [-1.0] * 7
    assert import_robomimic(tmp_path / "lift.hdf5", store, size=48, progress=False)["skipped"] == 12


def test_robomimic_camera_selection_and_resize(tmp_path):
    eps = _episodes(2)
    _write_robomimic(tmp_path / "a.hdf5", eps)
    import_robomimic(tmp_path / "a.hdf5", tmp_path / "a.zarr", cameras=["wrist"], size=32, progress=False)
    assert EpisodeReader(tmp_path / "a.zarr").cameras == ("wrist",)
    _check_round_trip(tmp_path / "a.zarr", eps, ("wrist",), size=32)
    with pytest.raises(ImportFormatError, match=r"no camera\(s\) \['top'\]; it has \['agentview', 'wrist'\]"):
        import_robomimic(tmp_path / "a.hdf5", tmp_path / "b.zarr", cameras=["top"], progress=False)


def test_robomimic_bad_files(tmp_path):
    (tmp_path / "junk.hdf5").write_bytes(b"not an hdf5 file at all")
    with pytest.raises(ImportFormatError, match="not a readable HDF5 file.*data/demo_N"):
        import_robomimic(tmp_path / "junk.hdf5", tmp_path / "x.zarr", progress=False)
    with h5py.File(tmp_path / "nodata.hdf5", "w") as f:
        f.create_group("demos")
    with pytest.raises(ImportFormatError, match="no 'data' group"):
        import_robomimic(tmp_path / "nodata.hdf5", tmp_path / "x.zarr", progress=False)
    eps = _episodes(1)
    _write_robomimic(tmp_path / "nofreq.hdf5", eps, control_freq=None)
    with pytest.raises(ImportFormatError, match="give fps"):
        import_robomimic(tmp_path / "nofreq.hdf5", tmp_path / "x.zarr", progress=False)
    with h5py.File(tmp_path / "short.hdf5", "w") as f:
        f.attrs["x"] = 1
        g = f.create_group("data/demo_0")
        g.create_dataset("actions", data=np.zeros((4, 2)))
        g.create_dataset("rewards", data=np.zeros(3))
        g.create_dataset("obs/cam_image", data=np.zeros((4, 8, 8, 3), np.uint8))
    with pytest.raises(ImportFormatError, match="rewards has 3 steps, actions 4"):
        import_robomimic(tmp_path / "short.hdf5", tmp_path / "x.zarr", fps=10, progress=False)
    assert not (tmp_path / "x.zarr").exists()  # nothing is written before the whole file is checked


@pytest.mark.parametrize("version", ["v2", "v3"])
def test_lerobot_round_trip(tmp_path, version):
    eps = _episodes(3, cams=("top", "wrist"))
    root = tmp_path / "so100_pick"
    (_write_lerobot_v2 if version == "v2" else _write_lerobot_v3)(root, eps)
    store = tmp_path / "so100.zarr"
    stats = import_lerobot(root, store, size=32, progress=False)
    assert stats["episodes"] == 3
    _check_round_trip(store, eps, ("top", "wrist"), size=32)
    assert EpisodeReader(store).fps == 10
    assert import_lerobot(root, store, size=32, progress=False)["skipped"] == 3


def test_lerobot_lossless_video_decodes_exactly(tmp_path):
    frames = np.random.default_rng(3).integers(0, 256, (6, 24, 32, 3), dtype=np.uint8)
    _write_video(tmp_path / "v.mp4", frames)
    np.testing.assert_array_equal(decode_video(tmp_path / "v.mp4"), frames)


def test_lerobot_bad_folders(tmp_path):
    with pytest.raises(FileNotFoundError, match="no LeRobot dataset folder"):
        import_lerobot(tmp_path / "nope", tmp_path / "x.zarr", progress=False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ImportFormatError, match="meta/info.json"):
        import_lerobot(tmp_path / "empty", tmp_path / "x.zarr", progress=False)
    eps = _episodes(2, cams=("top",))
    root = tmp_path / "ds"
    _write_lerobot_v2(root, eps)
    info = json.loads((root / "meta" / "info.json").read_text())
    (root / "meta" / "info.json").write_text(json.dumps({**info, "codebase_version": "v1.6"}))
    with pytest.raises(ImportFormatError, match=r"v1.6.*not supported \(v2.x, v3.0\)"):
        import_lerobot(root, tmp_path / "x.zarr", progress=False)
    (root / "meta" / "info.json").write_text(json.dumps(info))
    (root / "videos" / "chunk-000" / "observation.images.top" / "episode_000001.mp4").write_bytes(b"\x00" * 64)
    with pytest.raises(ImportFormatError, match="episode_000001.mp4 is not a decodable video"):
        import_lerobot(root, tmp_path / "x.zarr", progress=False)
    assert EpisodeReader(tmp_path / "x.zarr").num_episodes == 1  # the finished episode is kept; a rerun completes it
    (root / "data" / "chunk-000" / "episode_000000.parquet").write_bytes(b"PAR1garbage")
    with pytest.raises(ImportFormatError, match="episode_000000.parquet is not a readable parquet file"):
        import_lerobot(root, tmp_path / "y.zarr", progress=False)


def test_robomimic_float_frames_are_scaled_and_wrapping_integers_refused(tmp_path):
    """float32 frames in [0, 1] import as the same picture (not black); int64 frames up to 1000
    are refused before anything is written, instead of wrapping modulo 256."""
    eps = _episodes(2, cams=("agentview",), size=(16, 16))
    floats = [{**e, "frames": {"agentview": e["frames"]["agentview"].astype(np.float32) / 255}} for e in eps]
    _write_robomimic(tmp_path / "f.hdf5", floats)
    import_robomimic(tmp_path / "f.hdf5", tmp_path / "f.zarr", size=16, progress=False)
    r = EpisodeReader(tmp_path / "f.zarr")
    assert np.array_equal(r.episode(0).obs["agentview"], eps[0]["frames"]["agentview"])
    wide = [{**e, "frames": {"agentview": e["frames"]["agentview"].astype(np.int64) * 4}} for e in eps]
    _write_robomimic(tmp_path / "w.hdf5", wide)
    with pytest.raises(ValueError, match=r"data/demo_0/obs/agentview_image: int64 frames must lie in 0\.\.255, "
                                         r"got \[0, 10\d\d\]"):
        import_robomimic(tmp_path / "w.hdf5", tmp_path / "w.zarr", size=16, progress=False)
    assert not (tmp_path / "w.zarr").exists()


def test_frames_a_cast_would_store_wrong_are_refused():
    from wfm_sim.datasets.episode import as_uint8_frames

    assert as_uint8_frames(np.full((2, 2, 3), 1.0, np.float32), "x").max() == 255
    assert as_uint8_frames(np.full((2, 2, 3), 7, np.int16), "x").dtype == np.uint8
    for bad, msg in ((np.full((2, 2, 3), 2.0), r"must lie in \[0, 1\]"), (np.full((2, 2, 3), np.nan), "NaN"),
                     (np.full((2, 2, 3), -1), r"must lie in 0\.\.255"), (np.ones((2, 2, 3), bool), "must be uint8")):
        with pytest.raises((ValueError, TypeError), match=msg):
            as_uint8_frames(bad, "cam")


def test_files_of_the_same_name_in_other_folders_never_share_episode_keys(tmp_path):
    for sub, seed in (("ph", 0), ("mh", 1)):
        (tmp_path / sub).mkdir()
        _write_robomimic(tmp_path / sub / "image.hdf5", _episodes(2, cams=("agentview",), seed=seed))
    out = tmp_path / "both.zarr"
    import_robomimic(tmp_path / "ph" / "image.hdf5", out, progress=False)
    stats = import_robomimic(tmp_path / "mh" / "image.hdf5", out, progress=False)
    assert stats["episodes"] == 2 and stats["skipped"] == 0  # the second file's demos are not "already imported"
    assert EpisodeReader(out).num_episodes == 4
    assert import_robomimic(tmp_path / "mh" / "image.hdf5", out, progress=False)["skipped"] == 2  # a rerun still resumes
    for sub in ("a", "b"):
        _write_lerobot_v2(tmp_path / sub / "so100", _episodes(1, cams=("top",), seed=len(sub)))
    lr = tmp_path / "lr.zarr"
    import_lerobot(tmp_path / "a" / "so100", lr, progress=False)
    assert import_lerobot(tmp_path / "b" / "so100", lr, progress=False)["episodes"] == 1


def test_lerobot_metadata_that_would_mislead_or_exhaust_is_refused(tmp_path):
    eps = _episodes(2, cams=("top",))
    root = tmp_path / "ds"
    _write_lerobot_v2(root, eps)
    info = json.loads((root / "meta" / "info.json").read_text())
    for fps in (0, -10, "fast"):
        (root / "meta" / "info.json").write_text(json.dumps({**info, "fps": fps}))
        with pytest.raises(ImportFormatError, match="a frame rate must be a positive number"):
            import_lerobot(root, tmp_path / "x.zarr", progress=False)
    (root / "meta" / "info.json").unlink()
    (root / "meta" / "info.json").symlink_to("/dev/zero")
    with pytest.raises(ImportFormatError, match="is not a regular file"):
        import_lerobot(root, tmp_path / "x.zarr", progress=False)
    (root / "meta" / "info.json").unlink()
    (root / "meta" / "info.json").write_text(json.dumps(info))
    # A second data file that also claims episode 0: merging would interleave two recordings.
    pq.write_table(_table(eps[1], 0), root / "data" / "chunk-000" / "episode_000099.parquet")
    with pytest.raises(ImportFormatError, match="episode 0 is claimed by both .*episode_000000.parquet and "
                                               ".*episode_000099.parquet"):
        import_lerobot(root, tmp_path / "x.zarr", progress=False)
    assert not (tmp_path / "x.zarr").exists()  # refused before anything was written


def test_robomimic_arrays_declared_larger_than_memory_are_refused_before_reading(tmp_path):
    """HDF5 allocates lazily: a file of a few KB can declare 80 GiB of frames or 26 GiB of actions."""
    for name, shape, dtype in (("obs/agentview_image", (8, 60000, 60000, 3), "uint8"),
                               ("actions", (10**9, 7), "float32")):
        path = tmp_path / f"{name.split('/')[-1]}.hdf5"
        with h5py.File(path, "w") as f:
            g = f.create_group("data/demo_0")
            if name != "actions":
                g.create_dataset("actions", data=np.zeros((8, 7), np.float32))
            else:
                g.create_dataset("obs/agentview_image", data=np.zeros((8, 8, 8, 3), np.uint8))
            g.create_dataset(name, shape=shape, dtype=dtype, chunks=True)
        assert path.stat().st_size < 1 << 20
        with pytest.raises(ImportFormatError, match=rf"data/demo_0/{name} declares shape .* GiB\), more than the 4 GiB"):
            import_robomimic(path, tmp_path / "x.zarr", fps=10, progress=False)
        assert not (tmp_path / "x.zarr").exists()


def test_imports_read_only_their_own_files(tmp_path):
    """An HDF5 external link, or a LeRobot video_path leading out of the folder, is refused."""
    (tmp_path / "secret.hdf5").touch()
    with h5py.File(tmp_path / "secret.hdf5", "w") as f:
        f.create_dataset("actions", data=np.zeros((5, 7), np.float32))
    path = tmp_path / "linked.hdf5"
    _write_robomimic(path, _episodes(1, cams=("agentview",)))
    with h5py.File(path, "a") as f:
        del f["data/demo_0/actions"]
        f["data/demo_0/actions"] = h5py.ExternalLink(str(tmp_path / "secret.hdf5"), "/actions")
    with pytest.raises(ImportFormatError, match=r"data/demo_0/actions is a link to .*secret.hdf5:/actions"):
        import_robomimic(path, tmp_path / "x.zarr", progress=False)
    root = tmp_path / "ds"
    _write_lerobot_v2(root, _episodes(1, cams=("top",)))
    info = json.loads((root / "meta" / "info.json").read_text())
    (root / "meta" / "info.json").write_text(json.dumps({**info, "video_path": "../../{video_key}.mp4"}))
    with pytest.raises(ImportFormatError, match="video_path leads to .*outside the dataset folder"):
        import_lerobot(root, tmp_path / "y.zarr", progress=False)
