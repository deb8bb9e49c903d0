"""Control in imagination: an actor-critic trained only inside a world model
(:mod:`~wfm_sim.rl.imagination`, the Dyna loop in :mod:`~wfm_sim.rl.dyna`), and plans searched
with the cross-entropy method in imagination and executed in reality (:mod:`~wfm_sim.rl.planning`)."""

from wfm_sim.rl.imagination import ImaginationRLConfig, ImaginationTrainer, gae, train_policy

__all__ = ["ImaginationRLConfig", "ImaginationTrainer", "gae", "train_policy"]
