"""Finite numbers only, configs checked before allocation, arguments that mean what they say."""

import numpy as np
import pytest
import torch

from wfm_sim.checkpoint import CheckpointError
from wfm_sim.models import WorldModel, preset
from wfm_sim.training.loop import NonFiniteLossError, TrainConfig, train


def _cfg(store, out, **kw):
    base = dict(preset="tiny", steps=6, batch_size=4, eval_every=100, save_every=2, progress=False, num_workers=0,
                precision="fp32")
    base.update(kw)
    return TrainConfig("tokenizer", str(store), str(out), **base)


def test_a_nan_loss_stops_training_and_keeps_the_last_good_checkpoint(tmp_path, square_store, monkeypatch, capsys):
    from wfm_sim.cli import main
    from wfm_sim.training import tasks

    good = tmp_path / "good"
    train(_cfg(square_store, good, steps=2))  # what the checkpoint at step 2 must hold
    real_loss = tasks.TokenizerTask.loss
    calls = {"n": 0}

    def poisoned(self, batch, gen):
        calls["n"] += 1
        res = real_loss(self, batch, gen)
        if calls["n"] == 3:  # step 3 diverges
            res.loss = res.loss * float("nan")
        return res

    monkeypatch.setattr(tasks.TokenizerTask, "loss", poisoned)
    out = tmp_path / "m"
    with pytest.raises(NonFiniteLossError, match=r"step 3: loss nan.*keeps its last checkpoint \(step 2\)"):
        train(_cfg(square_store, out))
    a = WorldModel.from_pretrained(out, device="cpu").state_dict()
    b = WorldModel.from_pretrained(good, device="cpu").state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)  # the step-2 weights, not NaN
    calls["n"] = 0
    args = ["train", "tokenizer", "--data", str(square_store), "--out", str(tmp_path / "cli"), "--preset", "tiny",
            "--steps", "6", "--batch-size", "4", "--num-workers", "0", "--quiet", "--precision", "fp32"]
    assert main(args) == 2  # non-zero exit, one line, no traceback
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "loss nan" in err[0]


def test_a_checkpoint_with_nan_weights_is_refused(tmp_path):
    from safetensors.torch import load_file, save_file

    torch.manual_seed(0)
    WorldModel(preset("tiny")).save_pretrained(tmp_path / "m")
    state = load_file(tmp_path / "m" / "model.safetensors")
    key = next(k for k in state if k.startswith("backbone.") and state[k].is_floating_point())
    state[key][0] = float("nan")
    save_file(state, tmp_path / "m" / "model.safetensors", metadata={"format": "wfm_sim.WorldModel", "storage": "fp32"})
    with pytest.raises(CheckpointError, match=f"{key} holds NaN or inf"):
        WorldModel.from_pretrained(tmp_path / "m", device="cpu")


def test_the_env_refuses_non_finite_model_outputs(tiny_model_dir_with_contexts):
    from wfm_sim.envs import ImaginedVectorEnv

    model = WorldModel.from_pretrained(tiny_model_dir_with_contexts, device="cpu", precision="fp32")
    with torch.no_grad():
        model.backbone.head_reward[-1].bias.fill_(float("nan"))  # corrupted in memory
    env = ImaginedVectorEnv(2, model, dataset=None)
    env.reset(seed=0, options={"frames": np.zeros((1, 1, 16, 16, 3), np.uint8)})
    with pytest.raises(RuntimeError, match=r"non-finite rewards or token probabilities for sub-envs \[0, 1\]"):
        env.step(np.zeros((2, 3), np.float32))


@pytest.mark.parametrize("part,field,value,name", [("backbone", "dim", 10**9, "dim"), ("backbone", "depth", 10**7, "depth"),
                                                   ("backbone", "heads", 0, "heads"),
                                                   ("tokenizer", "levels", (10**4,) * 3, "vocab_size")])
def test_absurd_configs_fail_before_allocating(part, field, value, name):
    import time
    from dataclasses import replace

    cfg = preset("tiny")
    t0 = time.perf_counter()
    with pytest.raises(ValueError, match=f"{type(getattr(cfg, part)).__name__}.{name}"):
        replace(getattr(cfg, part), **{field: value})
    assert time.perf_counter() - t0 < 1.0


def test_a_model_too_big_for_memory_is_refused_with_its_size(monkeypatch):
    from wfm_sim.models import world_model

    monkeypatch.setattr(world_model, "_available_memory", lambda: 2**16)  # 64 KiB free
    with pytest.raises(ValueError, match=r"0M parameters \(0.0 GiB in fp32\) but this machine has 0.0 GiB free"):
        WorldModel(preset("tiny"))
    with torch.device("meta"):
        WorldModel(preset("tiny"))  # the meta device allocates nothing: always allowed


def test_ray_train_that_cannot_be_placed_fails_at_once(tmp_path, square_store):
    import time

    ray = pytest.importorskip("ray")
    from wfm_sim.training.distributed import train_distributed

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True)
    try:
        t0 = time.perf_counter()
        with pytest.raises(RuntimeError, match="cannot place 3 Ray Train workers: they need 4 CPUs but the cluster has 2"):
            train_distributed(_cfg(square_store, tmp_path / "m"), workers=3)
        with pytest.raises(RuntimeError, match="1 GPUs but the cluster has 0"):
            train_distributed(_cfg(square_store, tmp_path / "m"), workers=1, use_gpu=True)
        assert time.perf_counter() - t0 < 10
    finally:
        ray.shutdown()
