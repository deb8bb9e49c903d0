"""A real RL library trains on the imagined env unchanged."""

import numpy as np
import pytest
import torch

pytest.importorskip("stable_baselines3")


def test_ppo_trains_on_the_imagined_env(tiny_model_dir_with_contexts):
    from stable_baselines3 import PPO
    from stable_baselines3.common.env_checker import check_env as sb3_check_env

    import gymnasium as gym

    import wfm_sim  # noqa: F401

    env = gym.make("wfm_sim/WorldModel-v0", model=str(tiny_model_dir_with_contexts), obs_mode="pixels",
                   max_episode_steps=32)
    sb3_check_env(env, warn=False)
    torch.manual_seed(0)
    agent = PPO("MlpPolicy", env, n_steps=512, batch_size=128, n_epochs=2, seed=0, verbose=0, device="cpu")
    before = [p.detach().clone() for p in agent.policy.parameters()]
    agent.learn(total_timesteps=2048)
    assert agent.num_timesteps >= 2048
    assert any(not torch.equal(a, b) for a, b in zip(before, agent.policy.parameters()))
    obs, _ = env.reset(seed=0)
    action, _ = agent.predict(obs, deterministic=True)
    assert env.action_space.contains(np.asarray(action, dtype=np.float32))
