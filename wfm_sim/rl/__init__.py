"""Reinforcement learning in imagination: an actor-critic trained only inside a world model."""

from wfm_sim.rl.imagination import ImaginationRLConfig, ImaginationTrainer, gae, train_policy

__all__ = ["ImaginationRLConfig", "ImaginationTrainer", "gae", "train_policy"]
