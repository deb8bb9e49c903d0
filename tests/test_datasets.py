"""Episode store: layout, crash safety (SIGKILL), resume, merge, windows, bad input."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import torch
import zarr
from torch.utils.data import DataLoader

from wfm_sim.datasets import Episode, EpisodeReader, EpisodeWriter, StoreError, merge_stores
from wfm_sim.datasets.windows import WindowDataset, collate, split_episodes

CAMS = ("CAM_FRONT", "CAM_BACK")
BOX = {"type": "box", "shape": [3], "low": [-1, 0, 0], "high": [1, 1, 1]}


def _writer(path, **kw):
    return EpisodeWriter(path, CAMS, 16, BOX, 12.5, "Test-v0", extras={"success": ((), "bool")}, frames_per_shard=8, **kw)


def _episode(n, tag):
    """Frames carry (episode tag, step) in their pixels so tests can tell rows apart."""
    obs = {c: np.zeros((n, 16, 16, 3), np.uint8) for c in CAMS}
    for c in CAMS:
        obs[c][..., 0] = tag
        obs[c][..., 1] = np.arange(n)[:, None, None]
    return Episode(obs=obs, action=np.random.rand(n, 3).astype(np.float32), reward=np.arange(n, dtype=np.float32),
                   terminated=np.arange(n) == n - 1, truncated=np.zeros(n, bool), extras={"success": np.arange(n) > n // 2},
                   seed=tag)


def test_layout_and_attributes(tmp_path):
    w = _writer(tmp_path / "s.zarr")
    w.write_episode(_episode(5, 1))
    w.write_episode(_episode(7, 2))
    root = zarr.open_group(str(tmp_path / "s.zarr"), mode="r")
    assert root["meta/episode_ends"][:].tolist() == [5, 12]
    assert root["meta/episode_ends"].dtype == np.int64
    obs = root["data/obs/CAM_FRONT"]
    assert obs.shape == (12, 16, 16, 3) and obs.dtype == np.uint8 and obs.chunks == (1, 16, 16, 3)
    assert obs.shards == (8, 16, 16, 3)
    assert root["data/action"].dtype == np.float32 and root["data/terminated"].dtype == bool
    a = dict(root.attrs)
    assert a["schema_version"] == 1 and a["fps"] == 12.5 and a["cameras"] == list(CAMS) and a["image_size"] == 16
    assert a["action_space"]["type"] == "box" and a["source_env"] == "Test-v0"
    assert len(a["stats"]["action"]["mean"]) == 3 and a["stats"]["action"]["count"] == 12
    ep = EpisodeReader(tmp_path / "s.zarr").episode(1)
    assert len(ep) == 7 and ep.seed == 2 and int(ep.obs["CAM_BACK"][3, 0, 0, 1]) == 3
    assert ep.extras["success"].tolist() == (np.arange(7) > 3).tolist()


KILLER = textwrap.dedent("""
    import sys, time, numpy as np
    from wfm_sim.datasets import EpisodeWriter
    w = EpisodeWriter(sys.argv[1], ("CAM_FRONT", "CAM_BACK"), 16,
                      {"type": "box", "shape": [3], "low": [-1, 0, 0], "high": [1, 1, 1]}, 12.5, "Test-v0",
                      extras={"success": ((), "bool")}, frames_per_shard=8)
    frame = {c: np.full((16, 16, 3), 7, np.uint8) for c in ("CAM_FRONT", "CAM_BACK")}
    ep = 0
    while True:
        for t in range(9):
            w.add_step(frame, np.zeros(3, np.float32), 1.0, False, False, success=False)
        w.end_episode(seed=ep)
        ep += 1
        print(ep, flush=True)
""")


def test_sigkill_mid_write_keeps_finished_episodes(tmp_path):
    path = tmp_path / "k.zarr"
    script = tmp_path / "killer.py"
    script.write_text(KILLER)
    proc = subprocess.Popen([sys.executable, str(script), str(path)], stdout=subprocess.PIPE, text=True)
    seen = 0
    deadline = time.time() + 60
    while seen < 4 and time.time() < deadline:
        seen = int(proc.stdout.readline() or seen)
    time.sleep(0.013)  # land somewhere inside the next episode's writes
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    r = EpisodeReader(path)
    assert r.num_episodes >= 4, "every episode reported finished must survive"
    assert all(length == 9 for length in r.episode_lengths())
    for i in range(r.num_episodes):
        ep = r.episode(i)
        assert (ep.obs["CAM_FRONT"] == 7).all() and (ep.reward == 1.0).all()
    # A new writer resumes by appending after the last complete episode.
    n = r.num_episodes
    w = _writer(path)
    w.write_episode(_episode(4, 99))
    r2 = EpisodeReader(path)
    assert r2.num_episodes == n + 1 and r2.num_steps == 9 * n + 4
    assert int(r2.episode(n).obs["CAM_FRONT"][0, 0, 0, 0]) == 99


def test_unfinished_episode_is_invisible_and_dropped_on_resume(tmp_path):
    path = tmp_path / "u.zarr"
    w = _writer(path)
    w.write_episode(_episode(5, 1))
    # Simulate a writer that appended rows but died before extending episode_ends.
    root = zarr.open_group(str(path), mode="r+")
    for key in ("data/obs/CAM_FRONT", "data/obs/CAM_BACK", "data/action", "data/reward"):
        arr = root[key]
        arr.resize((8,) + arr.shape[1:])
    assert EpisodeReader(path).num_steps == 5
    w2 = _writer(path)
    assert w2.num_steps == 5 and root["data/action"].shape[0] == 5


def test_resume_refuses_a_different_schema(tmp_path):
    _writer(tmp_path / "s.zarr").write_episode(_episode(3, 1))
    with pytest.raises(StoreError, match="cameras"):
        EpisodeWriter(tmp_path / "s.zarr", ("CAM_FRONT",), 16, BOX, 12.5, "Test-v0", extras={"success": ((), "bool")})


def test_merge_loses_and_duplicates_nothing(tmp_path):
    a, b = _writer(tmp_path / "a.zarr"), _writer(tmp_path / "b.zarr")
    for i in range(3):
        a.write_episode(_episode(4 + i, 10 + i))
    for i in range(2):
        b.write_episode(_episode(6, 20 + i))
    assert merge_stores([tmp_path / "a.zarr", tmp_path / "b.zarr"], tmp_path / "m.zarr") == 5
    assert merge_stores([tmp_path / "a.zarr", tmp_path / "b.zarr"], tmp_path / "m.zarr") == 0  # idempotent
    r = EpisodeReader(tmp_path / "m.zarr")
    tags = [int(r.episode(i).obs["CAM_FRONT"][0, 0, 0, 0]) for i in range(r.num_episodes)]
    assert tags == [10, 11, 12, 20, 21]


def test_merge_resumes_after_a_crash_mid_source(tmp_path):
    a = _writer(tmp_path / "a.zarr")
    for i in range(4):
        a.write_episode(_episode(3, 30 + i))
    dest = _writer(tmp_path / "m.zarr")
    sid = EpisodeReader(tmp_path / "a.zarr").attrs["store_id"]
    dest.root.attrs["merging"] = {"store_id": sid, "base": 0}
    for i in range(2):  # the crashed merge had copied two episodes
        dest.write_episode(EpisodeReader(tmp_path / "a.zarr").episode(i))
    merge_stores([tmp_path / "a.zarr"], tmp_path / "m.zarr")
    r = EpisodeReader(tmp_path / "m.zarr")
    assert [int(r.episode(i).obs["CAM_FRONT"][0, 0, 0, 0]) for i in range(r.num_episodes)] == [30, 31, 32, 33]


def test_windows_never_cross_episode_ends(tmp_path):
    w = _writer(tmp_path / "s.zarr")
    for i, n in enumerate((5, 3, 8, 2, 6)):
        w.write_episode(_episode(n, i))
    ds = WindowDataset(tmp_path / "s.zarr", frames=3, split="all")
    assert len(ds) == 3 + 1 + 6 + 0 + 4
    for i in range(len(ds)):
        item = ds[i]
        tags = item["obs"][:, 0, 0, 0, 0]
        steps = item["obs"][:, 0, 0, 0, 1].astype(int)
        assert len(set(tags.tolist())) == 1 and np.diff(steps).tolist() == [1, 1]
    assert item["obs"].shape == (3, 2, 16, 16, 3)


def test_split_by_episode_and_multiworker_loader(tmp_path):
    w = _writer(tmp_path / "s.zarr")
    for i in range(10):
        w.write_episode(_episode(4, i))
    train = WindowDataset(tmp_path / "s.zarr", frames=2, split="train", val_fraction=0.2, seed=1)
    val = WindowDataset(tmp_path / "s.zarr", frames=2, split="val", val_fraction=0.2, seed=1)
    assert set(train.episodes.tolist()).isdisjoint(val.episodes.tolist()) and len(val.episodes) == 2
    loader = DataLoader(train, batch_size=4, num_workers=2, collate_fn=collate)
    batches = list(loader)
    assert sum(b.obs.shape[0] for b in batches) == len(train)
    b = batches[0]
    assert b.obs.dtype == torch.uint8 and b.action.dtype == torch.float32 and b.success.dtype == torch.bool
    tr, va = split_episodes(10, 0.2, 1)
    assert len(tr) == 8 and len(va) == 2


@pytest.mark.parametrize(
    "obs,action,reward,match",
    [
        ({"CAM_FRONT": np.zeros((16, 16, 3), np.uint8)}, np.zeros(3), 0.0, "cameras"),
        ({c: np.zeros((16, 15, 3), np.uint8) for c in CAMS}, np.zeros(3), 0.0, r"uint8 \(16, 16, 3\)"),
        ({c: np.zeros((16, 16, 3), np.float32) for c in CAMS}, np.zeros(3), 0.0, "uint8"),
        ({c: np.zeros((16, 16, 3), np.uint8) for c in CAMS}, np.zeros(4), 0.0, r"shape \(3,\)"),
        ({c: np.zeros((16, 16, 3), np.uint8) for c in CAMS}, np.array([np.nan, 0, 0]), 0.0, "NaN"),
        ({c: np.zeros((16, 16, 3), np.uint8) for c in CAMS}, np.zeros(3), float("nan"), "reward must be finite"),
    ],
)
def test_bad_steps_raise_before_anything_is_written(tmp_path, obs, action, reward, match):
    w = _writer(tmp_path / "s.zarr")
    w.write_episode(_episode(3, 1))
    with pytest.raises(StoreError, match=match):
        w.add_step(obs, action, reward, False, False, success=False)
    assert EpisodeReader(tmp_path / "s.zarr").num_steps == 3


def test_empty_or_foreign_store_errors(tmp_path):
    _writer(tmp_path / "e.zarr")
    with pytest.raises(StoreError, match="no complete episode"):
        WindowDataset(tmp_path / "e.zarr", frames=2)
    zarr.open_group(str(tmp_path / "f.zarr"), mode="w")
    with pytest.raises(StoreError, match="not a wfm_sim episode store"):
        EpisodeReader(tmp_path / "f.zarr")
    with pytest.raises(StoreError, match="not a zarr"):
        EpisodeReader(tmp_path / "nothing")
    _writer(tmp_path / "s.zarr").write_episode(_episode(3, 1))
    with pytest.raises(StoreError, match="no camera"):
        WindowDataset(tmp_path / "s.zarr", frames=2, cameras=("CAM_LEFT",))
