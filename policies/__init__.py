"""Policies for imagined and real envs (installed as ``wfm_sim.policies``)."""

from wfm_sim.policies.base import ConvPolicy, ConvPolicyConfig, PlanPolicy, RandomPolicy
from wfm_sim.policies.driving import RoadCentroidDriver, TrackFollower

__all__ = ["ConvPolicy", "ConvPolicyConfig", "PlanPolicy", "RandomPolicy", "RoadCentroidDriver", "TrackFollower"]
