"""Policies for real and imagined envs alike (installed as ``wfm_sim.policies``).

Every policy is batched, ``policy(obs, info) -> actions`` with ``policy.reset(seeds, rows)`` at
the start of episodes; learned policies ignore ``info``, scripted experts
(:class:`ScriptedPolicy`) read the real simulator's state from it. A plain function becomes a
policy with :func:`as_policy`. See :mod:`wfm_sim.policies.base`.
"""

from wfm_sim.policies.actor_critic import ActorCritic, ActorCriticConfig
from wfm_sim.policies.base import (CallablePolicy, ConstantPolicy, ConvPolicy, ConvPolicyConfig, PlanPolicy, Policy,
                                   RandomPolicy, ScriptedPolicy, SeededPolicy, as_policy)
from wfm_sim.policies.driving import MixedDriver, RoadCentroidDriver, TrackFollower
from wfm_sim.policies.manipulation import MetaWorldExpert
from wfm_sim.policies.registry import make_policy

__all__ = ["ActorCritic", "ActorCriticConfig", "CallablePolicy", "ConstantPolicy", "ConvPolicy", "ConvPolicyConfig", "MetaWorldExpert", "MixedDriver", "PlanPolicy", "Policy", "RandomPolicy",
           "RoadCentroidDriver", "ScriptedPolicy", "SeededPolicy", "TrackFollower", "as_policy", "make_policy"]
