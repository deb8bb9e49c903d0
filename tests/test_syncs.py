"""No host syncs inside a training step or an imagined step (the one hand-over of observations
excepted), and every component's training step compiles as one graph.

A host sync is any call that makes the host wait for the device: reading a value (``item``,
``tolist``, ``bool``/``int``/``float`` of a tensor, ``numpy``) or copying to the host
(``cpu``). On a GPU each one stalls the pipeline, and each one breaks a ``torch.compile``
graph. The counters below patch those methods for the duration of one step.
"""

import contextlib

import numpy as np
import pytest
import torch

from wfm_sim.envs.imagined import ImaginedVectorEnv
from wfm_sim.models import WorldModel, preset
from wfm_sim.models.rng import key
from wfm_sim.training.loop import TrainConfig, make_optimizer, train_step
from wfm_sim.training.tasks import TASKS

SYNCS = ("item", "tolist", "__bool__", "__int__", "__float__", "__index__", "cpu")
"""``numpy()`` is not counted: it only works on host tensors (``.cpu().numpy()`` is one copy)."""


@contextlib.contextmanager
def count_syncs():
    """Counts every host-sync call on any tensor inside the block: ``{name: calls}``."""
    counts = {name: 0 for name in SYNCS}
    originals = {name: getattr(torch.Tensor, name) for name in SYNCS}

    def wrap(name):
        def counted(self, *args, **kwargs):
            counts[name] += 1
            return originals[name](self, *args, **kwargs)
        return counted

    for name in SYNCS:
        setattr(torch.Tensor, name, wrap(name))
    try:
        yield counts
    finally:
        for name, fn in originals.items():
            setattr(torch.Tensor, name, fn)


def test_the_counter_sees_a_sync():
    with count_syncs() as n:
        torch.ones(2).sum().item()
        bool(torch.ones(1) > 0)
    assert n["item"] == 1 and n["__bool__"] == 1


def _model(**kw):
    torch.manual_seed(0)
    return WorldModel(preset("tiny", success_head=True, **kw)).setup("cpu", "fp32").eval()


@pytest.mark.parametrize("mode", ["parallel", "sequential"])
@pytest.mark.parametrize("obs_mode", ["pixels", "tokens"])
def test_a_batched_env_step_syncs_at_most_once(mode, obs_mode):
    env = ImaginedVectorEnv(4, _model(), mode=mode, obs_mode=obs_mode, parallel_steps=2, max_episode_steps=None)
    rng = np.random.default_rng(0)
    env.reset(seed=0, options={"frames": rng.integers(0, 256, (4, 1, 1, 16, 16, 3), dtype=np.uint8)})
    for _ in range(5):  # through a full window, so the slide's re-prefill is counted too
        actions = rng.uniform(0, 1, (4, 3)).astype(np.float32)
        with count_syncs() as n:
            env.step(actions)
        assert sum(n.values()) <= 1, n


def test_a_diffusion_decoded_step_syncs_at_most_once():
    env = ImaginedVectorEnv(2, _model(), decoder="diffusion", diffusion_steps=2, parallel_steps=2)
    env.reset(seed=0, options={"frames": np.zeros((2, 1, 1, 16, 16, 3), np.uint8)})
    with count_syncs() as n:
        env.step(np.full((2, 3), 0.5, np.float32))
    assert sum(n.values()) <= 1, n


def _batch(task, size=4):
    ds = task.dataset("train")
    return task.collate([ds[i] for i in range(size)])


@pytest.mark.parametrize("component", ["tokenizer", "backbone", "decoder"])
def test_a_training_step_never_syncs(component, square_store, tmp_path):
    model = WorldModel(preset("tiny", success_head=True)).setup("cpu", "fp32")
    task = TASKS[component](model, str(square_store), None)
    module = task.module.train()
    params = [p for p in module.parameters() if p.requires_grad]
    opt = make_optimizer(params, TrainConfig(component, str(square_store), str(tmp_path)))
    batch, gen = _batch(task), key(0)
    train_step(task.loss, batch, gen, opt, params, 1.0, model.autocast)  # first step: optimizer state built
    before = [p.detach().clone() for p in params]
    with count_syncs() as n:
        train_step(task.loss, batch, gen, opt, params, 1.0, model.autocast)
    assert sum(n.values()) == 0, n
    assert any(not torch.equal(a, p) for a, p in zip(before, params))  # and it did train


def test_a_non_finite_step_is_skipped_on_the_device(square_store, tmp_path):
    model = WorldModel(preset("tiny")).setup("cpu", "fp32")
    task = TASKS["tokenizer"](model, str(square_store), None)
    params = [p for p in task.module.parameters() if p.requires_grad]
    opt = make_optimizer(params, TrainConfig("tokenizer", str(square_store), str(tmp_path)))
    batch, gen = _batch(task), key(0)
    train_step(task.loss, batch, gen, opt, params, 1.0, model.autocast)
    before = [p.detach().clone() for p in params]

    def poisoned(b, g):
        res = task.loss(b, g)
        res.loss = res.loss * float("nan")
        return res

    train_step(poisoned, batch, gen, opt, params, 1.0, model.autocast)
    assert all(torch.equal(a, p) for a, p in zip(before, params))


@pytest.mark.parametrize("component", ["tokenizer", "backbone", "decoder"])
def test_each_training_step_compiles_as_one_graph(component, square_store):
    """fullgraph=True fails on any graph break (a sync, a data-dependent shape). The aot_eager
    backend traces forward and backward as inductor would, without its minutes of codegen."""
    torch._dynamo.reset()
    model = WorldModel(preset("tiny", success_head=True)).setup("cpu", "fp32")
    task = TASKS[component](model, str(square_store), None)
    task.module.train()
    batch = _batch(task, 2)
    compiled = torch.compile(task.loss, fullgraph=True, backend="aot_eager")
    out = compiled(batch, key(0))
    out.loss.backward()
    assert torch.isfinite(out.loss)
