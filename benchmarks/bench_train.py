"""Training throughput of each component through the real training loop (``train()``: data
loading, the step, the optimizer, logging), at the shipped driving model's size (``small-mv``,
4 cameras of 64x64) and the recipes' batch sizes, beside the machine's measured matmul peak.

    python benchmarks/bench_train.py [--steps 12] [--precision auto]

The store is synthetic (a square moving on 4 cameras, :func:`wfm_sim.testing.square_world_store`):
speed does not depend on the pictures. ``samples_per_s`` is what ``train()`` reports over the
whole run, first step included; ``backbone_tflops`` counts the backbone's dense-layer FLOPs
(forward + backward = 3 x forward, 2 x parameters per token) against the measured peak.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from bench_model import flops_per_token
from common import emit, machine

from wfm_sim.models import WorldModel, preset
from wfm_sim.testing import square_world_store
from wfm_sim.training.loop import TrainConfig, train

CAMS = ("CAM_FRONT", "CAM_BACK", "CAM_LEFT", "CAM_RIGHT")
BATCH = {"tokenizer": 16, "backbone": 16, "decoder": 16}


def backbone_flops_per_sample(cfg) -> float:
    """Dense-layer FLOPs of one training window of the backbone: forward + backward = 3 forwards."""
    import torch

    with torch.device("meta"):
        m = WorldModel(cfg)
    tokens = 1 + cfg.backbone.max_frames * (len(cfg.cameras) * cfg.tokenizer.grid ** 2 + 1)
    return 3 * flops_per_token(m) * tokens


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--precision", default="auto")
    ap.add_argument("--components", nargs="+", default=["tokenizer", "backbone", "decoder"])
    args = ap.parse_args()
    info = machine()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        store = square_world_store(Path(tmp) / "sq.zarr", episodes=8, steps=24, size=64, cameras=CAMS)
        out = Path(tmp) / "model"
        for comp in args.components:
            cfg = TrainConfig(comp, str(store), str(out), preset="small-mv", steps=args.steps, batch_size=BATCH[comp],
                              precision=args.precision, num_workers=0, eval_every=10**6, save_every=10**6,
                              progress=False, device="cpu")
            last = train(cfg)
            row = {"component": comp, "batch": BATCH[comp], "steps": args.steps,
                   "samples_per_s": last["samples_per_s"]}
            if comp == "backbone":
                flops = backbone_flops_per_sample(preset("small-mv", cameras=CAMS)) * last["samples_per_s"]
                row["backbone_tflops"] = flops / 1e12
                row["share_of_bf16_peak"] = flops / 1e9 / info["bf16_matmul_gflops"]
            rows.append(row)
    emit(f"training throughput (small-mv, 4 cameras, precision {args.precision})", rows, info)


if __name__ == "__main__":
    main()
