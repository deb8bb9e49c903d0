"""How well tokenizers keep objects of a few pixels: real frames beside each model's token decode.

    python scripts/small_objects.py STORE MODEL [MODEL ...] [--camera NAME] --out docs/tokenizer_small_objects.png

Prints, per model, PSNR and the mean of each frame's worst 1% of pixel errors (0-255): Meta-World's
puck and goal marker cover a few pixels of a 64x64 frame, so a tokenizer can drop them and lose
almost nothing in PSNR, while the worst pixels show it. Writes one row of frames per model under
a row of real frames.
"""

from __future__ import annotations

import argparse

import cv2
import numpy as np
import torch

from wfm_sim.datasets.store import EpisodeReader
from wfm_sim.models import WorldModel
from wfm_sim.models.tokenizer import HARD_FRACTION


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("store")
    ap.add_argument("models", nargs="+")
    ap.add_argument("--frames", type=int, default=6, help="frames shown (one per episode, step 10)")
    ap.add_argument("--measure", type=int, default=200, help="frames measured (spread over the store)")
    ap.add_argument("--camera", default=None, help="the store's camera to measure (default: its first)")
    ap.add_argument("--out", default="tokenizer_small_objects.png")
    args = ap.parse_args()
    r = EpisodeReader(args.store)
    cam = args.camera or r.cameras[0]
    if cam not in r.cameras:
        raise SystemExit(f"{args.store} has cameras {list(r.cameras)}, not {cam!r}")
    frames = np.asarray(r.arrays[f"obs/{cam}"][: r.num_steps])
    ends = np.asarray(r.episode_ends)
    shown = [int(s) + 10 for s in np.concatenate([[0], ends[:-1]])[: args.frames]]
    measured = np.linspace(0, len(frames) - 1, args.measure).astype(int)
    rows = [np.concatenate(list(frames[shown]), 1)]
    for name in args.models:
        model = WorldModel.from_pretrained(name, device="cpu", precision="fp32")
        views = len(model.cfg.cameras)  # the tokenizer codes each view alone: fill every view slot with the frame

        def code(f: np.ndarray) -> np.ndarray:
            x = torch.from_numpy(f)[:, None, None].expand(-1, -1, views, -1, -1, -1).contiguous()
            return model.decode(model.encode(x)).numpy()[:, 0, 0]

        rec = code(frames[measured])
        err = np.abs(rec.astype(np.float64) - frames[measured]).mean(-1).reshape(len(measured), -1)
        k = max(1, int(err.shape[1] * HARD_FRACTION))
        psnr = 10 * np.log10(255**2 / (err**2).mean())
        worst = np.sort(err, 1)[:, -k:].mean()
        print(f"{name}: PSNR {psnr:.2f} dB, worst {HARD_FRACTION:.0%} of pixels: mean error {worst:.1f} / 255")
        shown_rec = code(frames[shown])
        rows.append(np.concatenate(list(shown_rec), 1))
    sheet = cv2.resize(np.concatenate(rows, 0), None, fx=3, fy=3, interpolation=cv2.INTER_NEAREST)
    cv2.imwrite(args.out, sheet[..., ::-1])
    print("wrote", args.out)


if __name__ == "__main__":
    main()
