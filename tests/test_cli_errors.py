"""Every subcommand answers bad input with one line and a non-zero exit: never a traceback."""

import pytest

from wfm_sim.cli import main


@pytest.fixture(scope="module")
def paths(tmp_path_factory, square_store, tiny_model_dir_with_contexts):
    root = tmp_path_factory.mktemp("cli")
    (root / "file.txt").write_text("not a folder")
    return {"missing": str(root / "missing.zarr"), "file": str(root / "file.txt"), "store": str(square_store),
            "model": str(tiny_model_dir_with_contexts), "out": str(root / "out")}


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
