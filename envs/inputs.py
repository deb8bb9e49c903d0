"""Validation of the reset context callers hand an imagined env (actions are checked against
the action space by :func:`wfm_sim.envs.spaces.check_actions`). Errors say what was expected,
and are raised before any state changes."""

from __future__ import annotations

import numpy as np
import torch

from wfm_sim.envs.contexts import Context
from wfm_sim.envs.spaces import check_actions, model_action_space


def _from_contexts(env, ctx, r: int) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """``Context`` objects (one, or one per row) -> frames ``(r, C, V, H, W, 3)`` and actions."""
    ctxs = [ctx] * r if isinstance(ctx, Context) else list(ctx)
    if len(ctxs) != r or not all(isinstance(c, Context) for c in ctxs):
        raise ValueError(f"options['context'] must be a Context or a list of {r} Contexts (one per sub-env reset)")
    for c in ctxs:
        if set(c.cameras) != set(env.cameras):
            raise ValueError(f"the context has cameras {list(c.cameras)}, but this model sees {list(env.cameras)}: "
                             "start it from an env of the same camera rig (its real twin)")
    # The longest 1 + k*m frames every context holds and the model takes.
    k, most = env.cfg.frames_per_step, env.cfg.max_context_latent_frames
    n = min(len(c) for c in ctxs)
    ctxs = [c.last(1 + k * min((n - 1) // k, most - 1)) for c in ctxs]
    frames = np.stack([np.stack([c.frames[cam] for cam in env.cameras], axis=1) for c in ctxs])
    frames = _as_frames(env, frames, r)
    acts = np.stack([np.asarray(c.actions) for c in ctxs])
    return frames, torch.as_tensor(acts), [c.origin for c in ctxs]


def _as_frames(env, frames, r: int) -> torch.Tensor:
    """Caller context frames -> ``(r, C, V, H, W, 3)`` uint8."""
    cams, s = env.cameras, env.cfg.tokenizer.image_size
    if isinstance(frames, dict):
        missing = [c for c in cams if c not in frames]
        if missing:
            raise ValueError(f"context frames miss camera(s) {missing}; expected keys {list(cams)}")
        frames = np.stack([np.asarray(frames[c]) for c in cams], axis=-4)  # (..., C, V, H, W, 3)
    a = frames.detach().cpu().numpy() if isinstance(frames, torch.Tensor) else np.asarray(frames)
    if len(cams) == 1 and (a.ndim == 4 or (a.ndim == 5 and a.shape[-4] != 1)):
        a = a[..., None, :, :, :]  # single camera: (C, H, W, 3) -> (C, 1, H, W, 3)
    if a.ndim == 5:
        a = np.broadcast_to(a, (r,) + a.shape)
    want = f"(C, {len(cams)}, {s}, {s}, 3) uint8 (or a dict camera -> (C, {s}, {s}, 3))"
    if a.ndim != 6 or a.shape[0] != r or a.shape[2:] != (len(cams), s, s, 3):
        raise ValueError(f"context frames must be {want}, optionally with a leading dim of {r}; got shape {a.shape}")
    if a.dtype != np.uint8:
        raise TypeError(f"context frames must be uint8, got {a.dtype}")
    env.cfg.context_latent_frames(a.shape[1])  # 1 + k*m frames, within the model's window
    return torch.from_numpy(np.array(a, copy=True))


def frame_action_shape(env) -> tuple[int, ...]:
    """The shape of ONE frame's action: an env step takes ``k`` of them (``(k, A)`` / ``(k,)``)."""
    return tuple(model_action_space(env.cfg, group=1).shape)


def batch_context(env, rows: np.ndarray, options: dict, rngs: list[np.random.Generator]):
    """Context frames, actions and a description for the sub-envs ``rows`` (``rngs[i]`` picks
    sub-env i's dataset context). The context's actions are checked against the action space
    like a step's: an action of 10**6 in a context would condition the model on nonsense."""
    frames, acts, origin = _batch_context(env, rows, options, rngs)
    space = model_action_space(env.cfg, group=1)
    flat = acts.reshape((-1,) + tuple(space.shape))
    check_actions(space, flat.numpy(), (len(flat),), who=f"context actions (from {origin[0]})")
    return frames, acts, origin


def _batch_context(env, rows: np.ndarray, options: dict, rngs: list[np.random.Generator]):
    r = len(rows)
    unknown = set(options) - {"frames", "actions", "episode", "context"}
    if unknown:
        raise ValueError(f"unknown reset options {sorted(unknown)}; use context, frames/actions, episode, prompt or reset_mask")
    if "context" in options:
        return _from_contexts(env, options["context"], r)
    if "frames" in options:
        frames = _as_frames(env, options["frames"], r)
        c = frames.shape[1]
        acts = options.get("actions")
        shape = frame_action_shape(env)
        if acts is None:
            if c > 1:
                raise ValueError(f"a context of {c} frames needs the {c - 1} actions between them: options['actions']")
            acts = np.zeros((r, 0) + shape, np.float32)
        acts = np.asarray(acts)
        if acts.ndim == len(shape) + 1:
            acts = np.broadcast_to(acts, (r,) + acts.shape)
        if acts.shape[:2] != (r, c - 1) or acts.shape[2:] != shape:
            raise ValueError(f"context actions must have shape {(c - 1,) + shape} (one action of shape {shape} "
                             f"between each pair of frames), got {acts.shape[1:]}")
        return frames, torch.as_tensor(np.array(acts, copy=True)), ["caller frames"] * r
    if env.contexts is None:
        raise ValueError("no context to start from: pass dataset=PATH when making the env, "
                         "or reset(options={'frames': ..., 'actions': ...})")
    episode = options.get("episode")
    picks = [env.contexts.pick(rngs[i], episode) for i in rows]
    frames = torch.from_numpy(np.stack([p[0] for p in picks]))
    acts = torch.from_numpy(np.stack([p[1] for p in picks]))
    return frames, acts, [p[2] for p in picks]
