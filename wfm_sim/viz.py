"""Pictures people would rather look at than read: mosaics, PNG contact sheets, mp4 videos, plots.

Frames are uint8 ``(H, W, 3)`` RGB; multi-camera frames are ``{camera: frame}`` or ``(V, H, W, 3)``.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np


def _label(img: np.ndarray, text: str, scale: float = 0.3) -> np.ndarray:
    img = img.copy()
    cv2.putText(img, text, (2, 9), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 2, cv2.LINE_AA)
    cv2.putText(img, text, (2, 9), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1, cv2.LINE_AA)
    return img


def mosaic(views, names: list[str] | None = None, cols: int | None = None, pad: int = 1) -> np.ndarray:
    """Tile ``(V, H, W, 3)`` frames (or a ``{name: frame}`` dict) into one image, labelled."""
    if isinstance(views, dict):
        names, views = list(views), list(views.values())
    views = [np.asarray(v) for v in views]
    v = len(views)
    cols = cols or (v if v <= 3 else int(np.ceil(np.sqrt(v))))
    rows = int(np.ceil(v / cols))
    h, w = views[0].shape[:2]
    out = np.full((rows * (h + pad) - pad, cols * (w + pad) - pad, 3), 255, np.uint8)
    for i, img in enumerate(views):
        r, c = divmod(i, cols)
        if names and h >= 48:
            img = _label(img, names[i])
        out[r * (h + pad) : r * (h + pad) + h, c * (w + pad) : c * (w + pad) + w] = img
    return out


def upscale(img: np.ndarray, factor: int) -> np.ndarray:
    return cv2.resize(img, (img.shape[1] * factor, img.shape[0] * factor), interpolation=cv2.INTER_NEAREST)


def save_png(path: str | Path, img: np.ndarray) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), cv2.cvtColor(np.ascontiguousarray(img), cv2.COLOR_RGB2BGR)):
        raise OSError(f"could not write {path}")
    return path


def contact_sheet(rows: list[list[np.ndarray]], row_labels: list[str] | None = None, scale: int = 2) -> np.ndarray:
    """A grid: each row is a list of equally sized RGB images (e.g. one episode's frames over time)."""
    lines = []
    for i, row in enumerate(rows):
        line = np.concatenate([np.pad(im, ((1, 1), (1, 1), (0, 0)), constant_values=255) for im in row], axis=1)
        line = upscale(line, scale)
        if row_labels:
            bar = np.full((14, line.shape[1], 3), 255, np.uint8)
            cv2.putText(bar, row_labels[i], (3, 11), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
            line = np.concatenate((bar, line), axis=0)
        lines.append(line)
    width = max(x.shape[1] for x in lines)
    lines = [np.pad(x, ((0, 0), (0, width - x.shape[1]), (0, 0)), constant_values=255) for x in lines]
    return np.concatenate(lines, axis=0)


def write_mp4(path: str | Path, frames: list[np.ndarray], fps: float = 10.0, scale: int = 1) -> Path:
    """Write RGB frames as an mp4 (OpenCV's mp4v codec, no ffmpeg needed)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not frames:
        raise ValueError("write_mp4 needs at least one frame")
    frames = [upscale(f, scale) if scale > 1 else f for f in frames]
    h, w = frames[0].shape[:2]
    h2, w2 = h + h % 2, w + w % 2
    vw = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), float(fps), (w2, h2))
    if not vw.isOpened():
        raise OSError(f"OpenCV could not open an mp4 writer for {path}")
    for f in frames:
        f = np.pad(f, ((0, h2 - h), (0, w2 - w), (0, 0)))
        vw.write(cv2.cvtColor(np.ascontiguousarray(f), cv2.COLOR_RGB2BGR))
    vw.release()
    return path


def read_mp4(path: str | Path) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, f = cap.read()
        if not ok:
            break
        frames.append(cv2.cvtColor(f, cv2.COLOR_BGR2RGB))
    cap.release()
    return frames
