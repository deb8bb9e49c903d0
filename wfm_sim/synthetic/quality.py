"""Quality and diversity of a multi-camera driving dataset, per episode and per dataset.

``wfm-sim quality STORE [--reference REAL_STORE] [--min-quality Q --keep KEPT_STORE]`` scores
every episode of a store (generated or real) with measures that need no learned model:

* ``seam``: agreement between neighbouring cameras. Two cameras of a rig whose yaws differ by less
  than the field of view both see the ground along the bisector of their axes, at the same image
  rows (the ray is at the same angle from either axis), one at its left edge and one at its right.
  The mean absolute difference of those two pixel columns (grey levels, 0-255) is below 1 in real
  CarRacing and 10-20 for columns that do not look at the same ground; a model that imagines
  each camera on its own drifts apart here first.
* ``palette``: distance of each pixel to the nearest colour of the real data's palette (k-means
  of real frames; grey levels). Blur, smears and invented colours raise it.
* ``drift``: ``palette`` over the last quarter of the imagined frames minus over the first
  quarter: how much worse the frames get as the rollout leaves its real start.
* ``entropy``: the model's mean token entropy over imagined frames (nats; generated stores only).
* scenario statistics from the front camera: road ``curvature`` per frame (the road's centroid
  far ahead minus near, in half-widths; > 0 bends right), the fraction of frames ``off_road``
  (no road in the near field) and ``curve`` frames (|curvature| > 0.15), and ``braking``.

``quality`` is one number in (0, 1] for filtering: the geometric mean of ``min(1, ref / seam)``
and ``min(1, ref / palette)`` with the reference dataset's own means as ``ref`` (real data scores
about 1; without ``--reference``, the store's real frames stand in). Per dataset: means, the
distribution of curvature against the reference's (1-D Wasserstein distance), event rates side by
side, and diversity (mean pairwise distance between episodes' downsampled front frames at the same
steps, against the same figure of the reference).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from wfm_sim.checkpoint import atomic_write_json
from wfm_sim.datasets.store import EpisodeReader, StoreError
from wfm_sim.envs.car_cameras import RIG_4, RIG_6, CameraRig
from wfm_sim.policies.driving import road_mask
from wfm_sim.viz import contact_sheet, mosaic, save_png

YAWS = {**RIG_4, **RIG_6}
CURVE = 0.15  # |curvature| above which a frame counts as a curve
PALETTE_COLOURS = 12


@dataclass(frozen=True)
class Seam:
    """Two cameras that see the same ground ray: ``left`` at column ``left_col``, ``right`` at ``right_col``."""

    left: str
    left_col: int
    right: str
    right_col: int


def seams(cameras, image_size: int, fov_deg: float = CameraRig.fov_deg) -> list[Seam]:
    """The shared columns of each pair of neighbouring cameras of a known CarRacing rig (none otherwise)."""
    if not all(c in YAWS for c in cameras):
        return []
    f = (image_size / 2) / math.tan(math.radians(fov_deg) / 2)
    centre = (image_size - 1) / 2
    out = []
    cams = list(cameras)
    for i, a in enumerate(cams):
        for b in cams[i + 1 :]:
            d = (YAWS[a] - YAWS[b] + math.pi) % (2 * math.pi) - math.pi  # > 0: a is to the left of b
            if abs(d) >= math.radians(fov_deg) - 1e-6:
                continue
            left, right = (a, b) if d > 0 else (b, a)
            off = f * math.tan(abs(d) / 2)
            out.append(Seam(left, int(round(centre + off)), right, int(round(centre - off))))
    return out


def seam_error(frames: dict[str, np.ndarray], pairs: list[Seam], horizon: float = CameraRig.horizon) -> np.ndarray:
    """``(T,)`` mean absolute difference of the shared columns (below the horizon), over the pairs."""
    if not pairs:
        return np.full(len(next(iter(frames.values()))), np.nan)
    h = next(iter(frames.values())).shape[1]
    top = int(horizon * h) + 1
    errs = [np.abs(frames[p.left][:, top:, p.left_col].astype(np.float32)
                   - frames[p.right][:, top:, p.right_col].astype(np.float32)).mean(axis=(1, 2)) for p in pairs]
    return np.mean(errs, axis=0)


def fit_palette(pixels: np.ndarray, k: int = PALETTE_COLOURS, iters: int = 12) -> np.ndarray:
    """``(k, 3)`` colours by k-means (deterministic: initialised at luminance quantiles)."""
    x = pixels.reshape(-1, 3).astype(np.float32)
    if len(x) < k:
        raise ValueError(f"a palette of {k} colours needs at least {k} pixels, got {len(x)}")
    order = np.argsort(x.sum(1), kind="stable")
    centres = x[order[np.linspace(0, len(x) - 1, k).astype(int)]].copy()
    for _ in range(iters):
        assign = _nearest(x, centres)[1]
        for j in range(k):
            members = x[assign == j]
            if len(members):
                centres[j] = members.mean(0)
    return centres


def _nearest(x: np.ndarray, centres: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    d = ((x[:, None, :] - centres[None]) ** 2).sum(-1)
    j = d.argmin(1)
    return np.sqrt(d[np.arange(len(x)), j]), j


def palette_error(frames: np.ndarray, palette: np.ndarray, stride: int = 2) -> np.ndarray:
    """``(T,)`` mean distance of each frame's pixels (every ``stride``-th) to the nearest palette colour."""
    sub = frames[:, ::stride, ::stride].reshape(len(frames), -1, 3).astype(np.float32)
    return np.array([_nearest(f, palette)[0].mean() for f in sub])


def curvature(front: np.ndarray, horizon: float = CameraRig.horizon) -> tuple[np.ndarray, np.ndarray]:
    """Per frame of the front camera: road curvature (far centroid minus near, in half-widths; NaN
    when a band has no road) and whether the near field holds no road (off the road)."""
    t, h, w = front.shape[:3]
    top = int(horizon * h) + 2
    far, near = slice(top, top + (h - top) // 3), slice(h - (h - top) // 3, h)
    mask = road_mask(front)
    cols = np.arange(w, dtype=np.float32)
    out = np.full(t, np.nan, np.float32)
    off = np.zeros(t, bool)
    for i in range(t):
        fa, ne = mask[i, far], mask[i, near]
        off[i] = ne.mean() < 0.05
        if fa.sum() >= 3 and ne.sum() >= 3:
            cf = (fa * cols).sum() / fa.sum()
            cn = (ne * cols).sum() / ne.sum()
            out[i] = (cf - cn) / (w / 2)
    return out, off


def _imagined(reader: EpisodeReader, i: int, n: int) -> np.ndarray:
    """Which steps of episode ``i`` are imagined (all of them in a real store)."""
    if "real_frame" in reader.extras:
        a, b = reader.episode_bounds(i)
        return ~np.asarray(reader.read("real_frame", a, b), bool)
    return np.ones(n, bool)


def episode_scores(reader: EpisodeReader, i: int, palette: np.ndarray, pairs: list[Seam], front: str,
                   window: tuple[int, int] | None = None) -> dict:
    """The measures of the module docstring for episode ``i`` (and its real frames' seam/palette),
    or for the steps ``window = (start, stop)`` of it (reference windows as long as the store's episodes)."""
    ep = reader.episode(i)
    sl = slice(*window) if window is not None else slice(None)
    action, extras = ep.action[sl], {k: v[sl] for k, v in ep.extras.items()}
    imag = _imagined(reader, i, len(ep.action))[sl]
    n = len(action)
    if not imag.any():
        raise StoreError(f"episode {i} of {reader.path} holds no imagined frame")
    frames = {c: ep.obs[c][sl] for c in reader.cameras}
    seam = seam_error(frames, pairs)
    pal = np.mean([palette_error(frames[c], palette) for c in reader.cameras], axis=0)
    curv, off = curvature(frames[front])
    idx = np.nonzero(imag)[0]
    q = max(1, len(idx) // 4)
    row = {
        "episode": i, "key": reader.episode_keys[i] if reader.episode_keys else str(i), "steps": int(n),
        "seam": _mean(seam[imag]), "palette": float(pal[imag].mean()),
        "drift": float(pal[idx[-q:]].mean() - pal[idx[:q]].mean()),
        "entropy": _mean(np.asarray(extras["entropy"], np.float32)[imag]) if "entropy" in extras else None,
        "curvature": _mean(np.abs(curv[imag])), "curve": float(np.mean(np.abs(np.nan_to_num(curv[imag])) > CURVE)),
        "off_road": float(off[imag].mean()),
        "braking": float((action[imag, 2] > 0.1).mean()) if action.ndim == 2 and action.shape[1] == 3 else None,
        "real_seam": _mean(seam[~imag]), "real_palette": float(pal[~imag].mean()) if (~imag).any() else None,
    }
    return row | {"_curv": curv[imag], "_thumbs": _thumbs(frames[front], idx)}


def _mean(x: np.ndarray) -> float | None:
    x = np.asarray(x, np.float64)
    x = x[np.isfinite(x)]
    return float(x.mean()) if len(x) else None


def _thumbs(front: np.ndarray, idx: np.ndarray, k: int = 4) -> np.ndarray:
    """``(k, 8, 8, 3)`` downsampled front frames at k evenly spaced imagined steps (for diversity)."""
    import cv2

    pick = idx[np.linspace(0, len(idx) - 1, k).astype(int)]
    return np.stack([cv2.resize(front[j], (8, 8), interpolation=cv2.INTER_AREA) for j in pick]).astype(np.float32)


def _diversity(thumbs: list[np.ndarray]) -> float | None:
    """Mean pairwise L1 distance (grey levels) between episodes' thumbnails at the same steps."""
    if len(thumbs) < 2:
        return None
    x = np.stack(thumbs).reshape(len(thumbs), -1)
    d = np.abs(x[:, None] - x[None]).mean(-1)
    return float(d[np.triu_indices(len(x), 1)].mean())


def wasserstein_1d(a: np.ndarray, b: np.ndarray) -> float | None:
    """Earth mover's distance between two 1-D samples (through 101 quantiles)."""
    a, b = a[np.isfinite(a)], b[np.isfinite(b)]
    if not len(a) or not len(b):
        return None
    q = np.linspace(0, 1, 101)
    return float(np.abs(np.quantile(a, q) - np.quantile(b, q)).mean())


def _front(cameras) -> str:
    return "CAM_FRONT" if "CAM_FRONT" in cameras else cameras[0]


def _palette_pixels(reader: EpisodeReader, episodes: list[int], real_only: bool, per_episode: int = 4) -> np.ndarray:
    px = []
    for i in episodes:
        a, b = reader.episode_bounds(i)
        steps = np.arange(a, b)
        if real_only:
            steps = steps[~_imagined(reader, i, b - a)]
        for s in steps[np.linspace(0, len(steps) - 1, min(per_episode, len(steps))).astype(int)] if len(steps) else []:
            for c in reader.cameras:
                px.append(reader.read(f"obs/{c}", int(s), int(s) + 1)[0, ::4, ::4].reshape(-1, 3))
    if not px:
        raise StoreError(f"{reader.path} holds no real frame to learn the real palette from: pass --reference")
    return np.concatenate(px)


def score_dataset(store: str | Path, reference: str | Path | None = None, episodes: list[int] | None = None,
                  progress: bool = True) -> dict:
    """Score every episode of ``store`` (or ``episodes``) and the dataset against ``reference``.

    Returns ``{"episodes": [...], "dataset": {...}, "reference": {...} | None}``; ``quality`` of each
    episode is relative to the reference's means (module docstring).
    """
    reader = EpisodeReader(store)
    if reader.num_episodes == 0:
        raise StoreError(f"{store} holds no episode to score")
    ref_reader = EpisodeReader(reference) if reference is not None else None
    if ref_reader is not None and (list(ref_reader.cameras) != list(reader.cameras)
                                   or ref_reader.image_size != reader.image_size):
        raise StoreError(f"the reference {reference} has cameras {list(ref_reader.cameras)} at {ref_reader.image_size}px; "
                         f"{store} has {list(reader.cameras)} at {reader.image_size}px: score against the same rig")
    pairs, front = seams(reader.cameras, reader.image_size), _front(reader.cameras)
    eps = list(range(reader.num_episodes)) if episodes is None else list(episodes)
    if ref_reader is not None:  # up to 40 reference episodes spread over the store
        ref_eps = sorted(set(np.linspace(0, ref_reader.num_episodes - 1, min(ref_reader.num_episodes, 40)).astype(int)))
        palette = fit_palette(_palette_pixels(ref_reader, ref_eps, real_only=False))
    else:  # a generated store's real context frames; a real store's own frames
        palette = fit_palette(_palette_pixels(reader, eps, real_only="real_frame" in reader.extras))
    rows = [episode_scores(reader, i, palette, pairs, front)
            for i in tqdm(eps, desc="quality", unit="ep", disable=not progress)]
    ref_summary = None
    if ref_reader is not None:
        length = int(np.median([r["steps"] for r in rows]))
        rng = np.random.default_rng(0)
        ref_rows = []
        for i in ref_eps:  # a window as long as this store's episodes, at a seeded offset
            n = int(ref_reader.episode_lengths()[i])
            start = int(rng.integers(0, max(1, n - length + 1)))
            ref_rows.append(episode_scores(ref_reader, i, palette, pairs, front, (start, min(n, start + length))))
        seam_ref = _mean(np.array([r["seam"] for r in ref_rows if r["seam"] is not None], np.float64))
        pal_ref = _mean(np.array([r["palette"] for r in ref_rows], np.float64))
        for r in ref_rows:
            r["quality"] = _quality(r, seam_ref, pal_ref)
        ref_summary = _summary(ref_rows) | {"store": str(reference), "episodes_scored": len(ref_rows),
                                            "window_steps": length}
        ref_curv = np.concatenate([r["_curv"] for r in ref_rows])
    elif "real_frame" in reader.extras:
        seam_ref = _mean(np.array([r["real_seam"] for r in rows if r["real_seam"] is not None], np.float64))
        pal_ref = _mean(np.array([r["real_palette"] for r in rows if r["real_palette"] is not None], np.float64))
        ref_curv = None
    else:  # a real store against itself
        seam_ref = _mean(np.array([r["seam"] for r in rows if r["seam"] is not None], np.float64))
        pal_ref = _mean(np.array([r["palette"] for r in rows], np.float64))
        ref_curv = None
    for r in rows:
        r["quality"] = _quality(r, seam_ref, pal_ref)
    summary = _summary(rows) | {"store": str(store), "episodes_scored": len(rows), "seam_reference": seam_ref,
                                "palette_reference": pal_ref}
    if ref_curv is not None:
        summary["curvature_wasserstein"] = wasserstein_1d(np.concatenate([r["_curv"] for r in rows]), ref_curv)
    return {"episodes": [{k: v for k, v in r.items() if not k.startswith("_")} for r in rows],
            "dataset": summary, "reference": ref_summary, "_rows": rows}


def _quality(row: dict, seam_ref: float | None, pal_ref: float | None) -> float:
    parts = []
    if row["seam"] is not None and seam_ref is not None:
        parts.append(min(1.0, max(seam_ref, 0.5) / max(row["seam"], 1e-6)))
    if pal_ref is not None:
        parts.append(min(1.0, max(pal_ref, 0.5) / max(row["palette"], 1e-6)))
    return float(np.prod(parts) ** (1 / len(parts))) if parts else float("nan")


def _summary(rows: list[dict]) -> dict:
    def avg(k):
        return _mean(np.array([r[k] for r in rows if r.get(k) is not None], np.float64))

    out = {k: avg(k) for k in ("seam", "palette", "drift", "entropy", "curvature", "curve", "off_road", "braking")}
    out["quality"] = avg("quality") if rows and "quality" in rows[0] else None
    out["diversity"] = _diversity([r["_thumbs"] for r in rows])
    curv = np.concatenate([r["_curv"] for r in rows])
    out["curvature_hist"] = np.histogram(np.clip(curv[np.isfinite(curv)], -1, 1), bins=10, range=(-1, 1))[0].tolist()
    return out


def write_quality(result: dict, out: str | Path, store: str | Path, best_worst: int = 3) -> dict:
    """Write ``quality.json`` and ``quality_sheet.png`` (the best and the worst episodes) into ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rows = sorted(result["episodes"], key=lambda r: -r["quality"])
    picks = rows[:best_worst] + [r for r in rows[-best_worst:] if r not in rows[:best_worst]]
    reader = EpisodeReader(store)
    sheet_rows, labels = [], []
    for rank, r in enumerate(picks):
        ep = reader.episode(r["episode"])
        steps = np.linspace(0, len(ep.action) - 1, 6).astype(int)
        short = [c.removeprefix("CAM_") for c in reader.cameras]
        sheet_rows.append([mosaic([ep.obs[c][s] for c in reader.cameras], names=short, cols=2) for s in steps])
        tag = "best" if rank < best_worst else "worst"
        labels.append(f"{tag}: episode {r['episode']}  quality {r['quality']:.2f}  seam {_fmt(r['seam'])}  "
                      f"palette {r['palette']:.1f}  entropy {_fmt(r['entropy'])}")
    paths = {"sheet": str(save_png(out / "quality_sheet.png",
                                   contact_sheet(sheet_rows, labels, col_labels=[f"step {s}" for s in steps])))}
    report = {k: v for k, v in result.items() if not k.startswith("_")}
    atomic_write_json(out / "quality.json", report)
    paths["json"] = str(out / "quality.json")
    return paths


def _fmt(x) -> str:
    return "-" if x is None else f"{x:.2f}"


def summary_lines(result: dict) -> list[str]:
    """A side-by-side table of the dataset's figures and the reference's."""
    d, ref = result["dataset"], result["reference"] or {}
    keys = ("quality", "seam", "palette", "drift", "entropy", "curvature", "curve", "off_road", "braking", "diversity")
    lines = ["| measure | this store | reference |", "| --- | --- | --- |"]
    lines += [f"| {k} | {_fmt(d.get(k))} | {_fmt(ref.get(k))} |" for k in keys]
    if d.get("curvature_wasserstein") is not None:
        lines.append(f"| curvature W1 to reference | {d['curvature_wasserstein']:.3f} | 0 |")
    return lines
