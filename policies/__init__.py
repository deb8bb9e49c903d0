"""Policies for real and imagined envs alike (installed as ``wfm_sim.policies``).

Every policy is batched, ``policy(obs) -> actions`` with ``policy.reset(seeds, rows)`` at the
start of episodes; scripted experts (:class:`ScriptedPolicy`) read the real simulator's state
and are called ``policy(obs, info)``. See :mod:`wfm_sim.policies.base`.
"""

from wfm_sim.policies.actor_critic import ActorCritic, ActorCriticConfig
from wfm_sim.policies.base import (ConstantPolicy, ConvPolicy, ConvPolicyConfig, PlanPolicy, Policy, RandomPolicy,
                                   ScriptedPolicy, SeededPolicy)
from wfm_sim.policies.driving import MixedDriver, RoadCentroidDriver, TrackFollower
from wfm_sim.policies.manipulation import MetaWorldExpert
from wfm_sim.policies.registry import make_policy

__all__ = ["ActorCritic", "ActorCriticConfig", "ConstantPolicy", "ConvPolicy", "ConvPolicyConfig", "MetaWorldExpert", "MixedDriver", "PlanPolicy", "Policy", "RandomPolicy",
           "RoadCentroidDriver", "ScriptedPolicy", "SeededPolicy", "TrackFollower", "make_policy"]
