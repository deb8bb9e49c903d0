"""Every subcommand answers bad input with one line and a non-zero exit: never a traceback."""

import numpy as np
import pytest

from wfm_sim.cli import main


@pytest.fixture(scope="module")
def paths(tmp_path_factory, square_store, tiny_model_dir_with_contexts):
    root = tmp_path_factory.mktemp("cli")
    (root / "file.txt").write_text("not a folder")
    (root / "empty.npy").write_bytes(b"")
    return {"missing": str(root / "missing.zarr"), "file": str(root / "file.txt"), "store": str(square_store),
            "model": str(tiny_model_dir_with_contexts), "out": str(root / "out"), "empty_npy": str(root / "empty.npy")}


CASES = [
    # collect
    "collect nope --episodes 1 --out {out}/a.zarr",
    "collect carracing --episodes 0 --out {out}/a.zarr",
    "collect carracing --episodes -1 --out {out}/a.zarr",
    "collect carracing --episodes 1 --max-steps 0 --out {out}/a.zarr",
    "collect carracing --episodes 1 --out {out}/a.zarr --policy nope",
    "collect carracing --episodes 1 --out {file}",
    "collect gym:NoSuchEnv-v0 --episodes 1 --out {out}/a.zarr",
    "collect gym:CartPole-v1 --episodes 1 --cameras free --out {out}/a.zarr",
    "collect gym:CartPole-v1 --episodes 1 --env-kwargs [1] --out {out}/a.zarr",
    "collect gym:CartPole-v1 --episodes 1 --env-kwargs {{\"nope\":1}} --out {out}/a.zarr",
    "collect carracing --episodes 1 --fps 10 --out {out}/a.zarr",
    "collect pusher --captions --episodes 1 --out {out}/a.zarr",
    # dataset
    "dataset info {missing}",
    "dataset info {file}",
    "dataset check {missing}",
    "dataset check {file}",
    "dataset merge {missing} --out {out}/m.zarr",
    "dataset merge {store} --out {store}",
    "dataset info {store} --sheet-episodes 0",
    "dataset import robomimic {file} --out {out}/i.zarr",
    "dataset import robomimic {missing} --out {out}/i.zarr",
    "dataset import lerobot {missing} --out {out}/i.zarr",
    "dataset import lerobot {file} --out {out}/i.zarr",
    "dataset import lerobot {store} --out {out}/i.zarr",
    "dataset import parquet {store} --out {out}/i.zarr",
    # generate
    "generate --model nope --episodes 1 --out {out}/g.zarr",
    "generate --model {model} --episodes 0 --out {out}/g.zarr",
    "generate --model {model} --episodes 1 --starts {missing} --out {out}/g.zarr",
    "generate --model {model} --episodes 1 --prompt left --out {out}/g.zarr",
    "generate --model {model} --episodes 1 --policy driver --out {out}/g.zarr",
    # train
    "train policy --out {out}/p",
    "train policy --model {model} --out {out}/p --resume",
    "train backbone --data {store} --out {out}/m --horizon 3",
    "train tokenizer --data {missing} --out {out}/m --preset tiny",
    "train tokenizer --data {file} --out {out}/m --preset tiny",
    "train tokenizer --data {store} --out {out}/m --preset nope",
    "train tokenizer --data {store} --out {out}/m --steps 0",
    "train tokenizer --data {store} --out {out}/m --batch-size -2",
    "train tokenizer --data {store} --out {out}/fresh --preset tiny --resume",
    "train tokenizer --data {store} --out {file} --preset tiny",
    "train nope --data {store} --out {out}/m",
    "train backbone --data {store} --out {out}/t --preset tiny --text-encoder tiny",
    "train backbone --data {store} --out {out}/t2 --preset tiny --text-encoder {missing}",
    # evaluate
    "evaluate {missing} --data {store}",
    "evaluate nope --data {store}",
    "evaluate {model} --data {missing}",
    "evaluate {model} --data {store} --horizon 0",
    "evaluate {model} --data {store} --split val",
    # demo
    "demo --model nope",
    "demo --steps 0",
    # rollout
    "rollout --model nope --episodes 1 --horizon 2 --out {out}/r.zarr",
    "rollout --model {model} --episodes 0 --horizon 2 --out {out}/r.zarr",
    "rollout --model {model} --episodes 1 --horizon 2 --workers 0 --out {out}/r.zarr",
    "rollout --model {model} --episodes 1 --horizon 2 --policy nope --out {out}/r.zarr",
    "rollout --model {model} --episodes 1 --horizon 2 --policy driver --out {out}/r.zarr",
    "rollout --model {model} --episodes 1 --horizon 2 --policy const:5,0,0 --out {out}/r.zarr",
    "rollout --model {model} --episodes 1 --horizon 2 --policy {empty_npy} --out {out}/r.zarr",
    # score
    "score --model {model} --policies {empty_npy} --out {out}/s",
    "score --model {model} --policies random --seed -1 --out {out}/s",
    # plan
    "plan --model {model} --init-std inf --out {out}/p",
    "plan --model {model} --seed -1 --out {out}/p",
    # numbers that are not finite or in range, refused before any work
    "evaluate {model} --data {store} --temperature nan",
    "evaluate {model} --data {store} --diffusion-steps 0",
    "evaluate {model} --counterfactual --min-spread nan",
    "train backbone --data {store} --out {out}/b --preset tiny --batch-size 100000000",
]

# Refused after the command has started (a model loaded, a store opened): nothing may be left behind.
LEAVE_NOTHING = [
    "train policy --model {model} --out {out}/p --lr 0",
    "train policy --model {model} --out {out}/p --entropy-coef nan",
    "train policy --model {model} --out {out}/p --clip 0",
    "train policy --model {model} --out {out}/p --width 0",
    "train policy --model {model} --out {out}/p --data {missing}",
    "train policy --model {model} --out {out}/p --init-policy {missing}",
    "dyna --model {model} --source carracing --data {store} --out {out}/p",
    "dyna --model {model} --source nope --data {store} --out {out}/p",
    "dyna --model {model} --source carracing --data {store} --out {out}/p --wm-lr nan",
    "collect carracing --episodes 1 --policy {plan3} --out {out}/p",
    "train policy --model {model} --out {out}/p --uncertainty ensemble",
    "train policy --model {model} --out {out}/p --uncertainty dropout",
    "dyna --model {model} --source carracing --data {store} --out {out}/p --test-starts 5 --test-seed 1000000",
    "dyna --model {model} --source carracing --data {store} --out {out}/p --uncertainty ensemble",
    "baseline --source nope --out {out}/p",
    "baseline --source carracing-front --out {out}/p --real-steps 0",
    "baseline --source carracing-front --out {out}/p --lr nan",
    "baseline --source carracing-front --out {out}/p --size 16",
    "baseline --source carracing-front --out {out}/p --compare {missing}",
]


@pytest.mark.parametrize("case", CASES)
def test_bad_input_gets_one_clear_line_and_a_non_zero_exit(case, paths, capsys):
    argv = case.format(**paths).split()
    try:
        code = main(argv)
    except SystemExit as e:  # argparse's own checks
        code = e.code
    captured = capsys.readouterr()
    lines = [x for x in captured.err.strip().splitlines() if x.strip()]
    assert code not in (0, None), f"{case!r} exited 0"
    assert len(lines) == 1 and "error:" in lines[0] and "Traceback" not in captured.err, captured.err


def test_messages_name_the_file_and_the_offending_rows(paths, capsys):
    assert main(["rollout", "--model", paths["model"], "--episodes", "1", "--horizon", "2", "--policy",
                 paths["empty_npy"], "--out", paths["out"] + "/r.zarr"]) == 2
    assert f"plan file {paths['empty_npy']} is not a readable .npy array" in capsys.readouterr().err
    from gymnasium import spaces

    from wfm_sim.envs.spaces import check_actions

    box = spaces.Box(-1, 1, (2,))
    actions = np.zeros((1000, 2), np.float32)
    actions[[7, 300]] = [5, 0]
    with pytest.raises(ValueError, match=r"outside the action space bounds .*: row 7 and 1 more of 1000, e.g. \[5.0, 0.0\]$"):
        check_actions(box, actions, lead=(1000,))
    actions[7] = np.nan
    with pytest.raises(ValueError, match=r"contain NaN or inf: row 7 of 1000, e.g. \[nan, nan\]$"):
        check_actions(box, actions, lead=(1000,))


def test_a_refused_generate_leaves_no_store(paths, tmp_path, capsys):
    np.save(tmp_path / "nan.npy", np.full((8, 3), np.nan, np.float32))
    out = tmp_path / "g.zarr"
    assert main(["generate", "--model", paths["model"], "--episodes", "1", "--horizon", "2", "--policy",
                 str(tmp_path / "nan.npy"), "--out", str(out), "--quiet"]) == 2
    assert "NaN or inf" in capsys.readouterr().err and not out.exists()


def test_an_error_raised_in_a_ray_actor_is_reported_as_the_actors_own(paths, monkeypatch, capsys):
    from wfm_sim import commands

    class RayTaskError(Exception):  # what ray.get raises: its text names the actor, .cause is the error
        cause = ValueError("plan leaves the model's action space")

    def fails(cfg):
        raise RayTaskError("ray::RolloutWorker.run() (pid=1, ip=0.0.0.0, actor_id=ab)\n  File ...")

    monkeypatch.setattr(commands, "run_dataset_info", fails)
    assert main(["dataset", "info", paths["store"]]) == 2
    assert capsys.readouterr().err.strip() == "wfm-sim dataset info: error: plan leaves the model's action space"


def test_a_store_is_never_written_into_a_model_folder(paths, capsys):
    from pathlib import Path

    inside = Path(paths["model"]) / "imagined.zarr"
    assert main(["generate", "--model", paths["model"], "--episodes", "1", "--horizon", "2", "--out", str(inside),
                 "--quiet"]) == 2
    err = capsys.readouterr().err
    assert f"would be written inside the model folder {Path(paths['model']).resolve()}" in err and not inside.exists()


def test_an_empty_store_gets_a_sheet_refusal_not_a_python_message(tmp_path, capsys):
    from wfm_sim.datasets import EpisodeWriter

    EpisodeWriter(tmp_path / "e.zarr", ("CAM_FRONT",), 16, {"type": "discrete", "n": 2}, fps=10, source_env="x").close()
    assert main(["dataset", "info", str(tmp_path / "e.zarr"), "--sheet", str(tmp_path / "s.png")]) == 2
    assert "holds no complete episode to draw" in capsys.readouterr().err and not (tmp_path / "s.png").exists()


@pytest.mark.parametrize("case", LEAVE_NOTHING)
def test_a_refused_run_leaves_no_folder_or_store(case, paths, tmp_path, capsys):
    np.save(tmp_path / "plan3.npy", np.zeros((2, 3, 3), np.float32))  # 3 steps: shorter than an episode
    argv = case.format(**{**paths, "out": str(tmp_path), "plan3": str(tmp_path / "plan3.npy")}).split()
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "error:" in err[0], err
    assert not (tmp_path / "p").exists(), f"{case!r} left {sorted(p.name for p in (tmp_path / 'p').iterdir())}"
