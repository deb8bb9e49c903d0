"""CUDA paths (``pytest -m gpu``): skipped without a GPU, and by default (see pyproject addopts)."""

import numpy as np
import pytest
import torch

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


@pytest.fixture
def cuda_model(tiny_cfg):
    from wfm_sim.models import WorldModel

    torch.manual_seed(0)
    return WorldModel(tiny_cfg).setup("cuda", "bf16").eval()


def test_bf16_imagination_on_cuda_is_deterministic_and_stays_on_device(cuda_model):
    from wfm_sim.models.rollout_core import RolloutCore

    s = cuda_model.cfg.tokenizer.image_size
    frames = torch.randint(0, 256, (2, 2, 1, s, s, 3), dtype=torch.uint8, device="cuda")
    runs = []
    for _ in range(2):
        core = RolloutCore(cuda_model, 2, "parallel")
        core.reset(None, frames, torch.rand(2, 1, 3, device="cuda"), [0, 1])
        steps = [core.step(torch.rand(2, 1, 3, generator=torch.Generator().manual_seed(t)).cuda()) for t in range(3)]
        runs.append(steps)
    for a, b in zip(*runs):
        assert a.frames.device.type == "cuda" and a.frames.dtype == torch.uint8
        assert torch.equal(a.tokens, b.tokens) and torch.equal(a.frames, b.frames)


def test_imagined_env_on_cuda_returns_torch_observations(tiny_model_dir_with_contexts):
    from wfm_sim.envs import ImaginedVectorEnv

    env = ImaginedVectorEnv(4, str(tiny_model_dir_with_contexts), device="cuda", torch_obs=True)
    obs, _ = env.reset(seed=0)
    assert isinstance(obs, torch.Tensor) and obs.device.type == "cuda"
    obs, r, term, trunc, _ = env.step(np.zeros((4, 3), np.float32))
    assert obs.device.type == "cuda" and r.shape == (4,)


def test_an_unavailable_device_raises_instead_of_falling_back():
    from wfm_sim.device import resolve_device

    assert resolve_device("cuda:0").type == "cuda"
    with pytest.raises(RuntimeError, match="CUDA device"):
        resolve_device(f"cuda:{torch.cuda.device_count()}")
