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
    assert a["schema_version"] == 2 and a["fps"] == 12.5 and a["cameras"] == list(CAMS) and a["image_size"] == 16
    assert a["action_space"]["type"] == "box" and a["source_env"] == "Test-v0"
    assert len(a["stats"]["action"]["mean"]) == 3 and a["stats"]["action"]["count"] == 12
    assert root["meta/episode_seeds"][:].tolist() == [1, 2] and root["meta/episode_keys"].shape == (2,)
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
    with _writer(path) as w:
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
    a.close()
    with _writer(tmp_path / "m.zarr") as dest:  # the crashed merge had copied two episodes
        for i in range(2):
            dest.write_episode(EpisodeReader(tmp_path / "a.zarr").episode(i))
    assert merge_stores([tmp_path / "a.zarr"], tmp_path / "m.zarr") == 2
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
    with pytest.raises(StoreError, match="does not exist"):
        EpisodeReader(tmp_path / "nothing")
    (tmp_path / "plain").mkdir()
    with pytest.raises(StoreError, match="not a zarr"):
        EpisodeReader(tmp_path / "plain")
    (tmp_path / "file.zarr").write_text("x")
    with pytest.raises(StoreError, match="is a file"):
        EpisodeReader(tmp_path / "file.zarr")
    _writer(tmp_path / "s.zarr").write_episode(_episode(3, 1))
    with pytest.raises(StoreError, match="no camera"):
        WindowDataset(tmp_path / "s.zarr", frames=2, cameras=("CAM_LEFT",))


# ---------------------------------------------------------------------- a store like a database
def _store(path, episodes=3):
    with _writer(path) as w:
        for i in range(episodes):
            w.write_episode(_episode(4, 10 + i))
    return path


def test_one_writer_per_store_and_a_killed_writer_does_not_leave_it_locked(tmp_path):
    from wfm_sim.datasets import StoreLockedError

    path = _store(tmp_path / "s.zarr", 1)
    w = _writer(path)
    with pytest.raises(StoreLockedError, match=r"being written by pid \d+.*one writer per store"):
        _writer(path)
    w.close()
    _writer(path).close()  # released: a new writer is welcome
    script = tmp_path / "hold.py"
    script.write_text(KILLER.replace("while True:", "import os; print(os.getpid(), flush=True)\nwhile True:"))
    proc = subprocess.Popen([sys.executable, str(script), str(tmp_path / "k.zarr")], stdout=subprocess.PIPE, text=True)
    proc.stdout.readline()
    proc.stdout.readline()  # it committed an episode while holding the lock
    with pytest.raises(StoreLockedError):
        _writer(tmp_path / "k.zarr")
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    with _writer(tmp_path / "k.zarr") as w2:  # the kernel dropped the dead writer's lock
        w2.write_episode(_episode(2, 77))


def test_a_short_camera_array_is_refused_on_open_and_nothing_committed_is_removed(tmp_path):
    path = _store(tmp_path / "s.zarr", 3)
    root = zarr.open_group(str(path), mode="r+")
    root["data/obs/CAM_BACK"].resize((6, 16, 16, 3))  # damage: a camera lost the last 6 committed rows
    for opener in (lambda: EpisodeReader(path), lambda: _writer(path)):
        with pytest.raises(StoreError, match=r"data/obs/CAM_BACK holds 6 rows, but the 3 committed episodes end at "
                                             r"row 12.*--keep-episodes 1"):
            opener()
    assert root["data/obs/CAM_FRONT"].shape[0] == 12 and root["meta/episode_ends"][:].tolist() == [4, 8, 12]


def test_bad_episode_ends_are_refused_not_truncated(tmp_path):
    path = _store(tmp_path / "s.zarr", 3)
    root = zarr.open_group(str(path), mode="r+")
    root["meta/episode_ends"][1] = 2  # ends 4, 2, 12: not increasing
    with pytest.raises(StoreError, match="does not increase at entry 1"):
        _writer(path)
    assert root["meta/episode_ends"][:].tolist() == [4, 2, 12] and root["data/action"].shape[0] == 12


def test_an_interrupted_commit_is_repaired_by_the_next_writer(tmp_path):
    path = _store(tmp_path / "s.zarr", 2)
    root = zarr.open_group(str(path), mode="r+")
    for key in ("data/obs/CAM_FRONT", "data/obs/CAM_BACK", "data/action", "data/reward", "data/terminated",
                "data/truncated", "data/success"):
        root[key].resize((11,) + root[key].shape[1:])  # rows of a third episode...
    root["meta/episode_ends"].resize((3,))  # ...and its commit cut before the value landed (fill 0)
    r = EpisodeReader(path)
    assert r.num_episodes == 2 and not r.health.clean and r.health.partial_commits == 1
    with _writer(path) as w:
        w.write_episode(_episode(2, 50))
    r = EpisodeReader(path)
    assert r.health.clean and r.episode_ends.tolist() == [4, 8, 10]


def test_dataset_check_and_repair_from_the_command_line(tmp_path, capsys):
    import json

    from wfm_sim.cli import main

    path = _store(tmp_path / "s.zarr", 3)
    assert main(["dataset", "check", str(path)]) == 0
    assert json.loads(capsys.readouterr().out)["clean"]
    root = zarr.open_group(str(path), mode="r+")
    root["data/action"].resize((14, 3))  # partial rows of a crashed writer
    assert main(["dataset", "check", str(path)]) == 0
    assert json.loads(capsys.readouterr().out)["partial_rows"] == {"data/action": 2}
    assert main(["dataset", "check", str(path), "--repair"]) == 0
    assert json.loads(capsys.readouterr().out)["removed"] == {"data/action": 2}
    root["data/obs/CAM_BACK"].resize((5, 16, 16, 3))
    assert main(["dataset", "check", str(path)]) == 1
    assert "holds 5 rows" in capsys.readouterr().err
    assert main(["dataset", "check", str(path), "--repair"]) == 2  # refuses to touch committed episodes
    capsys.readouterr()
    assert main(["dataset", "check", str(path), "--repair", "--keep-episodes", "1"]) == 0  # the user's explicit choice
    capsys.readouterr()
    assert EpisodeReader(path).num_episodes == 1 and EpisodeReader(path).health.clean
    typo = tmp_path / "s.zar"  # a mistyped path is refused, and not created by the refusal
    assert main(["dataset", "check", str(typo), "--repair"]) == 2
    assert "does not exist" in capsys.readouterr().err and not typo.exists()


def test_merge_refuses_itself_and_stores_of_another_kind(tmp_path):
    a = _store(tmp_path / "a.zarr", 2)
    with pytest.raises(StoreError, match="into itself"):
        merge_stores([a], a)
    with EpisodeWriter(tmp_path / "c.zarr", ("CAM_FRONT",), 16, BOX, 12.5, "Test-v0",
                       extras={"success": ((), "bool")}) as w:
        w.write_episode(Episode(obs={"CAM_FRONT": np.zeros((2, 16, 16, 3), np.uint8)}, action=np.zeros((2, 3), np.float32),
                                reward=np.zeros(2, np.float32), terminated=np.zeros(2, bool), truncated=np.ones(2, bool),
                                extras={"success": np.zeros(2, bool)}))
    with pytest.raises(StoreError, match="not one dataset: cameras"):
        merge_stores([a, tmp_path / "c.zarr"], tmp_path / "m.zarr")
    with EpisodeWriter(tmp_path / "d.zarr", CAMS, 16, BOX, 12.5, "Other-v0", extras={"success": ((), "bool")}) as w:
        w.write_episode(_episode(2, 1))
    with pytest.raises(StoreError, match="source_env"):
        merge_stores([a, tmp_path / "d.zarr"], tmp_path / "m.zarr")
    assert not (tmp_path / "m.zarr" / "zarr.json").exists()  # refused before anything was written


def test_a_nan_store_is_refused_for_training(tmp_path):
    path = _store(tmp_path / "s.zarr", 2)
    zarr.open_group(str(path), mode="r+")["data/reward"][5] = np.nan  # written by another tool
    with pytest.raises(StoreError, match=r"data/reward holds NaN or inf at 1 rows \(first: \[5\]\)"):
        EpisodeReader(path).check_values()


def test_a_schema_1_store_is_read_and_upgraded_by_a_writer(tmp_path):
    path = _store(tmp_path / "s.zarr", 2)
    root = zarr.open_group(str(path), mode="r+")
    for key in ("episode_seeds", "episode_keys"):  # what session-1 stores look like
        import shutil

        shutil.rmtree(path / "meta" / key)
    root.attrs.update({"schema_version": 1, "episode_seeds": [10, 11]})
    r = EpisodeReader(path)
    assert r.episode_seeds == [10, 11] and r.episode(1).seed == 11
    with _writer(path) as w:
        w.write_episode(_episode(3, 12))
    r = EpisodeReader(path)
    assert r.attrs["schema_version"] == 2 and r.episode_seeds == [10, 11, 12] and len(set(r.episode_keys)) == 3


def test_merge_selects_cameras_and_appends_to_the_selection(tmp_path):
    """A 2-camera store merged with cameras=[CAM_BACK] holds that view alone, byte for byte; a second
    2-camera store appends to it under the same selection; a camera the store lacks, or a source whose
    cameras are not the selection, is refused by name."""
    a, b = _writer(tmp_path / "a.zarr"), _writer(tmp_path / "b.zarr")
    a.write_episode(_episode(4, 1))
    b.write_episode(_episode(5, 2))
    a.close(), b.close()
    assert merge_stores([tmp_path / "a.zarr"], tmp_path / "back.zarr", cameras=["CAM_BACK"]) == 1
    assert merge_stores([tmp_path / "b.zarr"], tmp_path / "back.zarr", cameras=["CAM_BACK"]) == 1
    r = EpisodeReader(tmp_path / "back.zarr")
    assert r.cameras == ("CAM_BACK",) or list(r.cameras) == ["CAM_BACK"]
    assert "CAM_BACK" in r.attrs["selected_from"]
    for i, src in enumerate(("a.zarr", "b.zarr")):
        want = EpisodeReader(tmp_path / src).episode(0)
        got = r.episode(i)
        np.testing.assert_array_equal(got.obs["CAM_BACK"], want.obs["CAM_BACK"])
        np.testing.assert_array_equal(got.action, want.action)
    with pytest.raises(StoreError, match="no camera \\['CAM_TOP'\\]"):
        merge_stores([tmp_path / "a.zarr"], tmp_path / "x.zarr", cameras=["CAM_TOP"])
    with pytest.raises(StoreError, match="records cameras \\['CAM_FRONT'\\]"):
        merge_stores([tmp_path / "a.zarr"], tmp_path / "x.zarr", cameras=["CAM_BACK"], source="carracing-front")
    with pytest.raises(StoreError, match="not one dataset: cameras"):  # all cameras into a one-camera store
        merge_stores([tmp_path / "a.zarr"], tmp_path / "back.zarr")
    assert merge_stores([tmp_path / "a.zarr"], tmp_path / "front.zarr", cameras=["CAM_FRONT"],
                        source="carracing-front") == 1
    assert EpisodeReader(tmp_path / "front.zarr").attrs["source"] == "carracing-front"


@pytest.mark.parametrize("fps", [-5, 0, float("nan"), float("inf")])
def test_a_bad_frame_rate_is_refused_before_anything_is_written(tmp_path, fps):
    from wfm_sim.datasets.store import EpisodeWriter

    box = {"type": "box", "shape": [3], "low": [-1, 0, 0], "high": [1, 1, 1]}
    with pytest.raises(ValueError, match=r"fps must be a positive finite number.*nothing was written"):
        EpisodeWriter(tmp_path / "s.zarr", ("CAM_FRONT",), 16, box, fps=fps, source_env="x")
    assert not (tmp_path / "s.zarr").exists()


def test_a_model_config_with_a_bad_frame_rate_is_refused(tmp_path):
    import json
    from dataclasses import replace

    from wfm_sim.checkpoint import CheckpointError
    from wfm_sim.models import WorldModel, preset

    with pytest.raises(ValueError, match="fps must be a positive finite number"):
        replace(preset("tiny"), fps=-5.0)
    d = WorldModel(preset("tiny")).save_pretrained(tmp_path / "m")
    meta = json.loads((d / "config.json").read_text())
    meta["config"]["fps"] = float("nan")
    (d / "config.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="fps must be a positive finite number"):
        WorldModel.from_pretrained(d)
