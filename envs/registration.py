"""The one place environment ids are registered (on ``import wfm_sim``)."""

from __future__ import annotations

ENV_IDS = {
    "wfm_sim/Driving-v0": {"model": "driving"},
    "wfm_sim/Manipulation-v0": {"model": "manipulation"},
    "wfm_sim/WorldModel-v0": {},  # pass model=NAME_OR_FOLDER to gym.make
}


def register_envs() -> None:
    import gymnasium as gym

    for env_id, kwargs in ENV_IDS.items():
        if env_id in gym.registry:
            continue
        gym.register(env_id, entry_point="wfm_sim.envs.imagined:ImaginedEnv",
                     vector_entry_point="wfm_sim.envs.imagined:ImaginedVectorEnv", kwargs=dict(kwargs))
