"""Episode datasets: the zarr store, training windows, and recorders for real simulators.

Installed as ``wfm_sim.datasets`` (never a top-level ``datasets``, which would shadow
Hugging Face's package).
"""

from wfm_sim.datasets.episode import NUSCENES_CAMERAS, SCHEMA_VERSION, Episode
from wfm_sim.datasets.store import EpisodeReader, EpisodeWriter, StoreError, merge_stores

__all__ = ["Episode", "EpisodeReader", "EpisodeWriter", "NUSCENES_CAMERAS", "SCHEMA_VERSION", "StoreError", "merge_stores"]
