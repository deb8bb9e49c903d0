"""RLlib PPO (new API stack) on a registered imagined id, the documented configuration.

RLlib's default encoders are CNNs for ``[42|64|84, *, K]`` images and would receive the
imagined env's uint8 pixels or int64 tokens as they are ("Input type (unsigned char) and bias
type (float) should be the same"). The configuration that works: RLlib builds the batched
:class:`~wfm_sim.envs.ImaginedVectorEnv` itself through the id's ``vector_entry_point``
(one model call per step for all envs of a runner), and a ``FlattenObservations``
env-to-module connector turns each observation (token grid, or every camera's pixels) into one
float vector for RLlib's MLP encoder. Token observations (``obs_mode="tokens"``) skip pixel
decoding and keep that vector small (V x g x g)::

    config = ppo_config("driving", num_envs=16, obs_mode="tokens", max_episode_steps=15)
    algo = config.build_algo()
    algo.train()
"""

from __future__ import annotations


def ppo_config(model: str, num_envs: int = 8, env_id: str = "wfm_sim/WorldModel-v0", **env_config):
    """A ``PPOConfig`` that trains on the imagined env of ``model`` (keyword arguments go to the env)."""
    try:
        from ray.rllib.algorithms.ppo import PPOConfig
        from ray.rllib.connectors.env_to_module import FlattenObservations
    except ImportError as e:
        raise ImportError("RLlib is not installed: pip install 'wfm-sim[rl]'") from e
    import wfm_sim  # noqa: F401  (registers the ids)

    env_config = {"model": str(model), "obs_mode": "tokens", **env_config}
    return (PPOConfig()
            .environment(env_id, env_config=env_config)
            .env_runners(num_env_runners=0, num_envs_per_env_runner=num_envs,
                         gym_env_vectorize_mode="vector_entry_point",
                         env_to_module_connector=lambda env, spaces=None, device=None: FlattenObservations()))
