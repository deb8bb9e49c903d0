"""Validation of what callers hand an imagined env: actions and reset context. Errors say what
was expected, and are raised before any state changes."""

from __future__ import annotations

import numpy as np
import torch
from gymnasium import spaces


def check_actions(env, actions) -> torch.Tensor:
    """``(N, A)`` Box / ``(N,)`` Discrete actions -> a ``(N, k, ...)`` tensor on the model's device."""
    space, n = env.single_action_space, env.num_envs
    a = actions.detach().cpu().numpy() if isinstance(actions, torch.Tensor) else np.asarray(actions)
    want = (n,) + space.shape
    if a.shape != want:
        raise ValueError(f"actions must have shape {want} (num_envs={n}, action shape {space.shape}), got {a.shape}")
    if not (np.issubdtype(a.dtype, np.number) or a.dtype == bool):
        raise TypeError(f"actions must be numeric, got dtype {a.dtype}")
    if isinstance(space, (spaces.Discrete, spaces.MultiDiscrete)):
        if not np.issubdtype(a.dtype, np.integer):
            raise TypeError(f"discrete actions must be integers, got dtype {a.dtype}")
        hi = space.n if isinstance(space, spaces.Discrete) else space.nvec
        if (a < 0).any() or (a >= hi).any():
            raise ValueError(f"discrete actions must lie in [0, {hi}), got {a.tolist()}")
    else:
        if not np.isfinite(a).all():
            raise ValueError(f"actions contain NaN or inf: {a.tolist()}")
        tol = 1e-6
        bad = (a < space.low - tol) | (a > space.high + tol)
        if bad.any():
            raise ValueError(f"actions outside the action space bounds low={space.low.tolist()} "
                             f"high={space.high.tolist()}: got {a.tolist()}")
    t = torch.as_tensor(a, device=env.model.device)
    return env.model.check_action(t, (n,))


def _as_frames(env, frames, r: int) -> torch.Tensor:
    """Caller context frames -> ``(r, C, V, H, W, 3)`` uint8."""
    cams, s = env.cameras, env.cfg.tokenizer.image_size
    if isinstance(frames, dict):
        missing = [c for c in cams if c not in frames]
        if missing:
            raise ValueError(f"context frames miss camera(s) {missing}; expected keys {list(cams)}")
        frames = np.stack([np.asarray(frames[c]) for c in cams], axis=-4)  # (..., C, V, H, W, 3)
    a = frames.detach().cpu().numpy() if isinstance(frames, torch.Tensor) else np.asarray(frames)
    if len(cams) == 1 and a.ndim in (4, 5) and a.shape[-4] != 1:
        a = a[..., None, :, :, :]  # single camera: (C, H, W, 3) -> (C, 1, H, W, 3)
    if a.ndim == 5:
        a = np.broadcast_to(a, (r,) + a.shape)
    want = f"(C, {len(cams)}, {s}, {s}, 3) uint8 (or a dict camera -> (C, {s}, {s}, 3))"
    if a.ndim != 6 or a.shape[0] != r or a.shape[2:] != (len(cams), s, s, 3):
        raise ValueError(f"context frames must be {want}, optionally with a leading dim of {r}; got shape {a.shape}")
    if a.dtype != np.uint8:
        raise TypeError(f"context frames must be uint8, got {a.dtype}")
    c_max = env.cfg.backbone.max_frames - 1
    if not 1 <= a.shape[1] <= c_max:
        raise ValueError(f"context must hold 1..{c_max} frames, got {a.shape[1]}")
    return torch.from_numpy(np.array(a, copy=True))


def batch_context(env, rows: np.ndarray, options: dict):
    """Context frames, actions and a description for the sub-envs ``rows``."""
    r = len(rows)
    unknown = set(options) - {"frames", "actions", "episode"}
    if unknown:
        raise ValueError(f"unknown reset options {sorted(unknown)}; use frames/actions, episode, prompt or reset_mask")
    if "frames" in options:
        frames = _as_frames(env, options["frames"], r)
        c = frames.shape[1]
        acts = options.get("actions")
        if acts is None:
            if c > 1:
                raise ValueError(f"a context of {c} frames needs the {c - 1} actions between them: options['actions']")
            acts = np.zeros((r, 0) + env.single_action_space.shape, np.float32)
        acts = np.asarray(acts)
        if acts.ndim == len(env.single_action_space.shape) + 1:
            acts = np.broadcast_to(acts, (r,) + acts.shape)
        if acts.shape[:2] != (r, c - 1):
            raise ValueError(f"context actions must have shape ({c - 1},) + action shape, got {acts.shape[1:]}")
        return frames, torch.as_tensor(np.array(acts, copy=True)), ["caller frames"] * r
    if env.contexts is None:
        raise ValueError("no context to start from: pass dataset=PATH when making the env, "
                         "or reset(options={'frames': ..., 'actions': ...})")
    episode = options.get("episode")
    picks = [env.contexts.pick(env._row_rngs[i], episode) for i in rows]
    frames = torch.from_numpy(np.stack([p[0] for p in picks]))
    acts = torch.from_numpy(np.stack([p[1] for p in picks]))
    return frames, acts, [p[2] for p in picks]
