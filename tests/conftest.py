import os

os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")

import pytest
import torch

# Test models are tiny: one thread avoids OpenMP overhead that outweighs their matmuls.
torch.set_num_threads(1)


@pytest.fixture
def tiny_cfg():
    from wfm_sim.models import preset

    return preset("tiny", success_head=True, name="tiny-test")


@pytest.fixture
def tiny_model(tiny_cfg):
    from wfm_sim.models import WorldModel

    torch.manual_seed(0)
    return WorldModel(tiny_cfg).setup("cpu", "fp32").eval()


@pytest.fixture(scope="session")
def square_store(tmp_path_factory):
    from wfm_sim.testing import square_world_store

    return square_world_store(tmp_path_factory.mktemp("data") / "square.zarr", episodes=6, steps=10)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A tiny world model folder (random weights) with contexts shipped beside it."""
    from wfm_sim.models import WorldModel, preset

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("models") / "tiny"
    model = WorldModel(preset("tiny", success_head=True))
    # Random heads would end episodes at random; bias termination off so rollouts have length.
    torch.nn.init.constant_(model.backbone.head_done[-1].bias, -8.0)
    model.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_model_dir_with_contexts(tiny_model_dir, square_store, tmp_path_factory):
    import shutil

    from wfm_sim.envs.contexts import ContextBank

    folder = tmp_path_factory.mktemp("models") / "tiny-with-contexts"
    shutil.copytree(tiny_model_dir, folder)
    ContextBank.from_store(square_store, ("CAM_FRONT",), 2).save(folder)
    return folder


@pytest.fixture(scope="session")
def steer_world(tmp_path_factory, square_store):
    """A tiny world model whose reward rises with action[0] (optimum: steer = +1), with contexts."""
    from wfm_sim.envs.contexts import ContextBank
    from wfm_sim.models import preset
    from wfm_sim.testing import steer_reward_model

    folder = tmp_path_factory.mktemp("models") / "steer"
    steer_reward_model(preset("tiny")).save_pretrained(folder)
    ContextBank.from_store(square_store, ("CAM_FRONT",), 2).save(folder)
    return folder
