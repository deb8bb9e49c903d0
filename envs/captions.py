"""Scene captions from simulator state, computed at recording time (the text a text-conditioned
world model is trained with and prompted by).

CarRacing: what the road does over the next stretch the car will drive, from the track's
centre line and the car's pose: the heading change of the track between the point nearest the
car and ``LOOKAHEAD`` points further in the car's direction of travel, or that the car is off
the road. Captions are stored as ids into :data:`CAR_CAPTIONS` (a fixed, versioned list).
"""

from __future__ import annotations

import numpy as np

CAR_CAPTIONS = ("straight road", "left curve ahead", "right curve ahead", "sharp left curve ahead",
                "sharp right curve ahead", "off the road on grass")
"""Caption ids -> text. Append only: stores hold the ids."""

LOOKAHEAD = 12
"""Track points ahead (about 80 world units, 1.5-3 s at the recorded driving speeds)."""
CURVE, SHARP = 0.35, 0.9
"""Heading change (radians) over the lookahead above which the road is a curve, a sharp curve."""


def _wrap(a: np.ndarray | float) -> np.ndarray | float:
    return (a + np.pi) % (2 * np.pi) - np.pi


def road_turn(state) -> float:
    """The track's heading change (radians, > 0 turning left) over the next ``LOOKAHEAD`` points
    in the car's direction of travel, from a :class:`~wfm_sim.envs.sources.CarState`."""
    track = np.asarray(state.track, np.float64)
    n = len(track)
    i = int(np.argmin(((track - state.position) ** 2).sum(1)))
    tangent = track[(i + 1) % n] - track[i]
    forward = np.array([-np.sin(state.angle), np.cos(state.angle)])  # heading 0 faces +y
    step = 1 if float(tangent @ forward) >= 0 else -1  # the car may drive the track backwards

    def heading(j):
        d = track[(j + step) % n] - track[j % n]
        return np.arctan2(d[1], d[0])

    turns = [_wrap(heading(i + step * (k + 1)) - heading(i + step * k)) for k in range(LOOKAHEAD)]
    return float(np.sum(turns))


def car_caption(state) -> int:
    """The caption id (into :data:`CAR_CAPTIONS`) of a CarRacing state."""
    if not state.on_road:
        return CAR_CAPTIONS.index("off the road on grass")
    turn = road_turn(state)
    if abs(turn) < CURVE:
        return 0
    side = "left" if turn > 0 else "right"
    return CAR_CAPTIONS.index(f"sharp {side} curve ahead" if abs(turn) >= SHARP else f"{side} curve ahead")


def caption_text(ids) -> list[str]:
    """Caption ids -> their text."""
    ids = np.asarray(ids).reshape(-1)
    bad = ids[(ids < 0) | (ids >= len(CAR_CAPTIONS))]
    if len(bad):
        raise ValueError(f"caption ids must lie in [0, {len(CAR_CAPTIONS)}), got {bad.tolist()[:5]}")
    return [CAR_CAPTIONS[int(i)] for i in ids]
