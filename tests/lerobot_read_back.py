"""Read a LeRobot dataset folder with LeRobot's own loader and write what it sees to an .npz.

Run by tests/test_export.py with the interpreter of a separate virtual environment that holds
lerobot (it cannot share the project's: see docs/data.md). Usage:

    python tests/lerobot_read_back.py DATASET_FOLDER OUT.npz
"""

import sys

import numpy as np
from lerobot.datasets.lerobot_dataset import LeRobotDataset

root, out = sys.argv[1], sys.argv[2]
ds = LeRobotDataset("wfm_sim/export", root=root, video_backend="pyav")
cams = list(ds.meta.video_keys)
items = [ds[i] for i in range(len(ds))]
arrays = {
    "fps": np.array(ds.fps),
    "num_episodes": np.array(ds.num_episodes),
    "cameras": np.array(cams),
    "tasks": np.array([it["task"] for it in items]),
    "from_index": np.array(ds.meta.episodes["dataset_from_index"]),
    "to_index": np.array(ds.meta.episodes["dataset_to_index"]),
}
for key in ("action", "next.reward", "next.done", "episode_index", "frame_index", "timestamp", "index"):
    arrays[key] = np.stack([it[key].numpy() for it in items])
for cam in cams:  # (C, H, W) float in [0, 1] -> (H, W, C) uint8
    arrays[cam] = np.stack([(it[cam].numpy().transpose(1, 2, 0) * 255).round().astype(np.uint8) for it in items])
np.savez(out, **arrays)
