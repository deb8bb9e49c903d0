"""The observation and action spaces of a camera rig, built in one place for both worlds.

A real-simulator twin (:mod:`wfm_sim.envs.real`) and the imagined env of a model trained on
that simulator (:mod:`wfm_sim.envs.imagined`) call these same functions, so their spaces are
equal by construction (and a test checks it), and one policy runs in both unchanged.

Dimension legend: :mod:`wfm_sim.dims`.
"""

from __future__ import annotations

import numpy as np
from gymnasium import spaces


def pixel_space(cameras: tuple[str, ...], size: int, frames: int | None = None) -> spaces.Space:
    """One camera: ``Box(0, 255, (H, W, 3), uint8)``; several: a ``Dict`` keyed by camera name.

    ``frames`` = k gives ``(f, H, W, 3)`` per camera: every frame of a k-frame env step.
    """
    shape = (size, size, 3) if frames is None else (frames, size, size, 3)
    if len(cameras) == 1:
        return spaces.Box(0, 255, shape, np.uint8)
    return spaces.Dict({cam: spaces.Box(0, 255, shape, np.uint8) for cam in cameras})


def token_space(cameras: tuple[str, ...], grid: int, vocab: int) -> spaces.Box:
    """Token observations: ``Box(0, vocab-1, (V, g, g), int64)``."""
    return spaces.Box(0, vocab - 1, (len(cameras), grid, grid), np.int64)


def action_space(spec: dict, group: int = 1) -> spaces.Space:
    """A Gymnasium space from an action spec (the store's ``action_space`` attribute).

    Args:
        spec: ``{"type": "box", "shape": [A], "low": [...], "high": [...]}`` or
            ``{"type": "discrete", "n": K}``.
        group: actions per latent frame (``k`` for tokenizers that group k frames); k > 1 gives
            ``(f, a)`` boxes and ``MultiDiscrete([K] * k)``.
    """
    if spec.get("type") == "discrete":
        n = int(spec["n"])
        return spaces.Discrete(n) if group == 1 else spaces.MultiDiscrete([n] * group)
    if spec.get("type") != "box":
        raise ValueError(f"action spec must have type 'box' or 'discrete', got {spec!r}")
    lo, hi = np.asarray(spec["low"], np.float32), np.asarray(spec["high"], np.float32)
    if group > 1:
        lo, hi = np.tile(lo, (group, 1)), np.tile(hi, (group, 1))
    return spaces.Box(lo, hi, dtype=np.float32)


def model_action_space(cfg, group: int | None = None) -> spaces.Space:
    """The action space of a world model's config: its ``ActionSpec``, grouped by its action group
    (an env step), or by ``group`` (``group=1``: the action of one frame)."""
    a = cfg.action
    spec = {"type": "discrete", "n": a.n} if a.kind == "discrete" else {"type": "box", "low": a.low, "high": a.high}
    return action_space(spec, cfg.frames_per_step if group is None else group)


def _verb(who: str) -> str:
    """'contain' after plural nouns ("actions (num_envs=2)", "context actions"), 'contains' after "action"."""
    return "contain" if who.split(" (")[0].endswith("s") else "contains"


def check_actions(space: spaces.Space, actions, lead: tuple[int, ...] = (), who: str = "actions") -> np.ndarray:
    """Validate ``actions`` against ``space`` (with ``lead`` batch dims); returns them as an array.

    Raises ``ValueError`` / ``TypeError`` that name the expected shape, dtype and bounds, before
    anything is stepped.
    """
    want = tuple(lead) + tuple(space.shape)
    try:
        a = actions.detach().cpu().numpy() if hasattr(actions, "detach") else np.asarray(actions)
    except (ValueError, TypeError):  # numpy's "inhomogeneous shape" for ragged lists
        raise ValueError(f"{who} must be an array of shape {want} (action shape {space.shape}); got a ragged "
                         f"sequence that is not one array") from None
    if a.shape != want:
        raise ValueError(f"{who} must have shape {want} (action shape {space.shape}), got {a.shape}")
    if not (np.issubdtype(a.dtype, np.number) or a.dtype == bool) or np.iscomplexobj(a):
        raise TypeError(f"{who} must be real numeric values, got dtype {a.dtype}")
    if isinstance(space, (spaces.Discrete, spaces.MultiDiscrete)):
        if not np.issubdtype(a.dtype, np.integer):
            raise TypeError(f"discrete {who} must be integers, got dtype {a.dtype}")
        hi = space.n if isinstance(space, spaces.Discrete) else space.nvec
        if (a < 0).any() or (a >= hi).any():
            raise ValueError(f"discrete {who} must lie in [0, {hi}), got {a.tolist()}")
        return a
    if not np.isfinite(a).all():
        raise ValueError(f"{who} {_verb(who)} NaN or inf{_where(~np.isfinite(a), a, len(lead))}")
    tol = 1e-6
    out = (a < space.low - tol) | (a > space.high + tol)
    if out.any():
        raise ValueError(f"{who} outside the action space bounds low={space.low.tolist()} "
                         f"high={space.high.tolist()}{_where(out, a, len(lead))}")
    return a.astype(space.dtype, copy=False)


def _where(bad: np.ndarray, a: np.ndarray, lead: int) -> str:
    """Which rows hold the bad values, and the first of them: a message of one short line at any batch size."""
    if lead == 0:
        return f": got {a.tolist()}"
    rows = np.flatnonzero(bad.reshape(int(np.prod(bad.shape[:lead])), -1).any(axis=1))
    first = a.reshape(-1, *a.shape[lead:])[rows[0]]
    more = f" and {len(rows) - 1} more" if len(rows) > 1 else ""
    return f": row {int(rows[0])}{more} of {int(np.prod(bad.shape[:lead]))}, e.g. {first.tolist()}"
