"""Write a policy-scoring report: ranking table, imagined-vs-real scatter, real | imagined video
and contact sheet.

``report.json`` is written last and atomically, and an old one is removed first: a run that
is killed half-way leaves no file that could be mistaken for a finished report.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from wfm_sim.checkpoint import atomic_write_json
from wfm_sim.viz import contact_sheet, label_bar, mosaic, save_png, write_mp4


def ranking_table(report: dict) -> str:
    """A markdown table, best real score first: imagined and real return / success with 95% CIs."""
    rows = {r["policy"]: r for r in report["policies"]}
    has_real = any("real_return" in r for r in rows.values())
    has_success = any("imagined_success" in r or "real_success" in r for r in rows.values())
    has_replay = any("replayed_return" in r for r in rows.values())
    head = ["policy", "imagined return", "replayed return" if has_replay else None, "real return" if has_real else None,
            "real return std" if has_real else None, "imagined success", "replayed success" if has_replay else None,
            "real success" if has_real else None]
    head = [h for h in head if h and (has_success or "success" not in h)]
    lines = ["| " + " | ".join(head) + " |", "| " + " | ".join("---" for _ in head) + " |"]
    for name in report["ranking"]:
        r = rows[name]
        cells = [name]
        for key in head[1:]:
            k = key.replace(" ", "_")
            if k not in r:
                cells.append("-")  # a scripted reference has no imagined score
            elif k.endswith("_std"):
                cells.append(f"{r[k]:.2f}")
            else:
                cells.append(f"{r[k]:.2f} ± {r[k + '_ci']:.2f}" if np.isfinite(r[k + "_ci"]) else f"{r[k]:.2f}")
        lines.append("| " + " | ".join(cells) + " |")
    for metric, a in report.get("agreement", {}).items():
        lines.append(f"\n{metric}: Pearson {a['pearson']:.3f}, Spearman {a['spearman']:.3f}, MMRV {a['mmrv']:.3f}, "
                     f"mean imagined - real {a['mean_gap']:+.3f}")
    for metric, a in report.get("replayed", {}).items():
        lines.append(f"{metric}, heads on real frames (replayed vs real): Pearson {a['pearson']:.3f}, Spearman "
                     f"{a['spearman']:.3f}, MMRV {a['mmrv']:.3f}; imagined - real {a['dynamics_gap'] + a['head_gap']:+.3f} "
                     f"= dynamics {a['dynamics_gap']:+.3f} + heads {a['head_gap']:+.3f}")
    starts = report.get("starts", {})
    if starts.get("from", "seeds") != "seeds":
        diff = starts.get("context_max_diff")
        lines.append(f"starts: {len(starts['labels'])} recorded episodes of {starts['from']}" + (
            f"; the real twin, reset at their seeds, is within {max(diff)}/255 of their stored frames" if diff else ""))
    return "\n".join(lines)


def plot_agreement(report: dict, path: Path) -> Path | None:
    """Imagined vs real, one point per policy (return; and success rate where there is one)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    both = [r for r in report["policies"] if "imagined_return" in r]  # scripted references: real only
    metrics = [m for m in ("return", "success") if both and all(f"real_{m}" in r and f"imagined_{m}" in r for r in both)]
    if not metrics:
        return None
    fig, axes = plt.subplots(1, len(metrics), figsize=(5.2 * len(metrics), 4.6), squeeze=False)
    for ax, m in zip(axes[0], metrics):
        x = [r[f"real_{m}"] for r in both]
        y = [r[f"imagined_{m}"] for r in both]
        ax.errorbar(x, y, xerr=[r[f"real_{m}_ci"] for r in both],
                    yerr=[r[f"imagined_{m}_ci"] for r in both], fmt="o", ms=4, capsize=2, label="imagined")
        rp = []
        if all(f"replayed_{m}" in r for r in both):  # heads on real frames; the segment is the dynamics error
            rp = [r[f"replayed_{m}"] for r in both]
            ax.plot(x, rp, "o", ms=4, mfc="none", color="tab:orange", label="replayed (heads on real frames)")
            for xi, yi, ri in zip(x, y, rp):
                ax.plot([xi, xi], [ri, yi], "-", color="tab:orange", lw=0.6, alpha=0.6)
        for r, xi, yi in zip(both, x, y):
            ax.annotate(r["policy"], (xi, yi), fontsize=6, xytext=(3, 3), textcoords="offset points")
        lo, hi = min(x + y + rp), max(x + y + rp)
        ax.plot([lo, hi], [lo, hi], "--", color="grey", lw=0.8, label="imagined = real")
        a = report["agreement"].get(m, {})
        title = (f"{m}: Pearson {a.get('pearson', float('nan')):.2f}, Spearman {a.get('spearman', float('nan')):.2f}, "
                 f"MMRV {a.get('mmrv', float('nan')):.2f}")
        h = report.get("replayed", {}).get(m)
        if h:
            title += f"\nreplayed: Pearson {h['pearson']:.2f}, Spearman {h['spearman']:.2f}, MMRV {h['mmrv']:.2f}"
        ax.set_title(title, fontsize=8)
        ax.set_xlabel(f"real {m}")
        ax.set_ylabel(f"imagined {m}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(f"{report['model']} vs {report['source']}: {len(report['policies'])} policies, "
                 f"{report['config']['starts']} starts, K={report['config']['samples']}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _views(ep, cams) -> list[list[np.ndarray]]:
    """Every frame of an episode, its final one included: per step, one frame per camera."""
    views = [[ep.obs[c][t] for c in cams] for t in range(len(ep))]
    if ep.final_obs is not None:
        views.append([ep.final_obs[c] for c in cams])
    return views


def _frames(ep, cams, length: int, scale: int = 2) -> list[np.ndarray]:
    views = _views(ep, cams)
    views += [views[-1]] * (length - len(views))
    return [mosaic(v, None, cols=len(cams), scale=scale) for v in views[:length]]


def _clips(results: dict) -> list[tuple]:
    """``(policy, start index, real episode, imagined episode)`` for every kept clip."""
    return [(name, i, real, dream) for name, res in results.items() for i, (real, dream) in sorted(res.clips.items())]


def video_grid(results: dict, cams: list[str], path: Path, fps: float) -> Path | None:
    """One row per (policy, start): real | imagined, all cameras, from the same start state."""
    rows = _clips(results)
    if not rows:
        return None
    length = max(max(len(r), len(d)) + 1 for _, _, r, d in rows)
    strips = []
    for name, i, real, dream in rows:
        left, right = _frames(real, cams, length), _frames(dream, cams, length)
        w = left[0].shape[1]
        head = np.concatenate((label_bar(f"{name} #{i}: real", w, 16), label_bar("imagined", w, 16)), axis=1)
        strips.append([np.concatenate((head, np.concatenate((a, b), axis=1)), axis=0) for a, b in zip(left, right)])
    frames = [np.concatenate([s[t] for s in strips], axis=0) for t in range(length)]
    return write_mp4(path, frames, fps=fps)


def sheet_grid(results: dict, cams: list[str], path: Path, columns: int = 6) -> Path | None:
    """The video's clips as a PNG: per (policy, start) a real row over an imagined one, at
    ``columns`` steps spread over the horizon (an episode that ended early shows its last frame)."""
    clips = _clips(results)
    if not clips:
        return None
    views = {(k, w): _views(ep, cams) for k, (_, _, real, dream) in enumerate(clips)
             for w, ep in (("real", real), ("imagined", dream))}
    length = max(len(v) for v in views.values())
    steps = np.unique(np.linspace(0, length - 1, min(columns, length)).round().astype(int))
    rows, labels = [], []
    for k, (name, i, _, _) in enumerate(clips):
        for world in ("real", "imagined"):
            v = views[k, world]
            rows.append([mosaic(v[min(t, len(v) - 1)], cols=min(len(cams), 2)) for t in steps])
            labels.append(f"{name} #{i}: {world}")
    return save_png(path, contact_sheet(rows, labels, scale=2 if len(cams) == 1 else 1,
                                        col_labels=[f"step {t}" for t in steps]))


def write_score_report(report: dict, out: str | Path, fps: float = 5.0) -> dict[str, Path]:
    """Write ``ranking.md``, ``agreement.png``, ``real_vs_imagined.mp4`` / ``.png`` and, last, ``report.json``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").unlink(missing_ok=True)  # never leave an old report beside a new, unfinished run
    paths = {"table": out / "ranking.md"}
    paths["table"].write_text(ranking_table(report) + "\n")
    plot = plot_agreement(report, out / "agreement.png")
    if plot is not None:
        paths["plot"] = plot
    results = {k: r for k, r in report.get("results", {}).items() if r.clips}
    if results:
        first = next(iter(results.values()))
        clip = next(iter(first.clips.values()), (None,))[0]
        if clip is not None:
            video = video_grid(results, list(clip.obs), out / "real_vs_imagined.mp4", fps)
            if video is not None:
                paths["video"] = video
                paths["sheet"] = sheet_grid(results, list(clip.obs), out / "real_vs_imagined.png")
    paths["json"] = out / "report.json"
    atomic_write_json(paths["json"], {k: v for k, v in report.items() if k != "results"})
    return paths
