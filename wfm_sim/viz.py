"""Pictures people would rather look at than read: mosaics, PNG contact sheets, H.264 videos, plots.

Frames are uint8 ``(H, W, 3)`` RGB; multi-camera frames are ``{camera: frame}`` or ``(V, H, W, 3)``.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np


def label_bar(text: str, width: int, height: int = 16) -> np.ndarray:
    """A white strip with ``text`` in black, sized to be read at 100% zoom (cut to fit ``width``)."""
    bar = np.full((height, width, 3), 255, np.uint8)
    scale = 0.4 * height / 16
    while len(text) > 1 and cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)[0][0] > width - 4:
        text = text[:-2] + "~"
    cv2.putText(bar, text, (2, height - 5), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 1, cv2.LINE_AA)
    return bar


def mosaic(views, names: list[str] | None = None, cols: int | None = None, pad: int = 1, scale: int = 1) -> np.ndarray:
    """Tile ``(V, H, W, 3)`` frames (or a ``{name: frame}`` dict) into one image.

    With ``names``, each tile gets a label strip above it (not text drawn over a 64-pixel frame,
    which no one can read); ``scale`` upscales tiles first (nearest neighbour).
    """
    if isinstance(views, dict):
        names, views = list(views), list(views.values())
    views = [upscale(np.asarray(v), scale) if scale > 1 else np.asarray(v) for v in views]
    if names:
        views = [np.concatenate((label_bar(n, v.shape[1], 12 if v.shape[1] < 96 else 16), v), axis=0)
                 for n, v in zip(names, views)]
    v = len(views)
    cols = cols or (v if v <= 3 else int(np.ceil(np.sqrt(v))))
    rows = int(np.ceil(v / cols))
    h, w = views[0].shape[:2]
    out = np.full((rows * (h + pad) - pad, cols * (w + pad) - pad, 3), 255, np.uint8)
    for i, img in enumerate(views):
        r, c = divmod(i, cols)
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


def contact_sheet(rows: list[list[np.ndarray]], row_labels: list[str] | None = None, scale: int = 2,
                  max_width: int = 1600, col_labels: list[str] | None = None) -> np.ndarray:
    """A grid: each row is a list of equally sized RGB images (e.g. one episode's frames over time).

    A row wider than ``max_width`` pixels wraps onto several lines, so a sheet stays readable on a
    screen; each row starts with its label strip, and ``col_labels`` (e.g. the step of each
    column) label every image.
    """
    lines = []
    for i, row in enumerate(rows):
        tiles = [upscale(np.pad(im, ((1, 1), (1, 1), (0, 0)), constant_values=255), scale) for im in row]
        if col_labels:
            tiles = [np.concatenate((label_bar(col_labels[j], t.shape[1], 14), t), axis=0) for j, t in enumerate(tiles)]
        per_line = max(1, max_width // tiles[0].shape[1])
        chunks = [np.concatenate(tiles[k : k + per_line], axis=1) for k in range(0, len(tiles), per_line)]
        width = max(c.shape[1] for c in chunks)
        chunks = [np.pad(c, ((0, 0), (0, width - c.shape[1]), (0, 0)), constant_values=255) for c in chunks]
        if row_labels:
            chunks.insert(0, label_bar(row_labels[i], width, 18))
        lines.append(np.concatenate(chunks, axis=0))
        lines.append(np.full((6, width, 3), 255, np.uint8))
    width = max(x.shape[1] for x in lines)
    lines = [np.pad(x, ((0, 0), (0, width - x.shape[1]), (0, 0)), constant_values=255) for x in lines]
    return np.concatenate(lines[:-1], axis=0)


def write_mp4(path: str | Path, frames: list[np.ndarray], fps: float = 10.0, scale: int = 1, crf: int = 20) -> Path:
    """Write RGB frames as an H.264 mp4 (yuv420p, faststart) that browsers and players open."""
    import av

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not frames:
        raise ValueError("write_mp4 needs at least one frame")
    frames = [upscale(f, scale) if scale > 1 else f for f in frames]
    h, w = frames[0].shape[:2]
    h2, w2 = h + h % 2, w + w % 2  # yuv420p needs even sides
    tmp = path.with_name(path.name + ".partial.mp4")
    from fractions import Fraction

    with av.open(str(tmp), "w", options={"movflags": "+faststart"}) as out:
        stream = out.add_stream("libx264", rate=Fraction(fps).limit_denominator(1000))
        stream.width, stream.height, stream.pix_fmt = w2, h2, "yuv420p"
        stream.options = {"crf": str(crf), "preset": "medium"}
        for f in frames:
            f = np.pad(np.ascontiguousarray(f, np.uint8), ((0, h2 - h), (0, w2 - w), (0, 0)))
            for packet in stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    tmp.replace(path)  # a killed run leaves no half-written video under the final name
    return path


def read_mp4(path: str | Path) -> list[np.ndarray]:
    """Every frame of a video file (H.264, AV1, mp4v...) as RGB uint8 arrays."""
    import av

    with av.open(str(path)) as container:
        return [f.to_ndarray(format="rgb24") for f in container.decode(container.streams.video[0])]
