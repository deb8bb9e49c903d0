"""Episodes in both worlds: the one episode loop (:func:`play`), the real-simulator recorder
(:func:`record`), and parallel imagined rollouts on Ray actors (:class:`RolloutPool`; Ray is
imported only when a pool starts)."""

from wfm_sim.rollout.play import play
from wfm_sim.rollout.pool import RolloutError, RolloutPool, RolloutRequest
from wfm_sim.rollout.record import record
from wfm_sim.rollout.worker import PolicySpec, RolloutWorker

__all__ = ["PolicySpec", "RolloutError", "RolloutPool", "RolloutRequest", "RolloutWorker", "play", "record"]
