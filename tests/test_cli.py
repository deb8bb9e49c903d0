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


def test_flags_come_from_the_command_configs(capsys):
    """A component's command takes only its own flags, every --help shows an example, and a flag's
    default is its config field's default (one source)."""
    from wfm_sim.cli import build_parser
    from wfm_sim.cli_args import build_config
    from wfm_sim.commands import ScoreCommand
    from wfm_sim.evaluation.scoring import ScoreConfig
    from wfm_sim.training.loop import TrainConfig

    with pytest.raises(SystemExit):
        main(["train", "tokenizer", "--help"])
    text = capsys.readouterr().out
    assert "--batch-size" in text and "example:" in text
    assert "--iterations" not in text and "--num-envs" not in text  # train policy's flags
    with pytest.raises(SystemExit):
        main(["train", "tokenizer", "--data", "d", "--out", "o", "--iterations", "3"])
    assert "unrecognized arguments: --iterations" in capsys.readouterr().err
    parser = build_parser()
    ns = parser.parse_args(["train", "tokenizer", "--data", "d", "--out", "o"])
    assert build_config(TrainConfig, ns, component="tokenizer") == TrainConfig("tokenizer", "d", "o", progress=True)
    ns = parser.parse_args(["score", "--out", "r", "--no-real", "--starts", "3"])
    cfg = build_config(ScoreCommand, ns)
    assert cfg.score == ScoreConfig(starts=3, real=False) and cfg.model == ScoreCommand(out="r").model
    for argv in (["--help"], ["score", "--help"], ["dataset", "import", "--help"], ["train", "policy", "--help"]):
        with pytest.raises(SystemExit):
            main(argv)
        assert "example" in capsys.readouterr().out or argv == ["--help"]
