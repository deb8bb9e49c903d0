"""Every CLI command runs on tiny inputs and writes what it says it writes."""

import json

import pytest

from wfm_sim.cli import main


def test_train_then_evaluate(tmp_path, square_store, capsys):
    out = tmp_path / "m"
    for comp in ("tokenizer", "backbone", "decoder"):
        assert main(["train", comp, "--data", str(square_store), "--out", str(out), "--preset", "tiny", "--steps", "2",
                     "--batch-size", "2", "--num-workers", "0", "--quiet"]) == 0
        assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["step"] == 2
    assert main(["evaluate", str(out), "--data", str(square_store), "--horizon", "2", "--windows", "2",
                 "--out", str(tmp_path / "eval")]) == 0
    text = capsys.readouterr().out
    assert "baseline/repeat_last" in text and "controllability" in text
    for name in ("report.json", "psnr_over_horizon.png", "side_by_side.mp4"):
        assert (tmp_path / "eval" / name).stat().st_size > 100


def test_demo_writes_video_and_sheet(tmp_path, tiny_model_dir_with_contexts, capsys):
    from wfm_sim.viz import read_mp4

    assert main(["demo", "--model", str(tiny_model_dir_with_contexts), "--steps", "4", "--envs", "1",
                 "--out", str(tmp_path)]) == 0
    assert "env steps/s" in capsys.readouterr().out
    assert len(read_mp4(tmp_path / "demo.mp4")) == 5
    assert (tmp_path / "demo_contact_sheet.png").stat().st_size > 100


def test_rollout_command(tmp_path, tiny_model_dir_with_contexts, capsys):
    pytest.importorskip("ray")
    import numpy as np
    import ray

    from wfm_sim.datasets import EpisodeReader

    plan = tmp_path / "plan.npy"
    np.save(plan, np.zeros((3, 3), np.float32))
    try:
        assert main(["rollout", "--model", str(tiny_model_dir_with_contexts), "--policy", str(plan), "--episodes", "3",
                     "--horizon", "3", "--workers", "1", "--envs-per-worker", "2", "--out", str(tmp_path / "r.zarr"),
                     "--quiet"]) == 0
    finally:
        ray.shutdown()
    assert EpisodeReader(tmp_path / "r.zarr").num_episodes == 3
    assert main(["rollout", "--model", "x", "--policy", "nonsense", "--episodes", "1", "--horizon", "1",
                 "--out", str(tmp_path / "bad.zarr")]) == 2
