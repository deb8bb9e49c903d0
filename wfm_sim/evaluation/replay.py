"""Heads on real frames: what imagination would score if its predicted frames were perfect.

An imagined return can be wrong for two reasons: the predicted frames drift from reality (the
dynamics), or the reward / termination / success heads misread frames (the heads). Replaying a
real episode through the backbone with its real frames forced in (teacher forcing, the same
window, cache and heads as imagination) separates them:

    imagined - real = (imagined - replayed)  +  (replayed - real)
                        dynamics error           head error

A replayed episode ends where the termination head first fires, as an imagined one would.

Dimension legend: :mod:`wfm_sim.dims`.
"""

from __future__ import annotations

import numpy as np
import torch

from wfm_sim.datasets.episode import Episode
from wfm_sim.envs.contexts import Context


def _tokens(model, ctx: Context, ep: Episode) -> torch.Tensor:
    """``(t + s - 1, v*g*g)`` tokens of the context and the episode's later frames (obs[0] is the
    context's last frame)."""
    cams = model.cfg.cameras
    frames = np.stack([np.concatenate((ctx.frames[c], ep.obs[c][1:])) for c in cams], axis=1)  # (t+s-1, v, H, W, 3)
    return model.encode(torch.from_numpy(frames)[None])[0].flatten(1)


@torch.no_grad()
def replay_heads(model, contexts: list[Context], episodes: list[Episode], mode: str = "parallel") -> dict:
    """Read the heads along real episodes, episode ``i`` started from ``contexts[i]``.

    Returns ``return (E,)`` and, for models with a success head, ``success (E,)`` bool: the
    summed reward head up to its first predicted termination, and whether the success head
    fired on any step.
    """
    if len(contexts) != len(episodes):
        raise ValueError(f"one context per episode: got {len(contexts)} contexts for {len(episodes)} episodes")
    if not episodes:
        raise ValueError("replay needs at least one episode")
    if model.cfg.frames_per_step != 1:
        raise ValueError("replaying heads on real frames needs a model that predicts one frame per step "
                         f"(this one predicts {model.cfg.frames_per_step})")
    E, T = len(episodes), max(len(ep) for ep in episodes)
    C = {len(ctx) for ctx in contexts}
    if len(C) != 1:
        raise ValueError(f"every context must hold the same number of frames, got {sorted(C)}")
    C = C.pop()
    im = model.imagine(E, mode=mode)
    tokens = [_tokens(model, ctx, ep) for ctx, ep in zip(contexts, episodes)]
    ctx_actions = None
    if C > 1:
        ctx_actions = model.check_action(torch.as_tensor(np.stack([ctx.actions for ctx in contexts])), (E, C - 1))
    im.reset(None, tokens=torch.stack([t[:C] for t in tokens]), actions=ctx_actions, seeds=[0] * E)
    ret, succ = np.zeros(E), np.zeros(E, bool)
    alive = np.ones(E, bool)
    for j in range(T):
        rows = np.flatnonzero(alive & np.array([len(ep) > j for ep in episodes]))
        if not rows.size:
            break
        act = model.check_action(torch.as_tensor(np.stack([episodes[i].action[j] for i in rows])), (len(rows),))
        nxt = torch.stack([tokens[i][min(C + j, len(tokens[i]) - 1)] for i in rows])  # the last one is never read
        out = im.step(act, rows, frame=nxt)
        ret[rows] += out.reward.cpu().numpy()
        if out.success is not None:
            succ[rows] |= out.success.cpu().numpy()
        alive[rows[out.terminated.cpu().numpy()]] = False
    result = {"return": ret}
    if model.cfg.backbone.success_head:
        result["success"] = succ
    return result
