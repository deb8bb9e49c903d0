"""Training: end to end on recorded frames, exact resume, Ray Train on 2 CPU workers, bad data."""

import json

import numpy as np
import pytest
import torch

from wfm_sim.card import training_summary
from wfm_sim.cli import main
from wfm_sim.datasets import EpisodeReader, EpisodeWriter, StoreError
from wfm_sim.datasets.split import load_split
from wfm_sim.datasets.windows import WindowDataset
from wfm_sim.evaluation.fidelity import EvalConfig, evaluate
from wfm_sim.models import WorldModel
from wfm_sim.models.presets import preset, with_tokenizer
from wfm_sim.rollout import record
from wfm_sim.testing import square_world_store
from wfm_sim.training.loop import TrainConfig, config_for_data, train
from wfm_sim.training.token_cache import store_tokens


def _cfg(store, out, component, **kw):
    base = dict(preset="tiny", steps=4, batch_size=4, eval_every=2, save_every=2, progress=False, num_workers=0)
    base.update(kw)
    return TrainConfig(component, str(store), str(out), **base)


def test_train_save_load_evaluate_end_to_end(tmp_path):
    store = tmp_path / "car.zarr"
    record("carracing", store, episodes=3, max_steps=8, size=16, progress=False)  # real simulator frames
    out = tmp_path / "model"
    logs = {c: train(_cfg(store, out, c)) for c in ("tokenizer", "backbone", "decoder")}
    tok = logs["tokenizer"]  # held-out evaluation ran at the last step (eval_every=2, steps=4)
    assert {"val/psnr", "val/loss", "psnr"} <= set(tok) and 0 < tok["val/psnr"] < 100 and np.isfinite(tok["val/loss"])
    evals = [json.loads(x) for x in (out / "train_state" / "tokenizer" / "metrics.jsonl").read_text().splitlines()]
    assert [e["step"] for e in evals if "val/psnr" in e] == [2, 4]
    assert "ce_sequential" in logs["backbone"] and "edm_mse" in logs["decoder"]
    model = WorldModel.from_pretrained(out, device="cpu", precision="fp32")
    assert model.cfg.cameras == ("CAM_TOP",) and model.cfg.action.dim == 3
    report, videos = evaluate(model, str(store), EvalConfig(horizon=2, windows=3, batch=3))
    assert set(report["results"]) >= {"baseline/repeat_last", "sequential/token", "parallel/diffusion",
                                      "shuffled_actions/parallel/token"}
    assert len(report["results"]["sequential/token"]["psnr_mean"]) == 2
    assert videos["real"].shape[:2] == (3, 2)
    only, _ = evaluate(model, str(store), EvalConfig(horizon=2, windows=3, batch=3, modes=("parallel",),
                                                     decoders=("diffusion",)))
    assert set(only["controllability_delta_psnr"]) == {"parallel/diffusion"}  # measured with the decoder asked for
    assert "parallel/token" not in only["results"]
    lines = (out / "train_state" / "backbone" / "metrics.jsonl").read_text().splitlines()
    assert json.loads(lines[-1])["step"] == 4


def test_resume_gives_the_same_next_step(tmp_path, square_store):
    full = train(_cfg(square_store, tmp_path / "a", "tokenizer", steps=4, save_every=2, eval_every=100))
    train(_cfg(square_store, tmp_path / "b", "tokenizer", steps=2, save_every=2, eval_every=100))
    log = tmp_path / "b" / "train_state" / "tokenizer" / "metrics.jsonl"
    with open(log, "a") as f:  # a line the killed run logged after its last save
        f.write(json.dumps({"component": "tokenizer", "step": 3, "lost": True}) + "\n")
    resumed = train(_cfg(square_store, tmp_path / "b", "tokenizer", steps=4, save_every=2, eval_every=100, resume=True))
    assert resumed["loss"] == full["loss"]
    steps = [json.loads(x)["step"] for x in log.read_text().splitlines()]
    assert "lost" not in log.read_text() and steps == sorted(set(steps))  # no step logged twice
    a = WorldModel.from_pretrained(tmp_path / "a", device="cpu").state_dict()
    b = WorldModel.from_pretrained(tmp_path / "b", device="cpu").state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    again = train(_cfg(square_store, tmp_path / "b", "tokenizer", steps=4, save_every=2, eval_every=100, resume=True))
    assert again["step"] == 4 and "nothing to do" in again["done"]  # a finished run says so, not {}
    state = tmp_path / "b" / "train_state" / "tokenizer" / "state.json"
    meta = json.loads(state.read_text())
    state.write_text(json.dumps({**meta, "step": 10**12}))
    with pytest.raises(ValueError, match=r"is at step 1000000000000, past --steps 4"):
        train(_cfg(square_store, tmp_path / "b", "tokenizer", steps=4, resume=True))
    state.write_text(json.dumps({**meta, "step": -3}))
    with pytest.raises(ValueError, match=r"gives step -3: expected a whole number >= 0"):
        train(_cfg(square_store, tmp_path / "b", "tokenizer", steps=4, resume=True))
    state.write_text(json.dumps({k: v for k, v in meta.items() if k != "optimizer"}))
    with pytest.raises(ValueError, match=r"lacks \['optimizer'\]: not a complete train state"):
        train(_cfg(square_store, tmp_path / "b", "tokenizer", steps=4, resume=True))


def test_backbone_resume_is_exact_too(tmp_path, square_store):
    train(_cfg(square_store, tmp_path / "a", "tokenizer", steps=2))
    import shutil

    shutil.copytree(tmp_path / "a", tmp_path / "b")
    full = train(_cfg(square_store, tmp_path / "a", "backbone", steps=4, save_every=2, eval_every=100))
    train(_cfg(square_store, tmp_path / "b", "backbone", steps=2, save_every=2, eval_every=100))
    resumed = train(_cfg(square_store, tmp_path / "b", "backbone", steps=4, save_every=2, eval_every=100, resume=True))
    assert resumed["loss"] == pytest.approx(full["loss"], abs=1e-6)


def test_ray_train_two_workers_average_gradients_like_one_big_batch(tmp_path, square_store):
    """2 Ray Train workers x 4 windows must train exactly as 1 process x 8 windows (the same
    global batch): without averaging the workers would drift apart (rank 0 saves its own),
    and summing instead of averaging would double the logged gradient norm."""
    ray = pytest.importorskip("ray")
    from wfm_sim.training.distributed import train_distributed

    # Logical CPUs are scheduling slots: Ray Train's controller needs some beside the 2 workers.
    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True)
    try:
        last = train_distributed(_cfg(square_store, tmp_path / "m", "tokenizer", steps=3, save_every=3, eval_every=3,
                                      precision="fp32"), workers=2, storage=str(tmp_path / "ray"))
    finally:
        ray.shutdown()
    state = json.loads((tmp_path / "m" / "train_state" / "tokenizer" / "state.json").read_text())
    assert state["step"] == 3 and last["step"] == 3
    single = train(_cfg(square_store, tmp_path / "one", "tokenizer", steps=3, save_every=3, eval_every=3, batch_size=8,
                        precision="fp32"))
    assert last["grad_norm"] == pytest.approx(single["grad_norm"], rel=1e-4)  # rank 0 logs the averaged gradient
    two = WorldModel.from_pretrained(tmp_path / "m", device="cpu").tokenizer.state_dict()
    one = WorldModel.from_pretrained(tmp_path / "one", device="cpu").tokenizer.state_dict()
    for k in one:
        torch.testing.assert_close(two[k], one[k], atol=2e-5, rtol=1e-4, msg=f"{k} differs from one big batch")


def test_bad_data_errors(tmp_path, square_store):
    empty = tmp_path / "empty.zarr"
    EpisodeWriter(empty, ("CAM_FRONT",), 16, {"type": "box", "shape": [3], "low": [-1, 0, 0], "high": [1, 1, 1]},
                  10, "X", extras={"success": ((), "bool")})
    with pytest.raises(StoreError, match="no complete episode"):
        train(_cfg(empty, tmp_path / "e", "tokenizer"))
    train(_cfg(square_store, tmp_path / "m", "tokenizer", steps=1))

    other = square_world_store(tmp_path / "two.zarr", episodes=2, steps=4, cameras=("CAM_BACK",))
    with pytest.raises(StoreError, match="CAM_FRONT"):
        train(_cfg(other, tmp_path / "m", "backbone", steps=1))
    wide = tmp_path / "wide.zarr"
    w = EpisodeWriter(wide, ("CAM_FRONT",), 16, {"type": "box", "shape": [5], "low": [0] * 5, "high": [1] * 5}, 10, "X")
    import numpy as np

    for t in range(4):
        w.add_step({"CAM_FRONT": np.zeros((16, 16, 3), np.uint8)}, np.zeros(5, np.float32), 0.0, False, t == 3)
    w.end_episode()
    with pytest.raises(StoreError, match="5-d actions"):
        train(_cfg(wide, tmp_path / "m", "backbone", steps=1))
    with pytest.raises(StoreError, match="px frames"):
        train(_cfg(square_store, tmp_path / "s", "tokenizer", preset="small"))


def test_two_components_can_share_a_model_folder(tmp_path, square_store):
    """A backbone trainer saving must not overwrite the decoder another trainer just saved."""
    out = tmp_path / "m"
    train(_cfg(square_store, out, "tokenizer", steps=1))
    bb = train.__globals__["open_model"](_cfg(square_store, out, "backbone"))  # stale copy held by one trainer
    train(_cfg(square_store, out, "decoder", steps=2))
    decoder_on_disk = WorldModel.from_pretrained(out, device="cpu").decoder.state_dict()
    train.__globals__["save_component"](bb, out, "backbone")
    after = WorldModel.from_pretrained(out, device="cpu")
    assert all(torch.equal(after.decoder.state_dict()[k], v) for k, v in decoder_on_disk.items())
    assert all(torch.equal(after.backbone.state_dict()[k], v) for k, v in bb.backbone.state_dict().items())


def test_heads_refit_changes_only_the_heads_and_fits_the_rewards(tmp_path, square_store):
    """`train heads` refits the reward / termination / success heads on whole frames with the trunk
    frozen: every other weight stays bit-identical, and the held-out reward error falls."""
    out = tmp_path / "m"
    with pytest.raises(ValueError, match="holds no trained backbone"):
        train(_cfg(square_store, out, "heads"))
    train(_cfg(square_store, out, "tokenizer", steps=2))
    train(_cfg(square_store, out, "backbone", steps=2))
    before = WorldModel.from_pretrained(out, device="cpu", precision="fp32").state_dict()
    first = train(_cfg(square_store, out, "heads", steps=1, eval_every=1, lr=3e-3, warmup=1))
    last = train(_cfg(square_store, out, "heads", steps=60, eval_every=60, lr=3e-3, warmup=1, resume=True))
    after = WorldModel.from_pretrained(out, device="cpu", precision="fp32").state_dict()
    heads = [k for k in before if k.startswith(("backbone.head_reward", "backbone.head_done"))]
    assert heads and all(not torch.equal(before[k], after[k]) for k in heads if k.endswith("weight"))
    assert all(torch.equal(before[k], after[k]) for k in before if k not in heads)
    assert last["val/reward_mae"] < 0.5 * first["val/reward_mae"]
    assert {"val/terminated_acc", "val/success_acc", "val/loss"} <= set(last)


def test_sigterm_checkpoints_and_stops(tmp_path, square_store):
    import signal
    import subprocess
    import sys
    import textwrap
    import time

    script = tmp_path / "run.py"
    script.write_text(textwrap.dedent(f"""
        from wfm_sim.training.loop import TrainConfig, train
        print(train(TrainConfig("tokenizer", {str(square_store)!r}, {str(tmp_path / 'm')!r}, preset="tiny", steps=100000,
                                batch_size=2, save_every=100000, eval_every=100000, progress=False, num_workers=0)),
              flush=True)
    """))
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    log = tmp_path / "m" / "train_state" / "tokenizer" / "metrics.jsonl"
    deadline = time.time() + 120
    while not log.is_file() and time.time() < deadline:  # first line at step 10
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0 and "stopped_early" in out
    state = json.loads((tmp_path / "m" / "train_state" / "tokenizer" / "state.json").read_text())
    assert state["step"] >= 10


def test_tokenizer_from_another_model(tmp_path, square_store):
    train(_cfg(square_store, tmp_path / "a", "tokenizer", steps=2))
    train(_cfg(square_store, tmp_path / "b", "backbone", steps=1, tokenizer_from=str(tmp_path / "a")))
    a = WorldModel.from_pretrained(tmp_path / "a", device="cpu").tokenizer.state_dict()
    b = WorldModel.from_pretrained(tmp_path / "b", device="cpu").tokenizer.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)

    summary = training_summary(tmp_path / "b")  # the model card names where the tokenizer was trained
    assert summary["tokenizer"]["steps"] == 2 and summary["tokenizer"]["config"]["out"] == str(tmp_path / "a")
    assert summary["backbone"]["steps"] == 1


def test_tokenizer_from_a_model_with_another_token_grid(tmp_path, square_store):
    """A donor tokenizer that compresses more than the preset's reshapes the new backbone and decoder."""
    from dataclasses import replace

    cfg = config_for_data("tiny", str(square_store))
    donor = WorldModel(with_tokenizer(cfg, replace(cfg.tokenizer, spatial_downsample=8, channel_mult=(1, 2, 2))))
    donor.save_pretrained(tmp_path / "donor")
    assert donor.cfg.tokenizer.grid == 2 != preset("tiny").tokenizer.grid
    train(_cfg(square_store, tmp_path / "b", "backbone", steps=1, tokenizer_from=str(tmp_path / "donor")))
    b = WorldModel.from_pretrained(tmp_path / "b", device="cpu")
    assert b.cfg.geometry.grid == b.backbone.dims.grid == b.decoder.geo.grid == 2
    mine, theirs = b.tokenizer.state_dict(), donor.tokenizer.state_dict()
    assert all(torch.equal(mine[k], theirs[k]) for k in theirs)


def test_backbone_trains_on_a_multicamera_store(tmp_path):
    store = square_world_store(tmp_path / "two.zarr", episodes=4, steps=6, cameras=("CAM_FRONT", "CAM_BACK"))
    train(_cfg(store, tmp_path / "m", "tokenizer", steps=1))
    last = train(_cfg(store, tmp_path / "m", "backbone", steps=2))
    assert last["step"] == 2
    model = WorldModel.from_pretrained(tmp_path / "m", device="cpu", precision="fp32")
    cached = store_tokens(model, str(store), tmp_path / "m" / "train_state" / "backbone", progress=False)

    ep = EpisodeReader(store).episode(0)
    frames = torch.from_numpy(np.stack([ep.obs["CAM_FRONT"][:2], ep.obs["CAM_BACK"][:2]], axis=1))[None]
    assert np.array_equal(cached[:2], model.encode(frames)[0].numpy())  # cache == WorldModel.encode


def test_the_held_out_split_is_drawn_once_and_read_back_by_evaluate(tmp_path, square_store, capsys):
    out = tmp_path / "m"
    train(_cfg(square_store, out, "tokenizer", steps=1, seed=1))
    split = load_split(out, square_store)
    assert split.seed == 1 and 1 <= len(split.val) < split.episodes
    train(_cfg(square_store, out, "backbone", steps=1, seed=5))  # another --seed does not redraw it
    assert load_split(out, square_store) == split
    val = WindowDataset(square_store, 3, split="val", episodes=split)
    train_ds = WindowDataset(square_store, 3, split="train", episodes=split)
    assert list(val.episodes) == list(split.val) and not set(val.episodes) & set(train_ds.episodes)
    model = WorldModel.from_pretrained(out, device="cpu", precision="fp32")
    with pytest.raises(ValueError, match="recorded train/val split"):
        evaluate(model, str(square_store), EvalConfig(split="val", horizon=1, windows=2))
    report, _ = evaluate(model, str(square_store), EvalConfig(split="val", horizon=1, windows=2, modes=("parallel",),
                                                              decoders=("token",)), split)
    assert report["split"] == "val"
    other = square_world_store(tmp_path / "other.zarr", episodes=3, steps=6)
    assert main(["evaluate", str(out), "--data", str(other), "--split", "val", "--horizon", "1"]) == 2
    assert "holds no train/val split" in capsys.readouterr().err


def test_a_model_of_a_camera_subset_reuses_a_multi_camera_tokenizer(tmp_path):
    store = square_world_store(tmp_path / "two.zarr", episodes=4, cameras=("CAM_FRONT", "CAM_BACK"))
    train(_cfg(store, tmp_path / "both", "tokenizer", steps=2))
    train(_cfg(store, tmp_path / "front", "backbone", steps=2, cameras=("CAM_FRONT",),
               tokenizer_from=str(tmp_path / "both")))
    front = WorldModel.from_pretrained(tmp_path / "front", device="cpu")
    both = WorldModel.from_pretrained(tmp_path / "both", device="cpu")
    assert front.cfg.cameras == ("CAM_FRONT",) and front.cfg.geometry.views == 1
    assert all(torch.equal(a, b) for a, b in zip(front.tokenizer.state_dict().values(), both.tokenizer.state_dict().values()))
    assert front.trained == ("backbone", "tokenizer")
    with pytest.raises(StoreError, match=r"has no camera\(s\) \['CAM_LEFT'\]"):
        train(_cfg(store, tmp_path / "left", "tokenizer", steps=1, cameras=("CAM_LEFT",)))
