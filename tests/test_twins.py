"""Real-simulator twins: Gymnasium conformance, seeds that replay, equal spaces, one policy in both worlds."""

import sys

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import wfm_sim  # noqa: F401  (registers the ids)
from wfm_sim.envs import TWINS, Context, ImaginedVectorEnv, RealEnv, make_real_vec
from wfm_sim.models import shipped_models
from wfm_sim.policies import ConvPolicy, ConvPolicyConfig, PlanPolicy, TrackFollower
from wfm_sim.rollout import play, record

pytest.importorskip("Box2D")
pytest.importorskip("metaworld")
needs_shipped = pytest.mark.skipif(not shipped_models(), reason="no shipped model in this checkout")


def _same(a, b) -> bool:
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    return np.array_equal(a, b)


@pytest.mark.parametrize("env_id", ["wfm_sim/RealDriving-v0", "wfm_sim/RealManipulation-v0"])
def test_real_twins_pass_check_env_and_seeds_repeat_across_fresh_envs(env_id):
    env = gym.make(env_id)
    check_env(env.unwrapped)
    a, info_a = gym.make(env_id).reset(seed=11)
    b, info_b = gym.make(env_id).reset(seed=11)  # a freshly made env: the same start state
    c, _ = env.reset(seed=12)
    assert _same(a, b) and info_a["privileged"] == info_b["privileged"]
    assert not _same(a, c)
    again, _ = env.reset(seed=11)  # the same env reset twice with one seed: the same start too
    assert _same(a, again)


@pytest.mark.parametrize("source", ["metaworld-push", "carracing-4cam"])
def test_a_recorded_episode_replays_from_its_seed(tmp_path, source):
    from wfm_sim.datasets import EpisodeReader

    record(source, tmp_path / "r.zarr", episodes=1, max_steps=6, seed=21, progress=False)
    ep = EpisodeReader(tmp_path / "r.zarr").episode(0)
    assert ep.seed == 21
    twin = RealEnv(source)
    obs, _ = twin.reset(seed=ep.seed)
    for t in range(len(ep)):
        frames = obs if isinstance(obs, dict) else {twin.cameras[0]: obs}
        assert all(np.array_equal(frames[c], ep.obs[c][t]) for c in ep.cameras), f"step {t} differs"
        obs, reward, *_ = twin.step(ep.action[t])
        assert reward == pytest.approx(float(ep.reward[t]), abs=1e-5)


@needs_shipped
@pytest.mark.parametrize("imagined_id", sorted(TWINS))
def test_each_twin_pair_has_equal_spaces_and_rate(imagined_id):
    imagined, real = gym.make(imagined_id), gym.make(TWINS[imagined_id])
    assert imagined.observation_space == real.observation_space
    assert imagined.action_space == real.action_space
    assert imagined.metadata["render_fps"] == real.metadata["render_fps"]
    n = 3
    vec_i = gym.make_vec(imagined_id, num_envs=n, vectorization_mode="vector_entry_point")
    vec_r = make_real_vec(real.unwrapped.source.name, n)
    assert vec_i.single_observation_space == vec_r.single_observation_space
    assert vec_i.action_space == vec_r.action_space and vec_i.observation_space == vec_r.observation_space


@needs_shipped
def test_one_conv_policy_runs_in_both_worlds_from_the_same_start_state():
    real = make_real_vec("carracing-4cam", 2, context_frames=2)
    imagined = ImaginedVectorEnv(2, "driving", max_episode_steps=50)
    policy = ConvPolicy(ConvPolicyConfig(image_size=64, cameras=4, width=8))
    real.reset(seed=[3, 4])
    real.step(np.tile(np.array([0.0, 0.5, 0.0], np.float32), (2, 1)))  # one step: 2 frames and the action between
    contexts = list(real.call("context"))
    assert all(isinstance(c, Context) and len(c) == 2 for c in contexts)
    dreamed = play(imagined, policy, [3, 4], horizon=5, options={"context": contexts})
    lived = play(real, policy, [3, 4], horizon=5)  # no code change: the same object, the same loop
    for d, c in zip(dreamed, contexts):
        assert all(np.array_equal(d.obs[cam][0], c.frames[cam][-1]) for cam in c.cameras)  # starts where reality is
        assert len(d) == 5 and d.origin == c.origin and d.action.shape == (5, 3)
    assert all(len(e) == 5 and real.single_action_space.contains(e.action[0]) for e in lived)
    np.testing.assert_allclose(dreamed[0].action[0], policy({k: v[:1] for k, v in _first(dreamed).items()})[0])


def _first(episodes):
    return {cam: frames[:1] for cam, frames in episodes[0].obs.items()}


def test_a_scripted_expert_drives_real_twins_and_refuses_imagination(tiny_model_dir_with_contexts):
    real = make_real_vec("carracing", 2)
    episodes = play(real, TrackFollower(), [0, 1], horizon=30)
    assert [e.seed for e in episodes] == [0, 1] and all(e.total_reward() > 0 for e in episodes)
    imagined = ImaginedVectorEnv(2, str(tiny_model_dir_with_contexts), max_episode_steps=5)
    with pytest.raises(ValueError, match="only a real twin env provides"):
        play(imagined, TrackFollower(), [0, 1], horizon=3)


def test_a_policy_whose_actions_do_not_fit_is_refused_by_name(tiny_model_dir_with_contexts):
    imagined = ImaginedVectorEnv(2, str(tiny_model_dir_with_contexts), max_episode_steps=5)
    with pytest.raises(ValueError, match=r"PlanPolicy actions must have shape \(2, 3\)"):
        play(imagined, PlanPolicy(np.zeros((4, 2), np.float32)), [0, 1], horizon=3)
    with pytest.raises(ValueError, match="outside the action space bounds"):
        play(imagined, PlanPolicy(np.full((4, 3), 5.0, np.float32)), [0, 1], horizon=3)
    real = RealEnv("carracing")
    real.reset(seed=0)
    with pytest.raises(ValueError, match=r"action must have shape \(3,\)"):
        real.step(np.zeros(2, np.float32))
    with pytest.raises(RuntimeError, match="before reset"):
        RealEnv("carracing").step(np.zeros(3, np.float32))


def test_a_context_from_another_camera_rig_is_refused(tiny_model_dir_with_contexts):
    real = RealEnv("carracing-4cam")
    real.reset(seed=0)
    imagined = ImaginedVectorEnv(1, str(tiny_model_dir_with_contexts))
    with pytest.raises(ValueError, match=r"cameras \['CAM_FRONT', 'CAM_BACK', 'CAM_LEFT', 'CAM_RIGHT'\].*sees \['CAM_FRONT'\]"):
        imagined.reset(seed=0, options={"context": real.context()})


def test_a_real_id_without_its_simulator_gives_an_install_hint(monkeypatch):
    monkeypatch.setitem(sys.modules, "Box2D", None)  # as if gymnasium[box2d] were not installed
    with pytest.raises(ImportError, match=r"pip install 'wfm-sim\[sim\]'"):
        gym.make("wfm_sim/RealDriving-v0")
    with pytest.raises(ValueError, match="unknown source 'nope'"):
        gym.make("wfm_sim/Real-v0", source="nope")


def test_the_mixed_driver_leaves_the_road_and_comes_back_reproducibly():
    from wfm_sim.policies import MixedDriver

    def drive(seeds, steps=150):
        env, pol = make_real_vec("carracing", len(seeds)), MixedDriver()
        obs, info = env.reset(seed=seeds)
        pol.reset(seeds)
        off, actions = np.zeros(len(seeds)), []
        for _ in range(steps):
            a = pol(obs, info)
            actions.append(a)
            obs, _, _, _, info = env.step(a)
            off += [not s.on_road for s in info["privileged"]]
        return off, np.stack(actions)

    off, actions = drive([3, 5])
    assert off.sum() > 10 and (off < 150).all()  # it leaves the road, and finds it again
    again_off, again = drive([3, 5])
    assert np.array_equal(actions, again) and np.array_equal(off, again_off)


def test_the_branching_driver_holds_random_actions_between_stretches_of_following():
    from wfm_sim.policies import make_policy

    def drive(seed, steps=90):
        env, pol = make_real_vec("carracing", 1, size=16), make_policy("branching", source="carracing")
        obs, info = env.reset(seed=[seed])
        pol.reset([seed])
        modes, actions = [], []
        for _ in range(steps):
            modes.append(pol.segments.steps[0][min(len(modes), len(pol.segments.steps[0]) - 1)][0])
            a = pol(obs, info)
            actions.append(a[0])
            obs, _, _, _, info = env.step(a)
        return modes, np.stack(actions)

    modes, actions = drive(4)
    held = [t for t, m in enumerate(modes) if m == "held"]
    assert modes[0] == "follow" and held  # it starts on the road, then lets go
    first = held[0]
    assert all(np.array_equal(actions[first], actions[t]) for t in range(first, first + 4))  # held 4 steps
    assert (actions[held, 1] >= 0.2).all() and (np.abs(actions[held, 0]) <= 1).all()  # gas on: the car moves
    again_modes, again = drive(4)
    assert again_modes == modes and np.array_equal(actions, again)
    with pytest.raises(ValueError, match="'branching' is scripted for CarRacing"):
        make_policy("branching", source="metaworld-push")


def test_mixed_v2_adds_straight_and_late_driving_and_keeps_the_first_schedules():
    from wfm_sim.policies import MixedDriver, make_policy

    v1, v2 = MixedDriver(), make_policy("mixed-v2", source="carracing")
    seeds = [3, 5, 6, 8]  # seed 5 steers late from step 25 and drives straight later
    v1.reset(seeds)
    v2.reset(seeds)
    old = MixedDriver()
    old.reset(seeds)
    assert all(v1.segments.steps[r] == old.segments.steps[r] for r in range(4))  # the first version is unchanged
    modes = {m for r in range(4) for m, _ in v2.segments.steps[r]}
    assert {"straight", "late"} <= modes and modes <= set(MixedDriver.MODES_V2)
    row = 1
    sched = v2.segments.steps[row]
    env = make_real_vec("carracing", 1)
    follower = MixedDriver(control_errors=True)  # a twin whose every segment follows: the follower's own actions
    obs, info = env.reset(seed=[seeds[row]])
    v2.reset([seeds[row]])
    follower.reset([seeds[row]])
    follower.segments.steps[0] = [("follow", 0.0)] * len(sched)
    taken, followed = [], []
    for _ in range(90):
        taken.append(v2(obs, info))
        followed.append(follower(obs, info))
        obs, _, _, _, info = env.step(taken[-1])
    env.close()
    taken, followed = np.concatenate(taken), np.concatenate(followed)
    seen = set()
    for t, (mode, param) in enumerate(sched[:90]):
        seen.add(mode)
        if mode == "late":
            assert np.array_equal(taken[t], followed[max(0, t - int(param))]), t  # the follower's action of param steps ago
        elif mode == "straight":
            assert taken[t].tolist() == [0.0, np.float32(param), 0.0]
    assert {"late", "straight"} <= seen
    with pytest.raises(ValueError, match="'mixed-v2' is scripted for CarRacing"):
        make_policy("mixed-v2", source="metaworld-push")


def test_the_mixed_manipulation_policy_interrupts_the_expert_reproducibly():
    from wfm_sim.policies import make_policy
    from wfm_sim.policies.manipulation import MixedManipulation

    def push(seeds, steps=50):
        env, pol = make_real_vec("metaworld-push", len(seeds)), make_policy("mixed", source="metaworld-push")
        obs, info = env.reset(seed=seeds)
        pol.reset(seeds)
        actions = []
        for _ in range(steps):
            actions.append(pol(obs, info))
            obs, _, _, _, info = env.step(actions[-1])
        return pol, np.stack(actions)

    pol, actions = push([14, 4])
    assert isinstance(pol, MixedManipulation) and np.abs(actions).max() <= 1.0
    modes = [m for m, _ in pol.segments.steps[0][:50]]
    assert set(modes) == set(MixedManipulation.MODES)  # seed 14 draws every behaviour within 50 steps
    held = [t for t, m in enumerate(modes) if m == "hold"]
    assert np.all(actions[held, 0] == 0)  # a still segment sends zero actions
    repeat = [t for t, m in enumerate(modes) if m == "repeat" and t % 2 and modes[t - 1] == "repeat"]
    assert np.array_equal(actions[repeat, 0], actions[[t - 1 for t in repeat], 0])  # each action played twice
    assert np.array_equal(actions, push([14, 4])[1])  # a seed decides the whole episode
    with pytest.raises(ValueError, match="CarRacing and Meta-World"):
        make_policy("mixed", source="reacher")


def test_the_shipped_pixel_driver_drives_the_four_camera_twin_from_pixels():
    from wfm_sim.policies import ConvPolicy, make_policy

    policy = make_policy("pixel-driver")
    assert isinstance(policy, ConvPolicy) and not getattr(policy, "privileged", False)
    real = make_real_vec("carracing-4cam", 2, context_frames=2)
    try:
        first = play(real, policy, [21, 22], horizon=80)
        again = play(real, policy, [21, 22], horizon=80)
        rand = play(real, make_policy("random", real.single_action_space), [21, 22], horizon=80)
    finally:
        real.close()
    for a, b in zip(first, again):  # deterministic acting, seeded starts: the same drive twice
        assert np.array_equal(a.action, b.action)
    # It follows the road from pixels alone: new road tiles every few steps, where random driving earns none.
    assert min(e.total_reward() for e in first) > 100 > max(e.total_reward() for e in rand)


def test_the_shipped_imagination_policy_loads_by_name_and_drives_the_real_front_camera():
    from wfm_sim.policies import ActorCritic, make_policy
    from wfm_sim.policies.registry import shipped_policies

    assert "carracing-dyna" in shipped_policies()
    policy = make_policy("carracing-dyna")
    assert isinstance(policy, ActorCritic) and policy.cfg.cameras == ("CAM_FRONT",)
    real = make_real_vec("carracing-front", 2, context_frames=2)
    first = play(real, policy, [11, 12], horizon=30)
    again = play(real, policy, [11, 12], horizon=30)
    for a, b in zip(first, again):  # deterministic acting, seeded starts: the same drive twice
        assert np.array_equal(a.action, b.action) and real.single_action_space.contains(a.action[0])
    assert np.abs(np.concatenate([e.action for e in first])[:, 0]).max() <= 1.0
    with pytest.raises(ValueError, match="shipped policy"):
        make_policy("no-such-policy")


def test_a_shipped_policy_ships_the_world_model_it_was_trained_in():
    """``carracing-dyna-text`` loads by name, its ``world_model/`` by ``policies/NAME/world_model``,
    and the pair runs: the policy fits the model's rig and the model reports its ensemble's spread."""
    from wfm_sim.envs import ImaginedVectorEnv
    from wfm_sim.policies import make_policy

    policy = make_policy("carracing-dyna-text")
    env = ImaginedVectorEnv(2, "policies/carracing-dyna-text/world_model", device="cpu", precision="fp32")
    assert env.model.cfg.backbone.reward_ensemble == 4 and env.model.cfg.cameras == ("CAM_FRONT",)
    first = play(env, policy, [0, 1], horizon=3)
    again = play(env, policy, [0, 1], horizon=3)
    for a, b in zip(first, again):  # the shipped pair, seeded: the same imagined drive twice
        assert np.array_equal(a.action, b.action) and np.array_equal(a.reward, b.reward)
    obs, _ = env.reset(seed=[0, 1])
    _, _, _, _, info = env.step(policy(obs))
    assert info["reward_std"].shape == (2,) and (info["reward_std"] > 0).all()


def test_the_shipped_latent_policy_acts_on_token_ids_and_on_real_frames_alike():
    """``carracing-latent`` reads token ids in its world model's token env, and real frames
    through the tokenizer encoder it carries: the same frame gives the same action either way."""
    import torch

    from wfm_sim.envs import ImaginedVectorEnv, RealEnv
    from wfm_sim.envs.sources import get_source
    from wfm_sim.policies import make_policy

    pytest.importorskip("Box2D")
    policy = make_policy("carracing-latent")
    assert policy.cfg.obs == "tokens"
    env = ImaginedVectorEnv(2, "policies/carracing-latent/world_model", obs_mode="tokens", device="cpu",
                            precision="fp32")
    ids, _ = env.reset(seed=[0, 1])
    action = policy(ids)
    assert action.shape == (2, 3) and env.single_action_space.contains(action[0].astype(np.float32))
    real = RealEnv(get_source("carracing-front"), 64)
    try:
        obs, _ = real.reset(seed=3)
        for _ in range(30):
            obs, *_ = real.step(np.array([0.0, 0.5, 0.0], np.float32))
    finally:
        real.close()
    frame = obs["CAM_FRONT"] if isinstance(obs, dict) else obs
    coded = env.model.encode(torch.as_tensor(frame)[None, None, None])[:, 0]  # the model's own ids of this frame
    np.testing.assert_allclose(policy(frame[None]), policy(coded.numpy()), atol=1e-5)
