"""Recorders read real simulators; the CLI collects and summarises; multi-camera views agree in time."""

import json

import numpy as np
import pytest

from wfm_sim.cli import main
from wfm_sim.datasets import EpisodeReader
from wfm_sim.rollout import record


@pytest.mark.parametrize("source", ["carracing-4cam", "metaworld-push", "pusher"])
def test_each_source_records_real_frames(tmp_path, source):
    out = tmp_path / f"{source}.zarr"
    stats = record(source, out, episodes=1, max_steps=4, progress=False)
    r = EpisodeReader(out)
    assert r.num_episodes == 1 and r.num_steps == 4 == stats["frames"]
    ep = r.episode(0)
    for cam in r.cameras:
        frames = ep.obs[cam]
        assert frames.shape == (4, 64, 64, 3) and frames.dtype == np.uint8
        assert frames.std() > 5, f"{cam} looks blank"
    assert ep.truncated[-1]
    if source.startswith("metaworld"):
        assert "success" in ep.extras


def test_multicam_views_are_distinct_renders_of_one_instant(tmp_path):
    out = tmp_path / "d.zarr"
    record("carracing-4cam", out, episodes=1, max_steps=30, progress=False)
    ep = EpisodeReader(out).episode(0)
    assert ep.cameras == ("CAM_FRONT", "CAM_BACK", "CAM_LEFT", "CAM_RIGHT")
    last = {c: ep.obs[c][-1].astype(int) for c in ep.cameras}
    assert np.abs(last["CAM_FRONT"] - last["CAM_BACK"]).mean() > 1
    assert np.abs(last["CAM_LEFT"] - last["CAM_RIGHT"]).mean() > 1
    assert ep.total_reward() > 0, "the scripted driver should reach new track tiles"


def test_the_two_camera_push_adds_a_gripper_view_to_the_same_scene(tmp_path):
    """metaworld-push-2cam records the one-camera push's corner view pixel for pixel, plus a view
    from behind the gripper; the task and its expert are the push's."""
    from wfm_sim.envs.sources import get_source, metaworld_task

    one, two = tmp_path / "one.zarr", tmp_path / "two.zarr"
    record("metaworld-push", one, episodes=1, max_steps=3, progress=False, seed=7)
    record("metaworld-push-2cam", two, episodes=1, max_steps=3, progress=False, seed=7)
    a, b = EpisodeReader(one).episode(0), EpisodeReader(two).episode(0)
    assert EpisodeReader(two).cameras == ("corner2", "behindGripper")
    assert np.array_equal(a.obs["corner2"], b.obs["corner2"]) and np.array_equal(a.action, b.action)
    grip = b.obs["behindGripper"]
    assert grip.shape == (3, 64, 64, 3) and np.abs(grip.astype(int) - b.obs["corner2"]).mean() > 10
    assert metaworld_task("metaworld-push-2cam") == "push-v3" == metaworld_task("metaworld-push")
    with pytest.raises(ValueError, match="not a Meta-World task"):
        metaworld_task("pusher")
    assert get_source("metaworld-push-2cam").has_success


def test_cli_collect_and_info(tmp_path, capsys):
    out = tmp_path / "c.zarr"
    assert main(["collect", "carracing", "--episodes", "2", "--out", str(out), "--max-steps", "3", "--quiet"]) == 0
    assert json.loads(capsys.readouterr().out)["frames"] == 6
    assert main(["dataset", "info", str(out), "--sheet", str(tmp_path / "sheet.png")]) == 0
    text = capsys.readouterr().out
    summary = json.loads(text[text.index("{") : text.rindex("}") + 1])
    assert summary["episodes"] == 2 and summary["frames"] == 6 and summary["cameras"] == ["CAM_TOP"]
    assert (tmp_path / "sheet.png").stat().st_size > 1000
    assert main(["collect", "carracing", "--episodes", "1", "--out", str(out), "--policy", "nope", "--quiet"]) == 2
    capsys.readouterr()
    assert main(["dataset", "merge", str(out), str(out), "--out", str(tmp_path / "m.zarr"), "--quiet"]) == 0
    assert json.loads(capsys.readouterr().out)["episodes"] == 2  # the same store twice is merged once


def test_a_rerun_of_collect_completes_the_job_and_duplicates_nothing(tmp_path):
    out = tmp_path / "c.zarr"
    first = record("carracing", out, episodes=2, max_steps=3, seed=5, progress=False)
    again = record("carracing", out, episodes=3, max_steps=3, seed=5, progress=False)  # seeds 5, 6 held already
    assert (first["episodes"], again["episodes"], again["skipped"]) == (2, 1, 2)
    r = EpisodeReader(out)
    assert r.episode_seeds == [5, 6, 7] and len(set(r.episode_keys)) == 3
    record("carracing", out, episodes=1, max_steps=3, seed=5, policy="random", progress=False)  # another policy
    assert EpisodeReader(out).num_episodes == 4
