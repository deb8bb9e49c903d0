"""Gymnasium environments backed by the world model (installed as ``wfm_sim.envs``)."""

from wfm_sim.envs.imagined import ImaginedEnv, ImaginedVectorEnv
from wfm_sim.envs.registration import ENV_IDS, register_envs

__all__ = ["ENV_IDS", "ImaginedEnv", "ImaginedVectorEnv", "register_envs"]
