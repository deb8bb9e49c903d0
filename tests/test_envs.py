"""Imagined envs: Gymnasium conformance, determinism, vector == single, autoreset, bad input."""

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env
from gymnasium.vector import AutoresetMode

import wfm_sim  # noqa: F401  (registers the ids)
from wfm_sim.envs import ENV_IDS, ImaginedEnv, ImaginedVectorEnv
from wfm_sim.models import WorldModel, preset, shipped_models


def _make(folder, **kw):
    return gym.make("wfm_sim/WorldModel-v0", model=str(folder), max_episode_steps=6, **kw)


@pytest.mark.parametrize("kw", [{}, {"obs_mode": "tokens"}, {"mode": "sequential"}, {"decoder": "diffusion", "diffusion_steps": 1}])
def test_check_env_passes(tiny_model_dir_with_contexts, kw):
    env = _make(tiny_model_dir_with_contexts, render_mode="rgb_array", **kw)
    check_env(env.unwrapped, skip_render_check=False)
    obs, _ = env.reset(seed=0)
    assert env.observation_space.contains(obs)


def test_check_env_multicamera_dict_obs(tmp_path, square_store):
    from wfm_sim.testing import square_world_store

    store = square_world_store(tmp_path / "two.zarr", episodes=3, steps=6, cameras=("CAM_FRONT", "CAM_BACK"))
    torch.manual_seed(0)
    model = WorldModel(preset("tiny", cameras=("CAM_FRONT", "CAM_BACK")))
    env = ImaginedEnv(model=model, dataset=store, render_mode="rgb_array", device="cpu", precision="fp32")
    assert isinstance(env.observation_space, gym.spaces.Dict) and set(env.observation_space) == {"CAM_FRONT", "CAM_BACK"}
    check_env(env)
    env.reset(seed=1)
    assert env.render().shape[1] > 2 * 16  # a mosaic of both cameras


@pytest.mark.skipif(not shipped_models(), reason="no shipped model in this checkout")
@pytest.mark.parametrize("env_id", [i for i, kw in ENV_IDS.items() if kw])
def test_shipped_ids_pass_check_env(env_id):
    env = gym.make(env_id, max_episode_steps=4)
    check_env(env.unwrapped)


def _rollout(env, seed, actions):
    obs, _ = env.reset(seed=seed)
    out = [obs]
    for a in actions:
        obs, r, term, trunc, _ = env.step(a)
        out.append((obs, r, term, trunc))
        if term or trunc:
            break
    return out


def test_same_seed_same_rollout(tiny_model_dir_with_contexts):
    env = _make(tiny_model_dir_with_contexts).unwrapped
    acts = [env.action_space.sample() for _ in range(5)]
    a, b = _rollout(env, 3, acts), _rollout(env, 3, acts)
    c = _rollout(env, 4, acts)
    for x, y in zip(a[1:], b[1:]):
        assert np.array_equal(x[0], y[0]) and x[1:] == y[1:]
    assert any(not np.array_equal(x[0], y[0]) for x, y in zip(a, c))


def test_a_sub_env_depends_on_its_own_seed_not_on_the_other_rows(tiny_model_dir_with_contexts):
    """Same seeds and batch layout: bit-identical. Another seed in row 0 or 2 leaves row 1 alone.
    (A sub-env of a batch of 3 is not compared with a single env: other batch sizes sum in
    another order, see the ImaginedVectorEnv docstring.)"""
    n = 3
    vec = gym.make_vec("wfm_sim/WorldModel-v0", num_envs=n, vectorization_mode="vector_entry_point",
                       model=str(tiny_model_dir_with_contexts), max_episode_steps=50, autoreset_mode="disabled")
    assert isinstance(vec.unwrapped, ImaginedVectorEnv)
    acts = np.random.default_rng(0).uniform(vec.single_action_space.low, vec.single_action_space.high,
                                            (4, n, 3)).astype(np.float32)

    def run(seeds):
        obs, _ = vec.reset(seed=seeds)
        out = [(obs, np.zeros(n))]
        for a in acts:
            obs, r, *_ = vec.step(a)
            out.append((obs, r))
        return out

    a, b, c = run([10, 11, 12]), run([10, 11, 12]), run([20, 11, 22])
    assert all(np.array_equal(x[0], y[0]) and np.array_equal(x[1], y[1]) for x, y in zip(a, b))
    assert all(np.array_equal(x[0][1], z[0][1]) and x[1][1] == z[1][1] for x, z in zip(a, c))
    assert any(not np.array_equal(x[0][0], z[0][0]) for x, z in zip(a, c))


def _vec(folder, mode, n=4, steps=3):
    return ImaginedVectorEnv(n, str(folder), max_episode_steps=steps, autoreset_mode=mode)


def test_autoreset_next_step(tiny_model_dir_with_contexts):
    env = _vec(tiny_model_dir_with_contexts, AutoresetMode.NEXT_STEP)
    assert env.metadata["autoreset_mode"] == AutoresetMode.NEXT_STEP
    env.reset(seed=0)
    a = np.zeros((4, 3), np.float32)
    done = np.zeros(4, bool)
    for _ in range(8):
        obs, r, term, trunc, info = env.step(a)
        # Sub-envs that ended on the previous step were reset on this one: zero reward, not done.
        assert (r[done] == 0).all() and not (term[done] | trunc[done]).any()
        assert info["_context"][done].all() if done.any() else "_context" not in info
        done = term | trunc
    assert env._steps.max() <= 3


def test_autoreset_same_step_puts_final_obs_in_info(tiny_model_dir_with_contexts):
    env = _vec(tiny_model_dir_with_contexts, AutoresetMode.SAME_STEP, steps=2)
    env.reset(seed=0)
    a = np.zeros((4, 3), np.float32)
    env.step(a)
    obs, r, term, trunc, info = env.step(a)
    assert (term | trunc).all()  # max_episode_steps=2 ends every sub-env by now
    assert info["_final_obs"].all() and info["final_obs"][0].shape == (16, 16, 3)
    assert (env._steps == 0).all()  # already reset


def test_autoreset_disabled_uses_reset_mask(tiny_model_dir_with_contexts):
    env = _vec(tiny_model_dir_with_contexts, AutoresetMode.DISABLED, steps=1)
    env.reset(seed=0)
    env.step(np.zeros((4, 3), np.float32))
    with pytest.raises(RuntimeError, match="reset_mask"):
        env.step(np.zeros((4, 3), np.float32))
    mask = np.array([True, False, True, False])
    _, info = env.reset(options={"reset_mask": mask})
    assert info["_context"].tolist() == mask.tolist()
    env.reset(options={"reset_mask": ~mask})
    env.step(np.zeros((4, 3), np.float32))


def test_torch_obs_stay_on_device(tiny_model_dir_with_contexts):
    env = _vec(tiny_model_dir_with_contexts, AutoresetMode.NEXT_STEP)
    env.torch_obs = True
    obs, _ = env.reset(seed=0)
    assert isinstance(obs, torch.Tensor) and obs.device == env.model.device


def test_caller_context_frames_and_actions(tiny_model_dir):
    env = ImaginedEnv(model=str(tiny_model_dir))
    frames = np.random.default_rng(0).integers(0, 255, (2, 16, 16, 3), dtype=np.uint8)
    obs, info = env.reset(seed=0, options={"frames": frames, "actions": np.zeros((1, 3), np.float32)})
    assert np.array_equal(obs, frames[-1]) and info["context"] == "caller frames"
    with pytest.raises(ValueError, match="needs the 1 actions"):
        env.reset(options={"frames": frames})
    with pytest.raises(ValueError, match="context must hold 1..3 frames"):
        env.reset(options={"frames": np.zeros((4, 16, 16, 3), np.uint8), "actions": np.zeros((3, 3), np.float32)})
    with pytest.raises(ValueError, match="context frames must be"):
        env.reset(options={"frames": np.zeros((2, 8, 8, 3), np.uint8), "actions": np.zeros((1, 3), np.float32)})
    with pytest.raises(TypeError, match="uint8"):
        env.reset(options={"frames": frames.astype(np.float32), "actions": np.zeros((1, 3), np.float32)})
    with pytest.raises(ValueError, match="no context to start from"):
        env.reset()
    for bad, what in ((1e6, "outside the action space bounds"), (np.nan, "contain NaN or inf")):
        with pytest.raises(ValueError, match=rf"context actions \(from caller frames\) {what}"):
            env.reset(options={"frames": frames, "actions": np.array([[bad, 0.5, 0.0]], np.float32)})


def test_context_actions_shipped_beside_a_model_are_checked(tiny_model_dir, tmp_path):
    """A contexts.safetensors whose actions lie outside the action space is refused at reset, naming it."""
    import shutil

    from wfm_sim.envs.contexts import ContextBank

    folder = tmp_path / "m"
    shutil.copytree(tiny_model_dir, folder)
    frames = np.zeros((2, 2, 1, 16, 16, 3), np.uint8)
    ContextBank(frames, np.full((2, 1, 3), 1e6, np.float32), ["x", "y"]).save(folder)
    env = ImaginedEnv(model=str(folder))
    with pytest.raises(ValueError, match=r"context actions \(from .*contexts.safetensors#\d\) outside the action space"):
        env.reset(seed=0)


def test_autoreset_reuses_the_callers_context(tiny_model_dir):
    env = ImaginedVectorEnv(2, str(tiny_model_dir), max_episode_steps=1)
    frames = np.random.default_rng(1).integers(0, 255, (2, 1, 1, 16, 16, 3), dtype=np.uint8)  # one context per env
    env.reset(seed=0, options={"frames": frames})
    env.step(np.zeros((2, 3), np.float32))  # truncates both (max_episode_steps=1)
    obs, *_ = env.step(np.zeros((2, 3), np.float32))  # NEXT_STEP autoreset from each env's own context
    assert np.array_equal(obs, frames[:, -1, 0])


def test_missing_camera_in_context_is_named(tmp_path):
    model = WorldModel(preset("tiny", cameras=("CAM_FRONT", "CAM_BACK")))
    env = ImaginedEnv(model=model)
    with pytest.raises(ValueError, match="CAM_BACK"):
        env.reset(options={"frames": {"CAM_FRONT": np.zeros((1, 16, 16, 3), np.uint8)}})


@pytest.mark.parametrize(
    "action,err,match",
    [
        (np.zeros(4, np.float32), ValueError, r"shape \(3,\)"),
        (np.array([np.nan, 0, 0], np.float32), ValueError, "NaN"),
        (np.array([2.0, 0, 0], np.float32), ValueError, "bounds"),
        (np.array(["a", "b", "c"]), TypeError, "numeric"),
        (np.array([0.5 + 1j, 0, 0]), TypeError, "real numeric"),  # never drop an imaginary part silently
        ([[0.0, 0.5], 0.0, 0.0], ValueError, r"must be an array of shape \(3,\).*ragged"),  # not numpy's own words
    ],
)
def test_bad_actions_raise(tiny_model_dir_with_contexts, action, err, match):
    env = ImaginedEnv(model=str(tiny_model_dir_with_contexts))
    env.reset(seed=0)
    with pytest.raises(err, match=match):
        env.step(action)


@pytest.mark.parametrize("seed,options,err,match", [
    (-1, None, ValueError, r"seeds must lie in \[0, 2\*\*63\), got -1"),  # not numpy's "Seed must be greater"
    (1.5, None, TypeError, r"seed must be an int, a list of 2 ints or None, got 1.5"),
    ([0, "a"], None, TypeError, r"seed must be an int"),
    (0, [1], TypeError, r"reset options must be a dict .*got list"),
])
def test_bad_reset_arguments_are_named(tiny_model_dir_with_contexts, seed, options, err, match):
    env = ImaginedVectorEnv(2, str(tiny_model_dir_with_contexts))
    with pytest.raises(err, match=match):
        env.reset(seed=seed, options=options)
    with pytest.raises(ValueError, match="got -1"):  # the single env checks before Gymnasium's own seeding
        ImaginedEnv(model=str(tiny_model_dir_with_contexts)).reset(seed=-1)


def test_real_env_bad_arguments_are_named():
    from wfm_sim.envs.real import RealEnv, make_real_vec

    env = RealEnv("carracing", 16)
    with pytest.raises(ValueError, match=r"seed must be an integer in \[0, 2\*\*32\) or None, got -1"):
        env.reset(seed=-1)
    with pytest.raises(TypeError, match="reset options must be a dict"):
        env.reset(seed=0, options=[1])
    env.reset(seed=0)
    with pytest.raises(ValueError, match=r"^action contains NaN or inf"):
        env.step(np.array([np.nan, 0, 0], np.float32))
    with pytest.raises(ValueError, match="num_envs must be an integer >= 1, got 0"):
        make_real_vec("carracing", 0, 16)


def test_device_and_store_reads_are_named(square_store):
    from wfm_sim.datasets import EpisodeReader
    from wfm_sim.device import resolve_device

    with pytest.raises(ValueError, match="device must be auto, cpu, cuda, cuda:N or mps, got 'nope'"):
        resolve_device("nope")
    r = EpisodeReader(square_store)
    with pytest.raises(ValueError, match=r"has no array 'obs/NOPE'; it holds \['action', 'obs/CAM_FRONT'"):
        r.read("obs/NOPE", 0, 1)
    with pytest.raises(IndexError, match=r"rows \[-5, 2\) of .*: expected 0 <= start <= stop"):
        r.read("obs/CAM_FRONT", -5, 2)


def test_step_before_reset_and_after_end(tiny_model_dir_with_contexts):
    env = ImaginedEnv(model=str(tiny_model_dir_with_contexts), max_episode_steps=1)
    with pytest.raises(RuntimeError, match="before reset"):
        env.step(np.zeros(3, np.float32))
    env.reset(seed=0)
    env.step(np.zeros(3, np.float32))
    with pytest.raises(RuntimeError, match="call reset"):
        env.step(np.zeros(3, np.float32))


def test_prompt_reset_generates_first_frame():
    from wfm_sim.models.text import TextEncoder

    enc = TextEncoder.random(d_model=16)
    torch.manual_seed(0)
    model = WorldModel(preset("tiny", text_dim=16))
    env = ImaginedEnv(model=model, text_encoder=enc, device="cpu")
    obs, info = env.reset(seed=0, options={"prompt": "a road"})
    assert obs.shape == (16, 16, 3) and info["context"] == "prompt: a road"
    env.step(env.action_space.sample())
    with pytest.raises(ValueError, match="text_encoder"):
        ImaginedEnv(model=WorldModel(preset("tiny"))).reset(options={"prompt": "x"})


def test_max_episode_steps_given_to_make_is_the_limit(tiny_model_dir_with_contexts):
    """Past the registered 200: gym.make's TimeLimit decides, not a limit hidden inside the env."""
    env = gym.make("wfm_sim/WorldModel-v0", model=str(tiny_model_dir_with_contexts), obs_mode="tokens",
                   parallel_steps=1, max_episode_steps=300)
    env.reset(seed=0)
    a = np.zeros(3, np.float32)
    steps, done = 0, False
    while not done:
        _, _, term, trunc, _ = env.step(a)
        steps += 1
        done = term or trunc
    assert steps == 300 and trunc and not term
    assert gym.spec("wfm_sim/WorldModel-v0").max_episode_steps == 200
    vec = gym.make_vec("wfm_sim/WorldModel-v0", num_envs=2, vectorization_mode="vector_entry_point",
                       model=str(tiny_model_dir_with_contexts), obs_mode="tokens", max_episode_steps=3)
    vec.reset(seed=0)
    truncs = [vec.step(np.zeros((2, 3), np.float32))[3] for _ in range(3)]
    assert not truncs[1].any() and truncs[2].all()
    with pytest.raises(ValueError, match="max_episode_steps must be a positive integer"):
        ImaginedVectorEnv(1, str(tiny_model_dir_with_contexts), max_episode_steps=0)
