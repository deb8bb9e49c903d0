"""Write an evaluation to disk: JSON report, PSNR/SSIM-over-horizon plot, side-by-side mp4."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from wfm_sim.evaluation.fidelity import side_by_side
from wfm_sim.viz import write_mp4


def plot_horizon(report: dict, path: Path) -> Path:
    """PSNR and SSIM over horizon for every method and baseline (mean over cameras)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    h = np.arange(1, report.get("horizon_frames", report["horizon"]) + 1)  # scores are per frame
    for name, res in report["results"].items():
        style = "--" if name.startswith(("baseline", "shuffled")) else "-"
        axes[0].plot(h, res["psnr_mean"], style, marker="o", ms=3, label=name)
        axes[1].plot(h, res["ssim_mean"], style, marker="o", ms=3, label=name)
    k = report.get("frames_per_step", 1)
    xlabel = "horizon (frames after the context)" if k == 1 else f"horizon (frames after the context; {k} per step)"
    for ax, what in zip(axes, ("PSNR (dB)", "SSIM")):
        ax.set_xlabel(xlabel)
        ax.set_ylabel(what)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle(f"{report.get('model', '')}: open-loop fidelity on {Path(report['data']).name} "
                 f"({report['windows']} windows)", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_report(report: dict, videos: dict, out: str | Path, fps: float = 4.0, n_videos: int = 3) -> dict[str, Path]:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "report.json", "plot": out / "psnr_over_horizon.png", "video": out / "side_by_side.mp4"}
    paths["json"].write_text(json.dumps(report, indent=2) + "\n")
    plot_horizon(report, paths["plot"])
    frames = []
    for w in range(min(n_videos, videos["real"].shape[0])):
        frames += side_by_side(videos, w, report["cameras"])
    write_mp4(paths["video"], frames, fps=fps)  # side_by_side upscales before labelling
    return paths


def summary_table(report: dict) -> str:
    """A plain-text table: mean PSNR / SSIM at horizons 1, H/2, H per method."""
    H = report.get("horizon_frames", report["horizon"])
    picks = sorted({1, max(1, H // 2), H})
    head = f"{'method':34s} " + " ".join(f"PSNR@{h:<3d}" for h in picks) + " " + " ".join(f"SSIM@{h:<3d}" for h in picks)
    lines = [head, "-" * len(head)]
    for name, r in report["results"].items():
        ps = " ".join(f"{r['psnr_mean'][h - 1]:8.2f}" for h in picks)
        ss = " ".join(f"{r['ssim_mean'][h - 1]:8.3f}" for h in picks)
        lines.append(f"{name:34s} {ps} {ss}")
    lines.append("controllability (delta PSNR true - shuffled actions): " +
                 ", ".join(f"{k} {v:+.2f} dB" for k, v in report["controllability_delta_psnr"].items()))
    lines.append("decoder reconstruction from real tokens: " +
                 ", ".join(f"{k} {v['psnr']:.2f} dB / {v['ssim']:.3f}" for k, v in report["decoder_reconstruction"].items()))
    return "\n".join(lines)
