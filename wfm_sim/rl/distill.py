"""Distil a pixel actor-critic into a token (latent) actor-critic on real frames.

A latent actor-critic (``obs='tokens'``) trains in imagination at the speed of the backbone
alone, but starting it from scratch throws away what an existing pixel policy already knows.
Distillation carries it over: the pixel teacher labels real frames (its Gaussian mean before
the squash, and its value), the student reads the same frames as the world model's token ids
and regresses both; the student takes the teacher's action noise (``log_std``). A tenth of
the frames (whole episodes, or the last tenth of a single one) is held out to say how closely the student follows.

Dimension legend: :mod:`wfm_sim.dims`.
"""

from __future__ import annotations

import numpy as np
import torch
from tqdm.auto import tqdm

from wfm_sim.datasets import EpisodeReader
from wfm_sim.policies.actor_critic import ActorCritic


def store_frames(store: str, cameras: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Every frame of a store ``(t, v, H, W, 3)`` uint8 (cameras in ``cameras``' order), and each
    frame's episode index ``(t,)``."""
    r = EpisodeReader(store)
    missing = [c for c in cameras if c not in r.cameras]
    if missing:
        raise ValueError(f"{store} has cameras {list(r.cameras)}; the policy reads {list(cameras)}")
    frames = np.stack([r.read(f"obs/{c}", 0, r.num_steps) for c in cameras], axis=1)
    episode = np.repeat(np.arange(r.num_episodes), r.episode_lengths())
    return frames, episode


@torch.no_grad()
def _labels(teacher: ActorCritic, student: ActorCritic, frames: np.ndarray, chunk: int = 256):
    """Teacher means (pre-squash) and values, and the student's inputs, for every frame."""
    mean, value, ids = [], [], []
    for i in range(0, len(frames), chunk):
        x = torch.as_tensor(frames[i:i + chunk])
        h = teacher.features(teacher.observe(x))
        mean.append(teacher.pi(h).float())
        value.append(teacher.value(h).float())
        ids.append(student.observe(x))
    return torch.cat(mean), torch.cat(value), torch.cat(ids)


def _held_out(episode: np.ndarray) -> np.ndarray:
    """Every tenth episode (at least one, never all); one episode alone: its last tenth."""
    episodes = np.unique(episode)
    if len(episodes) == 1:
        held = np.zeros(len(episode), bool)
        held[len(episode) - max(1, len(episode) // 10):] = True
        return held
    return np.isin(episode, episodes[::10] if len(episodes) >= 10 else episodes[-1:])


def distill(student: ActorCritic, teacher: ActorCritic, frames: np.ndarray, episode: np.ndarray, steps: int = 1500,
            batch: int = 256, lr: float = 1e-3, seed: int = 0, progress: bool = True) -> dict:
    """Fit ``student`` (tokens) to ``teacher`` (pixels) on ``frames``; returns held-out figures.

    Args:
        frames: ``(t, v, H, W, 3)`` uint8 real frames of the student's rig.
        episode: ``(t,)`` episode index of each frame (held-out frames are whole episodes).
    """
    if teacher.cfg.obs != "pixels" or student.cfg.obs != "tokens":
        raise ValueError(f"distillation goes from a pixel policy to a token policy; got {teacher.cfg.obs} -> "
                         f"{student.cfg.obs}")
    if teacher.cfg.action_kind != "box" or student.cfg.action_kind != "box":
        raise ValueError("distillation matches Gaussian policies (Box actions)")
    if len(frames) < 20:
        raise ValueError(f"distillation needs real frames to label; got {len(frames)}")
    teacher.eval()
    mean, value, ids = _labels(teacher, student, frames)
    held = _held_out(episode)
    train_idx = torch.as_tensor(np.flatnonzero(~held))
    test_idx = torch.as_tensor(np.flatnonzero(held))
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        student.log_std.copy_(teacher.log_std)
    params = [p for n, p in student.named_parameters() if p.requires_grad and n != "log_std"]
    opt = torch.optim.Adam(params, lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    v_scale = value[train_idx].std().clamp_min(1e-6)
    student.train()
    bar = tqdm(range(steps), desc="distil policy (pixels -> tokens)", disable=not progress)
    for _ in bar:
        idx = train_idx[torch.randint(len(train_idx), (min(batch, len(train_idx)),), generator=gen)]
        h = student.features(ids[idx])
        loss = (student.pi(h) - mean[idx]).pow(2).mean() + ((student.value(h) - value[idx]) / v_scale).pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        bar.set_postfix(loss=f"{loss.item():.4f}")
    student.eval()
    with torch.no_grad():
        h = student.features(ids[test_idx])
        got, want = student.to_env(student.pi(h)), teacher.to_env(mean[test_idx])
        err = (got - want).abs().mean(0)
        v_r2 = 1 - (student.value(h) - value[test_idx]).pow(2).mean() / value[test_idx].var().clamp_min(1e-12)
    return {"frames": int(len(train_idx)), "held_out_frames": int(len(test_idx)), "steps": steps,
            "held_out_action_mae": [round(float(x), 4) for x in err],
            "held_out_teacher_action_std": [round(float(x), 4) for x in want.std(0)],
            "held_out_value_r2": round(float(v_r2), 4)}


__all__ = ["distill", "store_frames"]
