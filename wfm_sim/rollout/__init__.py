"""Parallel imagined rollouts on Ray actors: one world-model replica and one env batch per worker."""

from wfm_sim.rollout.pool import RolloutError, RolloutPool, RolloutRequest
from wfm_sim.rollout.worker import PolicySpec, RolloutWorker

__all__ = ["PolicySpec", "RolloutError", "RolloutPool", "RolloutRequest", "RolloutWorker"]
