"""Any Gymnasium env as a source: Box, Discrete and multi-camera MuJoCo recordings, replay from
seed, training on the recording, the real and imagined twins, and clear refusals."""

import json

import gymnasium as gym
import numpy as np
import pytest

from wfm_sim.datasets import EpisodeReader
from wfm_sim.envs import ImaginedVectorEnv, RealEnv, get_source, make_real_vec
from wfm_sim.envs.gym_source import GymSpec
from wfm_sim.rollout import play, record
from wfm_sim.policies import RandomPolicy


def _register_test_envs():
    from gymnasium import spaces

    class _NoPixels(gym.Env):
        metadata = {"render_modes": ["human"], "render_fps": 10}
        observation_space = spaces.Box(-1, 1, (2,))
        action_space = spaces.Discrete(2)

        def __init__(self, render_mode=None):
            self.render_mode = render_mode

    class _DictActions(gym.Env):
        metadata = {"render_modes": ["rgb_array"], "render_fps": 10}
        observation_space = spaces.Box(-1, 1, (2,))
        action_space = spaces.Dict({"arm": spaces.Box(-1, 1, (3,)), "grip": spaces.Discrete(2)})

        def __init__(self, render_mode=None):
            self.render_mode = render_mode

    class _BinaryActions(_DictActions):
        action_space = spaces.MultiBinary(4)

    class _EmptyActions(_DictActions):
        action_space = spaces.Box(-1, 1, (0,))

    for name, cls in (("WfmTestNoPixels-v0", _NoPixels), ("WfmTestDictActions-v0", _DictActions),
                      ("WfmTestBinaryActions-v0", _BinaryActions), ("WfmTestEmptyActions-v0", _EmptyActions)):
        if name not in gym.registry:
            gym.register(name, entry_point=cls)


def test_spec_names_round_trip_and_rebuild_the_source():
    spec = GymSpec("Reacher-v5", ("free", "free_az0_el60"), repeat=2, info=("reward_dist",), kwargs={"frame_skip": 2})
    assert GymSpec.parse(spec.name()) == spec
    assert GymSpec.parse("gym:CartPole-v1") == GymSpec("CartPole-v1")
    with pytest.raises(ValueError, match=r"unknown gym source option\(s\) \['camera'\]"):
        GymSpec.parse("gym:Reacher-v5?camera=free")
    with pytest.raises(ValueError, match="identifiers"):
        GymSpec("Reacher-v5", ("top view",))


def test_discrete_env_records_replays_and_passes_env_kwargs(tmp_path):
    name = GymSpec("CartPole-v1", kwargs={"sutton_barto_reward": True}).name()
    stats = record(name, tmp_path / "c.zarr", episodes=3, policy="random", size=32, max_steps=40, seed=5, progress=False)
    assert stats["episodes"] == 3
    r = EpisodeReader(tmp_path / "c.zarr")
    assert r.action_space == {"type": "discrete", "n": 2} and r.fps == 50 and r.cameras == ("CAM_MAIN",)
    ep = r.episode(0)
    assert ep.action.dtype == np.int64 and ep.obs["CAM_MAIN"].shape[1:] == (32, 32, 3)
    # Sutton & Barto's reward (an env keyword argument): 0 per step, -1 when the pole falls.
    assert set(np.unique(ep.reward)) <= {0.0, -1.0} and (ep.reward[-1] == -1.0) == bool(ep.terminated[-1])
    twin = RealEnv(name, size=32)  # the source name alone rebuilds the env: replay from the seed
    obs, _ = twin.reset(seed=ep.seed)
    for t in range(len(ep)):
        assert np.array_equal(obs, ep.obs["CAM_MAIN"][t]), f"step {t} differs"
        obs, reward, *_ = twin.step(ep.action[t])
        assert reward == ep.reward[t]


@pytest.mark.parametrize("env_id", ["FrozenLake-v1", "Taxi-v3"])
def test_toy_text_envs_that_index_tables_by_action_record_and_replay(env_id, tmp_path):
    """FrozenLake and Taxi look their transitions up by ``P[s][a]``: an action must reach them as
    a Python int, not a 0-d array (which is unhashable)."""
    stats = record(f"gym:{env_id}", tmp_path / "t.zarr", episodes=2, policy="random", size=32, max_steps=30, seed=3,
                   progress=False)
    ep = EpisodeReader(tmp_path / "t.zarr").episode(1)
    assert stats["episodes"] == 2 and ep.action.dtype == np.int64
    twin = RealEnv(f"gym:{env_id}", size=32)
    obs, _ = twin.reset(seed=ep.seed)
    for t in range(len(ep)):
        assert np.array_equal(obs, ep.obs["CAM_MAIN"][t]), f"step {t} differs"
        obs, reward, *_ = twin.step(ep.action[t])
        assert reward == ep.reward[t]


def test_box_env_records_with_action_repeat(tmp_path):
    name = "gym:Pendulum-v1?repeat=2&max_steps=6"
    record(name, tmp_path / "p.zarr", episodes=2, policy="random", size=24, progress=False)
    r = EpisodeReader(tmp_path / "p.zarr")
    assert r.action_space == {"type": "box", "shape": [1], "low": [-2.0], "high": [2.0]}
    assert r.fps == 15.0  # render_fps 30 / repeat 2
    assert list(r.episode_lengths()) == [6, 6]
    assert json.loads(json.dumps(r.summary()))["source_env"] == "Pendulum-v1"
    ep, raw = r.episode(0), gym.make("Pendulum-v1")
    raw.reset(seed=ep.seed)
    for t in range(2):  # each recorded step: the action twice, rewards summed
        want = sum(raw.step(ep.action[t])[1] for _ in range(2))
        assert ep.reward[t] == pytest.approx(want, rel=1e-5)


def test_mujoco_multi_camera_recording_with_info_fields(tmp_path):
    pytest.importorskip("mujoco")
    name = GymSpec("Reacher-v5", ("free", "free_az0_el60"), info=("reward_dist",), max_steps=5).name()
    record(name, tmp_path / "r.zarr", episodes=2, policy="random", size=32, progress=False)
    r = EpisodeReader(tmp_path / "r.zarr")
    ep = r.episode(1)
    assert r.cameras == ("free", "free_az0_el60") and r.extras == ("reward_dist",)
    assert ep.obs["free"].shape == (5, 32, 32, 3) and ep.obs["free"].std() > 1
    assert not np.array_equal(ep.obs["free"], ep.obs["free_az0_el60"])  # two viewpoints, not one twice
    assert ep.extras["reward_dist"].shape == (5,) and (ep.extras["reward_dist"] <= 0).all()  # minus a distance


@pytest.mark.parametrize("env_id, n", [("CartPole-v1", 2), ("FrozenLake-v1", 4)])
def test_gym_recording_trains_and_runs_in_both_twins(env_id, n, tmp_path):
    from wfm_sim.training.loop import TrainConfig, train

    name = f"gym:{env_id}?max_steps=12"
    store = tmp_path / "c.zarr"
    record(name, store, episodes=4, policy="random", size=16, progress=False)
    out = tmp_path / "model"
    for component in ("tokenizer", "backbone"):
        train(TrainConfig(component, str(store), str(out), preset="tiny", steps=2, batch_size=2, eval_every=100,
                          save_every=100, progress=False, num_workers=0))
    imagined = ImaginedVectorEnv(2, out, dataset=store, device="cpu", precision="fp32")
    real = make_real_vec(name, 2, size=16)
    assert imagined.single_action_space == real.single_action_space == gym.spaces.Discrete(n)
    assert imagined.single_observation_space == real.single_observation_space
    for env in (imagined, real):
        [ep, _] = play(env, RandomPolicy(env.single_action_space), [1, 2], horizon=3)
        assert 1 <= len(ep) <= 3 and ep.obs["CAM_MAIN"].shape == (len(ep), 16, 16, 3)  # a 2-step model may end early
        assert ep.action.dtype == np.int64


def test_bad_gym_sources_are_refused_by_name(tmp_path):
    _register_test_envs()
    with pytest.raises(ValueError, match="unknown Gymnasium id 'CartPol-v1'.*CartPole-v1"):
        get_source("gym:CartPol-v1")
    with pytest.raises(ValueError, match=r"cannot render 'rgb_array' frames \(its render modes: \['human'\]\)"):
        get_source("gym:WfmTestNoPixels-v0")
    with pytest.raises(ValueError, match="a Box of shape .* or a Discrete action space, got Dict"):
        get_source("gym:WfmTestDictActions-v0")
    with pytest.raises(ValueError, match="a Box of shape .* or a Discrete action space, got MultiBinary"):
        get_source("gym:WfmTestBinaryActions-v0")
    with pytest.raises(ValueError, match=r"its Box action space has no values \(shape \(0,\)\)"):
        get_source("gym:WfmTestEmptyActions-v0")
    with pytest.raises(ValueError, match="no camera 'top': its cameras are"):
        get_source("gym:Reacher-v5?cameras=top")
    with pytest.raises(ValueError, match="--cameras needs a MuJoCo environment"):
        get_source("gym:CartPole-v1?cameras=free")
    with pytest.raises(ValueError, match="step info has no field 'nope'"):
        get_source("gym:Reacher-v5?info=nope")
    assert not list(tmp_path.iterdir())


def test_a_collect_killed_mid_way_keeps_every_finished_episode(tmp_path):
    class Dies(RandomPolicy):
        calls = 0

        def __call__(self, obs, info=None):
            Dies.calls += 1
            if Dies.calls > 25:  # in the third episode
                raise KeyboardInterrupt
            return super().__call__(obs, info)

    name = "gym:CartPole-v1?max_steps=10"
    space = gym.spaces.Discrete(2)
    with pytest.raises(KeyboardInterrupt):
        record(name, tmp_path / "c.zarr", episodes=5, policy=Dies(space), size=16, progress=False, tag="random")
    assert EpisodeReader(tmp_path / "c.zarr").num_episodes >= 1
    kept = EpisodeReader(tmp_path / "c.zarr").num_episodes
    stats = record(name, tmp_path / "c.zarr", episodes=5, policy=RandomPolicy(space), size=16, progress=False,
                   tag="random")
    assert stats["skipped"] == kept and EpisodeReader(tmp_path / "c.zarr").num_episodes == 5


def test_a_float_render_is_scaled_and_an_out_of_range_one_refused():
    """A simulator whose render() returns floats in [0, 1] records the picture, not black; int64
    frames past 255 are refused naming the env, not wrapped modulo 256."""
    from types import SimpleNamespace

    from wfm_sim.envs import gym_source

    env = SimpleNamespace(spec=SimpleNamespace(id="Stub-v0"), img=np.full((4, 4, 3), 0.5, np.float32))
    env.render = lambda: env.img
    assert (gym_source._render(env) == 128).all()
    env.img = np.full((4, 4, 3), 1000, np.int64)
    with pytest.raises(ValueError, match=r"Stub-v0\.render\(\): int64 frames must lie in 0\.\.255, got \[1000, 1000\]"):
        gym_source._render(env)
