"""Pictures of a counterfactual report: metrics over horizon, and real beside imagined branches.

Dimension legend: :mod:`wfm_sim.dims`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from wfm_sim.evaluation.counterfactual import TARGETS
from wfm_sim.viz import contact_sheet, label_bar, mosaic, save_png, upscale, write_mp4


def plot_counterfactual(report: dict, path: Path) -> Path:
    """Three panels over horizon: discrimination and reward ranking; real vs imagined spread;
    inverse-dynamics R2 and event agreement."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    h = np.arange(1, report["horizon"] + 1)
    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    axes[0].plot(h, report["discrimination"], marker="o", ms=3, label="action discrimination (frames)")
    if "return_ranking" in report:
        axes[0].plot(h, report["return_ranking"], "--", marker="s", ms=3, label="return ranking (reward head)")
    axes[0].axhline(TARGETS["discrimination"], ls=":", c="g", label="target")
    axes[0].axhline(0.5, ls="--", c="gray", label="ignores actions")
    axes[0].set(ylim=(-0.02, 1.02), ylabel="share of branch pairs told apart")
    axes[1].plot(h, report["spread_real"], marker="o", ms=3, label="real")
    axes[1].plot(h, report["spread_imagined"], marker="o", ms=3, label="imagined")
    axes[1].set(ylabel="spread between branches (mean |diff|, 0..255)")
    idm = report.get("inverse_dynamics")
    if idm:
        axes[2].plot(h, idm["real_r2"], marker="o", ms=3, label="inverse dynamics R2, real")
        axes[2].plot(h, idm["imagined_r2"], marker="o", ms=3, label="inverse dynamics R2, imagined")
    for name, e in report["events"].items():
        if "agreement" in e:
            axes[2].plot(h, e["agreement"], "--", marker="s", ms=3, label=f"{name} agreement")
    axes[2].set(ylabel="R2 / agreement")
    if not axes[2].get_legend_handles_labels()[0]:  # --no-probes
        axes[2].text(0.5, 0.5, "no probes in this report", ha="center", va="center", transform=axes[2].transAxes)
    for ax in axes:
        ax.set_xlabel("horizon (steps after the branch point)")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    fig.suptitle(f"{report['model'] or 'twin'}: counterfactual branches on {report['source']}", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _tile(frame: np.ndarray) -> np.ndarray:
    """One step's cameras ``(v, H, W, 3)`` as one image."""
    return frame[0] if len(frame) == 1 else mosaic(frame, cols=2 if len(frame) == 4 else None)


def _action_text(a: np.ndarray) -> str:
    return " ".join(f"{x:+.1f}" for x in np.atleast_1d(a))


def branch_sheet(report: dict, path: Path, starts: int = 2) -> Path:
    """For the first ``starts`` starts: each branch's real frames over its imagined ones (sample 0)."""
    arr = report["arrays"]
    rows, labels = [], []
    for s in range(min(starts, len(arr["real"]))):
        for b in range(arr["real"].shape[1]):
            act = _action_text(arr["actions"][s, b, 0])
            rows.append([_tile(f) for f in arr["real"][s, b]])
            labels.append(f"start {s} branch {b} REAL (first action {act})")
            rows.append([_tile(f) for f in arr["imagined"][s, b, 0]])
            labels.append(f"start {s} branch {b} IMAGINED")
    cols = [f"t={t + 1}" for t in range(arr["real"].shape[2])]
    return save_png(path, contact_sheet(rows, labels, scale=2, col_labels=cols))


def branch_video(report: dict, path: Path, fps: float = 4.0, scale: int = 2) -> Path:
    """The first start: all branches side by side, real on top, imagined below, step by step."""
    arr = report["arrays"]
    real, imag = arr["real"][0], arr["imagined"][0, :, 0]
    frames = []
    for t in range(real.shape[1]):
        top = [upscale(_tile(real[b, t]), scale) for b in range(len(real))]
        bottom = [upscale(_tile(imag[b, t]), scale) for b in range(len(imag))]
        grid = mosaic(top + bottom, [f"real {b}" for b in range(len(real))] + [f"imagined {b}" for b in range(len(imag))],
                      cols=len(real))
        frames.append(np.concatenate((label_bar(f"step {t + 1}", grid.shape[1], 16), grid), axis=0))
    return write_mp4(path, frames, fps=fps)
