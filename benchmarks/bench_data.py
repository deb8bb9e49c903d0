"""Data throughput: recorded frames/s per simulator source (policy, simulation, rendering,
zarr writes) and training-window loading samples/s.

    python benchmarks/bench_data.py [--steps 200]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

os.environ.setdefault("MUJOCO_GL", "egl")

from torch.utils.data import DataLoader  # noqa: E402

from common import emit, machine  # noqa: E402
from wfm_sim.rollout.record import record  # noqa: E402
from wfm_sim.datasets.windows import WindowDataset, collate  # noqa: E402

SOURCES = ["carracing", "carracing-4cam", "carracing-6cam", "metaworld-push", "pusher"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=200, help="recorded steps per source")
    ap.add_argument("--sources", nargs="+", default=SOURCES)
    args = ap.parse_args()
    info = machine()
    rows, loads = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for src in args.sources:
            out = f"{tmp}/{src}.zarr"
            stats = record(src, out, episodes=2, max_steps=args.steps // 2, progress=False)
            rows.append({"source": src, "steps": stats["frames"], "steps_per_s": stats["frames_per_s"]})
        for src, frames in (("carracing-4cam", 6), ("metaworld-push", 6)):
            ds = WindowDataset(f"{tmp}/{src}.zarr", frames, split="all")
            for workers in (0, 2):
                loader = DataLoader(ds, batch_size=16, shuffle=True, num_workers=workers, collate_fn=collate)
                t0, n = time.perf_counter(), 0
                for batch in loader:
                    n += batch.obs.shape[0]
                loads.append({"store": src, "window": frames, "workers": workers,
                              "samples_per_s": n / (time.perf_counter() - t0)})
    emit("collection (recorded steps/s, all cameras)", rows, info)
    emit("window loading", loads, info)


if __name__ == "__main__":
    main()
