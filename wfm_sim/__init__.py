"""wfm_sim: a world foundation model as a Gymnasium simulator."""

__version__ = "0.1.0"
