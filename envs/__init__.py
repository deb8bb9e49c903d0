"""Gymnasium environments: imagined (backed by the world model) and their real-simulator twins.

Installed as ``wfm_sim.envs``.
"""

from wfm_sim.envs.contexts import Context, ContextBank
from wfm_sim.envs.imagined import ImaginedEnv, ImaginedVectorEnv
from wfm_sim.envs.real import RealEnv, make_real_vec
from wfm_sim.envs.registration import ENV_IDS, REAL_IDS, TWINS, register_envs
from wfm_sim.envs.sources import SOURCES, Source, get_source

__all__ = ["Context", "ContextBank", "ENV_IDS", "ImaginedEnv", "ImaginedVectorEnv", "REAL_IDS", "RealEnv", "SOURCES",
           "Source", "TWINS", "get_source", "make_real_vec", "register_envs"]
