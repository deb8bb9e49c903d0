"""wfm_sim: a world foundation model as a Gymnasium simulator.

Importing the package registers the imagined environments (``wfm_sim/Driving-v0``,
``wfm_sim/Manipulation-v0``, ``wfm_sim/WorldModel-v0``) with Gymnasium.
"""

__version__ = "0.1.0"

from wfm_sim.envs.registration import register_envs as _register_envs  # noqa: E402

_register_envs()
