"""Figures of a downstream study (:mod:`wfm_sim.synthetic.study`): score against synthetic share,
and real against synthetic frames from the same real context."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from wfm_sim.datasets.store import EpisodeReader
from wfm_sim.viz import contact_sheet, mosaic, save_png


def plot_study(report: dict, path: str | Path) -> Path:
    """One panel per task: each budget's arms as score (mean, 95 % interval over seeds) against the
    share of synthetic frames in the training data; gated arms drawn hollow."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(report["summary"])
    fig, axes = plt.subplots(1, len(tasks), figsize=(5.2 * len(tasks), 3.8), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        for k, (budget, arms) in enumerate(report["summary"][task].items()):
            colour = f"C{k}"
            plain = [(r["synthetic_share"], r["mean"], r["ci95"]) for a, r in arms.items() if "gated" not in a]
            plain.sort()
            x, y, e = (np.array(v, float) for v in zip(*plain))
            ax.errorbar(x, y, yerr=np.nan_to_num(e), color=colour, marker="o", capsize=3,
                        label=f"{budget} real episodes")
            for arm, r in arms.items():
                if "gated" in arm:
                    ax.errorbar([r["synthetic_share"]], [r["mean"]], yerr=[np.nan_to_num(r["ci95"])], color=colour,
                                marker="o", mfc="white", capsize=3, ls="none",
                                label=f"{budget} real + gated synthetic")
        ax.set_xlabel("synthetic share of training frames")
        ax.set_ylabel(report["units"][task])
        ax.set_title(f"downstream {task}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


_ORIGIN = re.compile(r"^(?P<store>.*)#episode=(?P<episode>\d+),step=(?P<step>\d+)$")


def contact_sheet_from_context(synthetic: str | Path, cameras, path: str | Path, context: int, episodes: int = 3,
                               columns: int = 8, every: int = 4) -> Path:
    """For the first ``episodes`` synthetic episodes: the real episode their context was cut from,
    going on with its own actions, above the imagined one, every ``every`` steps from the context's
    last frame (step 0, the last real frame both rows share). All cameras of a step in one tile."""
    r = EpisodeReader(synthetic)
    origins = r.attrs.get("provenance", {}).get("start_contexts", [])
    rows, labels = [], []
    for e in range(min(episodes, r.num_episodes)):
        a, b = r.episode_bounds(e)
        idx = int(r.read("start_context", a, a + 1)[0]) if "start_context" in r.extras else -1
        m = _ORIGIN.match(origins[idx]) if 0 <= idx < len(origins) else None
        steps = list(range(0, min(b - a, columns * every), every))
        imagined = [mosaic([r.read(f"obs/{c}", a + t, a + t + 1)[0] for c in cameras], cols=2) for t in steps]
        if m is not None and Path(m["store"]).exists():
            real = EpisodeReader(m["store"])
            ra, rb = real.episode_bounds(int(m["episode"]))
            first = ra + int(m["step"]) + context - 1
            shown = [t for t in steps if first + t < rb]
            rows.append([mosaic([real.read(f"obs/{c}", first + t, first + t + 1)[0] for c in cameras], cols=2)
                         for t in shown])
            labels.append(f"real: episode {m['episode']} from step {int(m['step']) + context - 1}, its own actions")
        rows.append(imagined)
        labels.append(f"synthetic episode {e}: imagined from that context, its own actions")
    sheet = contact_sheet(rows, labels, scale=1, col_labels=[f"t={t}" for t in range(0, columns * every, every)])
    return save_png(path, sheet)
