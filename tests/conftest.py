import os

os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")

import pytest
import torch

torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture
def tiny_cfg():
    from wfm_sim.models import preset

    return preset("tiny", success_head=True, name="tiny-test")


@pytest.fixture
def tiny_model(tiny_cfg):
    from wfm_sim.models import WorldModel

    torch.manual_seed(0)
    return WorldModel(tiny_cfg).setup("cpu", "fp32").eval()
