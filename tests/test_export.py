"""The LeRobot v3.0 export: read back by our importer always, and by LeRobot's own loader when the
separate LeRobot environment exists (CI makes it; see docs/data.md)."""

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

from wfm_sim.cli import main
from wfm_sim.datasets import EpisodeReader, EpisodeWriter, ExportError, export_lerobot, import_lerobot
from wfm_sim.datasets import export as export_mod
from wfm_sim.testing import square_world_store

ROOT = Path(__file__).resolve().parents[1]
LEROBOT_PYTHON = os.environ.get("WFM_SIM_LEROBOT_PYTHON") or str(ROOT / ".venv-lerobot" / "bin" / "python")
CAMS = ("CAM_FRONT", "CAM_BACK")


@pytest.fixture
def store(tmp_path):
    return square_world_store(tmp_path / "sq.zarr", episodes=5, steps=12, size=16, cameras=CAMS)


def _frame_error(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(int) - b.astype(int)).mean())


def test_export_round_trips_through_the_importer(store, tmp_path):
    out = tmp_path / "lr"
    stats = export_lerobot(store, out, frames_per_file=30, progress=False)  # several files: episodes span none
    assert stats["episodes"] == 5 and stats["files"] == 3 and not (tmp_path / "lr.partial").exists()
    info = json.loads((out / "meta" / "info.json").read_text())
    assert info["codebase_version"] == "v3.0" and info["fps"] == 10 and info["total_frames"] == stats["frames"]
    assert set(info["features"]) >= {"observation.images.CAM_FRONT", "observation.images.CAM_BACK", "action",
                                     "next.reward", "next.done", "next.success", "timestamp", "index"}
    back = tmp_path / "back.zarr"
    import_lerobot(out, back, size=16, progress=False)
    a, b = EpisodeReader(store), EpisodeReader(back)
    assert b.fps == a.fps and list(b.episode_lengths()) == list(a.episode_lengths())
    n = a.num_steps
    np.testing.assert_array_equal(b.arrays["action"][:n], a.arrays["action"][:n])
    np.testing.assert_array_equal(b.arrays["reward"][:n], a.arrays["reward"][:n])
    for cam in CAMS:  # H.264 is lossy; a frame off by one step would be off by the moving square
        assert _frame_error(b.arrays[f"obs/{cam}"][:n], a.arrays[f"obs/{cam}"][:n]) < 1.5
    stats_json = json.loads((out / "meta" / "stats.json").read_text())
    np.testing.assert_allclose(stats_json["action"]["mean"], a.arrays["action"][:n].mean(0), rtol=1e-5)
    assert np.asarray(stats_json["observation.images.CAM_FRONT"]["mean"]).shape == (3, 1, 1)
    prov = json.loads((out / "meta" / "wfm_sim.json").read_text())
    assert prov["episode_keys"] == a.episode_keys and prov["episode_seeds"] == a.episode_seeds


def test_a_killed_export_leaves_no_finished_looking_folder_and_a_rerun_completes(store, tmp_path, monkeypatch):
    out = tmp_path / "lr"
    real_add, calls = export_mod._Video.add, []

    def dying_add(self, frames):
        calls.append(1)
        if len(calls) == 5:
            raise KeyboardInterrupt  # a kill part-way through the third episode's videos
        real_add(self, frames)

    monkeypatch.setattr(export_mod._Video, "add", dying_add)
    with pytest.raises(KeyboardInterrupt):
        export_lerobot(store, out, progress=False)
    assert not out.exists() and (tmp_path / "lr.partial").exists()
    monkeypatch.setattr(export_mod._Video, "add", real_add)
    assert export_lerobot(store, out, progress=False)["episodes"] == 5
    assert not (tmp_path / "lr.partial").exists()


def test_bad_exports_are_refused_without_side_effects(store, tmp_path):
    (tmp_path / "taken").mkdir()
    with pytest.raises(ExportError, match="exists; export writes a new dataset folder"):
        export_lerobot(store, tmp_path / "taken", progress=False)
    (tmp_path / "mine.partial").mkdir()  # a folder of the partial name that the export did not make
    with pytest.raises(ExportError, match="was not made by an export"):
        export_lerobot(store, tmp_path / "mine", progress=False)
    assert (tmp_path / "mine.partial").is_dir()
    with pytest.raises(ExportError, match="crf must lie in 0..51"):
        export_lerobot(store, tmp_path / "x", crf=60, progress=False)

    odd = tmp_path / "odd.zarr"
    square_world_store(odd, episodes=1, steps=3, size=15)
    with pytest.raises(ExportError, match="15 px frames; LeRobot videos are yuv420p"):
        export_lerobot(odd, tmp_path / "y", progress=False)

    w = EpisodeWriter(tmp_path / "slow.zarr", ("cam",), 8, {"type": "discrete", "n": 3}, fps=12.5, source_env="toy")
    for t in range(4):
        w.add_step({"cam": np.zeros((8, 8, 3), np.uint8)}, t % 3, 0.0, False, t == 3)
    w.end_episode()
    w.close()
    with pytest.raises(ExportError, match="12.5 fps; LeRobot datasets have an integer fps: pass --fps N"):
        export_lerobot(tmp_path / "slow.zarr", tmp_path / "z", progress=False)
    for name in ("x", "y", "z"):
        assert not (tmp_path / name).exists() and not (tmp_path / f"{name}.partial").exists()
    stats = export_lerobot(tmp_path / "slow.zarr", tmp_path / "z", fps=12, progress=False)
    info = json.loads((tmp_path / "z" / "meta" / "info.json").read_text())
    assert stats["frames"] == 4 and info["fps"] == 12 and info["features"]["action"] == {
        "dtype": "int64", "shape": [1], "names": None}


def test_cli_export(store, tmp_path, capsys):
    assert main(["dataset", "export", "lerobot", str(store), "--out", str(tmp_path / "lr"), "--task", "push",
                 "--quiet"]) == 0
    assert json.loads(capsys.readouterr().out)["episodes"] == 5
    assert main(["dataset", "export", "lerobot", str(store), "--out", str(tmp_path / "lr"), "--quiet"]) == 2
    assert "exists; export writes a new dataset folder" in capsys.readouterr().err


@pytest.mark.skipif(not Path(LEROBOT_PYTHON).is_file() and not os.environ.get("CI"),
                    reason="no LeRobot environment (.venv-lerobot, made by .ci/run; WFM_SIM_LEROBOT_PYTHON names "
                           "another)")
def test_lerobot_loads_the_export_unchanged(store, tmp_path):
    out = tmp_path / "lr"
    export_lerobot(store, out, task="push the square", frames_per_file=30, progress=False)
    done = subprocess.run([LEROBOT_PYTHON, str(ROOT / "tests" / "lerobot_read_back.py"), str(out),
                           str(tmp_path / "back.npz")], check=False, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    with np.load(tmp_path / "back.npz", allow_pickle=False) as f:
        back = dict(f)
    r = EpisodeReader(store)
    n = r.num_steps
    assert int(back["fps"]) == 10 and int(back["num_episodes"]) == 5 and set(back["tasks"]) == {"push the square"}
    assert list(back["to_index"] - back["from_index"]) == list(r.episode_lengths())
    np.testing.assert_array_equal(back["action"], r.arrays["action"][:n])
    np.testing.assert_allclose(back["next.reward"], r.arrays["reward"][:n])
    ends = np.cumsum(r.episode_lengths()) - 1
    assert np.flatnonzero(back["next.done"]).tolist() == ends.tolist()
    starts = np.concatenate(([0], ends[:-1] + 1))
    assert np.flatnonzero(back["frame_index"] == 0).tolist() == starts.tolist()
    np.testing.assert_array_equal(back["index"], np.arange(n))
    np.testing.assert_allclose(back["timestamp"], back["frame_index"] / 10, atol=1e-6)
    for cam in CAMS:
        assert _frame_error(back[f"observation.images.{cam}"], r.arrays[f"obs/{cam}"][:n]) < 1.5

