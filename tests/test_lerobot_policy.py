"""A LeRobot policy scored in imagination and in the real twin: a tiny ACT trained with LeRobot's
own code on an exported store, served from LeRobot's environment (made by .ci/run)."""

import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

from wfm_sim.commands import policy_label
from wfm_sim.datasets import export_lerobot
from wfm_sim.envs.spaces import action_space
from wfm_sim.evaluation.scoring import ScoreConfig, score_policies
from wfm_sim.models import WorldModel, preset
from wfm_sim.policies import RandomPolicy, make_policy
from wfm_sim.policies.base import ConstantPolicy
from wfm_sim.policies.lerobot_policy import LeRobotPolicy
from wfm_sim.testing import square_world_store

ROOT = Path(__file__).resolve().parents[1]
PYTHON = os.environ.get("WFM_SIM_LEROBOT_PYTHON") or str(ROOT / ".venv-lerobot" / "bin" / "python")
needs_lerobot = pytest.mark.skipif(not Path(PYTHON).is_file() and not os.environ.get("CI"),
                                   reason="no LeRobot environment (.venv-lerobot, made by .ci/run)")
SPACE = action_space({"type": "box", "low": [-1, 0, 0], "high": [1, 1, 1]})


@pytest.fixture(scope="module")
def act_folder(tmp_path_factory):
    """A tiny ACT trained for 5 steps by LeRobot on a 16-px one-camera (CAM_TOP) store exported by wfm_sim."""
    tmp = tmp_path_factory.mktemp("lerobot")
    store = square_world_store(tmp / "sq.zarr", episodes=4, steps=12, size=16, cameras=("CAM_TOP",))
    export_lerobot(store, tmp / "ds", progress=False)
    done = subprocess.run([PYTHON, str(ROOT / "tests" / "lerobot_train_tiny.py"), str(tmp / "ds"), str(tmp / "act"), "5"],
                          check=False, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return tmp / "act"


@pytest.fixture(scope="module")
def car_model():
    import torch

    torch.manual_seed(0)
    model = WorldModel(preset("tiny", cameras=("CAM_TOP",), name="tiny-car")).setup("cpu", "fp32").eval()
    torch.nn.init.constant_(model.backbone.head_done[-1].bias, -8.0)
    return model


@needs_lerobot
def test_a_lerobot_policy_is_scored_in_imagination_and_in_the_twin(act_folder, car_model):
    policy = make_policy(f"lerobot:{act_folder}", SPACE)
    assert isinstance(policy, LeRobotPolicy) and policy.kind == "act" and policy.images == ["observation.images.CAM_TOP"]
    assert policy_label(f"lerobot:{act_folder}") == "lerobot:act"
    policies = {"lerobot:act": policy, "random": RandomPolicy(SPACE), "gas": ConstantPolicy(np.array([0, 0.6, 0], np.float32))}
    cfg = ScoreConfig(starts=2, samples=1, horizon=4, batch=2, real_batch=2, videos=1, start_seed=4321)
    report = score_policies(car_model, "carracing", policies, cfg, progress=False)
    row = next(r for r in report["policies"] if r["policy"] == "lerobot:act")
    assert np.isfinite([row["imagined_return"], row["real_return"]]).all()
    assert set(report["agreement"]["return"]) >= {"pearson", "spearman", "mmrv"}
    real_ep, dream_ep = report["results"]["lerobot:act"].clips[0]
    assert np.array_equal(dream_ep.obs["CAM_TOP"][0], real_ep.obs["CAM_TOP"][0])
    # The actions played are the LeRobot policy's own: asked again on the same first frame, it answers the same.
    policy.reset([0])
    first = policy({"CAM_TOP": real_ep.obs["CAM_TOP"][:1]})
    np.testing.assert_allclose(first[0], real_ep.action[0], atol=1e-6)
    assert ((real_ep.action >= SPACE.low) & (real_ep.action <= SPACE.high)).all()  # clipped to the bounds
    again = score_policies(car_model, "carracing", policies, cfg, progress=False)
    np.testing.assert_array_equal(again["results"]["lerobot:act"].imagined_return,
                                  report["results"]["lerobot:act"].imagined_return)
    policy.close()


@needs_lerobot
def test_a_lerobot_policy_that_does_not_fit_the_env_is_refused_by_name(act_folder):
    policy = LeRobotPolicy(act_folder)
    with pytest.raises(ValueError, match=r"reads \['observation.images.CAM_TOP'\], mapped to cameras \['CAM_TOP'\], "
                                         r"but the env has \['CAM_FRONT'\]"):
        policy.check_spaces(("CAM_FRONT",), 16, SPACE)
    with pytest.raises(ValueError, match="is 16x16 pixels, the env's frames 64x64"):
        policy.check_spaces(("CAM_TOP",), 64, SPACE)
    with pytest.raises(ValueError, match="outputs 3 action values"):
        policy.check_spaces(("CAM_TOP",), 16, action_space({"type": "box", "low": [-1, -1], "high": [1, 1]}))
    mapped = LeRobotPolicy(act_folder, cameras={"observation.images.CAM_TOP": "CAM_FRONT"})
    mapped.check_spaces(("CAM_FRONT",), 16, SPACE)  # a declared mapping reads another camera
    assert mapped({"CAM_FRONT": np.zeros((2, 16, 16, 3), np.uint8)}).shape == (2, 3)
    with pytest.raises(RuntimeError, match="LeRobot policy .*act: "):  # the server's own error, one request
        policy({"CAM_TOP": np.zeros((2, 16, 16), np.uint8)})  # no colour axis
    assert policy({"CAM_TOP": np.zeros((1, 16, 16, 3), np.uint8)}).shape == (1, 3)  # and it keeps serving
    policy.close()
    mapped.close()


def test_what_is_not_a_lerobot_policy_is_refused(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match="is not a saved LeRobot policy"):
        LeRobotPolicy(tmp_path)
    (tmp_path / "config.json").write_text('{"format": "wfm_sim.ConvPolicy"}')
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(ValueError, match="names no policy 'type'"):
        LeRobotPolicy(tmp_path, python="/bin/true")
    (tmp_path / "config.json").write_text('{"type": "act"}')
    monkeypatch.setenv("WFM_SIM_LEROBOT_PYTHON", str(tmp_path / "no-python"))
    with pytest.raises(FileNotFoundError, match="run in an environment that has lerobot, and .*no-python does not exist"):
        make_policy(f"lerobot:{tmp_path}", SPACE)
    with pytest.raises(RuntimeError, match="policy server for .* stopped"):
        LeRobotPolicy(tmp_path, python="/bin/true")  # a process that exits without answering
