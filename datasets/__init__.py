"""Episode datasets: the zarr store (one writer, atomic episodes, validation and repair), merges,
importers (robomimic, LeRobot), the LeRobot export, the held-out split and training windows.

Installed as ``wfm_sim.datasets`` (never a top-level ``datasets``, which would shadow
Hugging Face's package).
"""

from wfm_sim.datasets.episode import NUSCENES_CAMERAS, SCHEMA_VERSION, Episode
from wfm_sim.datasets.export import ExportError, export_lerobot
from wfm_sim.datasets.health import StoreHealth, inspect_store, repair_store
from wfm_sim.datasets.importers import ImportFormatError, import_lerobot, import_robomimic
from wfm_sim.datasets.lock import StoreLockedError
from wfm_sim.datasets.merge import filter_store, merge_stores
from wfm_sim.datasets.store import EpisodeReader, EpisodeWriter, StoreError

__all__ = ["Episode", "EpisodeReader", "EpisodeWriter", "ExportError", "ImportFormatError", "NUSCENES_CAMERAS", "SCHEMA_VERSION",
           "StoreError", "StoreHealth", "StoreLockedError", "export_lerobot", "import_lerobot", "import_robomimic", "inspect_store",
           "filter_store", "merge_stores", "repair_store"]
