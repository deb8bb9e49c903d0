"""The downstream study's inverse-dynamics model learns what frames show and nothing they do not."""

import pytest

from wfm_sim.datasets import EpisodeReader, StoreError
from wfm_sim.synthetic.downstream import IDMConfig, evaluate_idm, load_transitions, run_arms, train_idm
from wfm_sim.testing import square_world_store


@pytest.fixture(scope="module")
def squares(tmp_path_factory):
    return square_world_store(tmp_path_factory.mktemp("idm") / "sq.zarr", episodes=48, steps=12, seed=3)


def test_inverse_dynamics_recovers_the_visible_action_and_not_the_hidden_one(squares):
    space = EpisodeReader(squares).action_space
    train, test = load_transitions(squares, list(range(40))), load_transitions(squares, list(range(40, 48)))
    assert train.frames.shape[1:] == (2, 16, 16, 3) and len(train) == len(train.actions)
    model = train_idm([train], space, IDMConfig(steps=400, batch_size=32, lr=3e-3, width=16))
    r2 = evaluate_idm(model, test, train.actions.mean(0))["r2"]
    assert r2[0] > 0.7  # the square moves 2 px per unit of action[0]: visible
    assert r2[1] > r2[2] + 0.1  # action[1] moves it by at most 1 px (quantised), action[2] not at all
    assert r2[2] < 0.3  # action[2] moves nothing: no model can recover it from frames


def test_arms_share_steps_and_seeds_and_report_r2(squares, tmp_path):
    space = EpisodeReader(squares).action_space
    few, more = load_transitions(squares, [0, 1]), load_transitions(squares, list(range(2, 30)))
    test = load_transitions(squares, list(range(40, 48)))
    rep = run_arms({"few": [few], "few+more": [few, more]}, test, space, IDMConfig(steps=150, width=8), [0, 1],
                   out=tmp_path, progress=False)
    assert rep["arms"]["few+more"]["train_transitions"] == len(few) + len(more)
    assert rep["arms"]["few+more"]["r2_mean"]["steer"] > rep["arms"]["few"]["r2_mean"]["steer"]
    assert (tmp_path / "downstream.json").is_file()
    with pytest.raises(StoreError, match="no camera \\['CAM_LEFT'\\]"):
        load_transitions(squares, [0], cameras=("CAM_LEFT",))
    with pytest.raises(ValueError, match="one camera rig"):
        train_idm([few, load_transitions(squares, [0], cameras=("CAM_FRONT", "CAM_FRONT"))], space, IDMConfig(steps=1))
