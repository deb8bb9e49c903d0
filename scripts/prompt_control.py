"""Does the prompt control what a text-conditioned driving model generates? Measured, not by eye.

Two pixel measures of a front-camera CarRacing frame, checked first on real frames grouped by
the caption recorded from simulator state:
* ``far_offset``: where the far road (rows 20-28 of 64, just below the horizon) lies, -1 left
  .. +1 right; a road curving left ahead sits left of centre;
* ``road_share``: the share of road-grey pixels in the lower half (low when off the road).

Then the model generates from the same starts under each prompt and the same straight-ahead
actions (steer 0, gas 0.3), and the measures of its frames are compared per prompt:
(a) from real contexts of held-out episodes, (b) from the prompt alone (frame 0 generated).

    python scripts/prompt_control.py --model runs/driving_text --data data/driving_captions.zarr \
        --out runs/prompt_control [--starts 24] [--horizon 12]

Writes ``prompt_control.json``, ``prompt_control.png`` (bars with 95% intervals) and
``prompt_sheet.png`` (one start, a row per prompt).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from wfm_sim.datasets import EpisodeReader
from wfm_sim.datasets.merge import filter_store
from wfm_sim.datasets.split import load_split
from wfm_sim.envs import ImaginedVectorEnv
from wfm_sim.envs.captions import CAR_CAPTIONS
from wfm_sim.models import WorldModel
from wfm_sim.models.text import TextEncoder
from wfm_sim.policies.driving import road_mask

PROMPTS = ("straight road", "sharp left curve ahead", "sharp right curve ahead", "off the road on grass")
ACTION = np.array([0.0, 0.3, 0.0], np.float32)


def measures(frames: np.ndarray) -> dict[str, np.ndarray]:
    """Per-frame ``far_offset`` and ``road_share`` of ``(..., 64, 64, 3)`` frames."""
    m = road_mask(frames)
    band = m[..., 20:28, :]
    cnt = band.sum((-2, -1))
    cols = np.arange(m.shape[-1])
    off = ((band * cols).sum((-2, -1)) / np.maximum(cnt, 1) - (m.shape[-1] - 1) / 2) / (m.shape[-1] / 2)
    off = np.where(cnt > 0, off, 0.0)
    return {"far_offset": off, "road_share": m[..., m.shape[-2] // 2 :, :].mean((-2, -1))}


def summary(values: np.ndarray) -> dict:
    v = np.asarray(values, np.float64)
    return {"mean": float(v.mean()), "ci95": float(1.96 * v.std(ddof=1) / np.sqrt(len(v))) if len(v) > 1 else 0.0,
            "n": int(len(v))}


def real_reference(store: str, episodes: list[int], horizon: int) -> dict:
    """Measures of the ``horizon`` frames after each recorded step, grouped by that step's caption."""
    r = EpisodeReader(store)
    per = {c: {"far_offset": [], "road_share": []} for c in range(len(CAR_CAPTIONS))}
    for e in episodes:
        ep = r.episode(int(e))
        f, cap = ep.obs["CAM_FRONT"], ep.extras["caption"]
        m = measures(f)
        for i in range(0, len(ep) - horizon - 1, 3):
            for k in per[int(cap[i])]:
                per[int(cap[i])][k].append(m[k][i + 1 : i + 1 + horizon].mean())
    return {CAR_CAPTIONS[c]: {k: summary(v) for k, v in d.items()} for c, d in per.items() if len(d["road_share"]) > 1}


def imagine(model, encoder, data, prompts, starts: int, horizon: int, from_context: bool, seed: int):
    """``{prompt: (starts, horizon, H, W, 3)}`` frames from the same starts and actions."""
    n = starts
    env = ImaginedVectorEnv(n, model, dataset=data if from_context else None, text_encoder=encoder,
                            max_episode_steps=horizon + 1, device="cpu", precision="fp32")
    out = {}
    for p in prompts:
        opts = {} if p is None else {"prompt": p}
        obs, _ = env.reset(seed=seed, options=opts)
        frames = [obs] if not from_context else []
        for _ in range(horizon):
            obs, *_ = env.step(np.tile(ACTION, (n, 1)))
            frames.append(obs)
        out["(no prompt)" if p is None else p] = np.stack(frames[:horizon], 1)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--data", required=True, help="the captioned store the model was trained on (its val split)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--starts", type=int, default=24)
    ap.add_argument("--horizon", type=int, default=12)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(args.seed)
    model = WorldModel.from_pretrained(args.model, device="cpu", precision="fp32")
    encoder = TextEncoder.of_model(args.model)
    val = [int(e) for e in load_split(args.model, args.data).indices("val")]
    report = {"model": args.model, "data": args.data, "action": ACTION.tolist(), "horizon": args.horizon,
              "starts": args.starts, "real_by_caption": real_reference(args.data, val, args.horizon)}
    # Held-out contexts: a store of the val episodes is the env's context source.
    val_store = out / "val_starts.zarr"
    if not val_store.exists():
        filter_store(args.data, val_store, val)
    videos = {}
    for name, from_context in (("from_context", True), ("from_prompt", False)):
        prompts = ([None] if from_context else []) + list(PROMPTS)
        frames = imagine(model, encoder, str(val_store), prompts, args.starts, args.horizon, from_context, args.seed)
        per_start = {p: {k: v.mean(1) for k, v in measures(f).items()} for p, f in frames.items()}
        report[name] = {p: {k: summary(v) for k, v in d.items()} for p, d in per_start.items()}
        # The same starts under every prompt: per-start differences against the reference prompt.
        ref = "(no prompt)" if from_context else "straight road"
        report[name + "_paired_vs_" + ref.strip("()").replace(" ", "_")] = {
            p: {k: summary(d[k] - per_start[ref][k]) for k in d} for p, d in per_start.items() if p != ref}
        videos[name] = frames
    (out / "prompt_control.json").write_text(json.dumps(report, indent=2))
    plot(report, out / "prompt_control.png")
    sheet(videos, out / "prompt_sheet.png")
    for name in [k for k in report if k.startswith(("real_", "from_"))]:
        print(name)
        for p, d in report[name].items():
            print(f"  {p:26s} far_offset {d['far_offset']['mean']:+.3f} +- {d['far_offset']['ci95']:.3f}   "
                  f"road_share {d['road_share']['mean']:.3f} +- {d['road_share']['ci95']:.3f}   (n={d['road_share']['n']})")


def plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2))
    groups = [("real frames, by recorded caption", report["real_by_caption"]),
              ("imagined from real contexts, by prompt", report["from_context"]),
              ("imagined from the prompt alone", report["from_prompt"])]
    for ax, key, label in ((axes[0], "far_offset", "far road position (-1 left .. +1 right)"),
                           (axes[1], "road_share", "road share of the lower half")):
        x, ticks = 0, []
        for gi, (title, d) in enumerate(groups):
            for p, v in d.items():
                ax.bar(x, v[key]["mean"], yerr=v[key]["ci95"], color=f"C{gi}", alpha=0.8,
                       label=title if p == next(iter(d)) else None)
                ticks.append((x, p.replace(" curve ahead", "").replace("off the road on grass", "off road")))
                x += 1
            x += 0.6
        ax.set_xticks([t[0] for t in ticks], [t[1] for t in ticks], rotation=60, ha="right", fontsize=8)
        ax.set_ylabel(label)
        ax.axhline(0, color="k", lw=0.5)
    axes[0].legend(fontsize=8)
    fig.suptitle("Prompt control: the same starts and straight-ahead actions under each prompt")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def sheet(videos: dict, path: Path) -> None:
    import cv2

    rows = []
    for name, frames in videos.items():
        for p, f in frames.items():
            strip = np.concatenate([cv2.resize(im, (96, 96), interpolation=cv2.INTER_NEAREST) for im in f[0, ::2]], 1)
            label = np.full((96, 190, 3), 255, np.uint8)
            cv2.putText(label, name.replace("_", " "), (4, 30), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1)
            cv2.putText(label, p[:24], (4, 60), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1)
            rows.append(np.concatenate((label, strip), 1))
    width = max(r.shape[1] for r in rows)
    rows = [np.pad(r, ((0, 0), (0, width - r.shape[1]), (0, 0)), constant_values=255) for r in rows]
    cv2.imwrite(str(path), np.concatenate(rows, 0)[..., ::-1])


if __name__ == "__main__":
    main()
