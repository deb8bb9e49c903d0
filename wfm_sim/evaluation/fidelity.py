"""Open-loop fidelity: roll the model out from real context with the real actions and compare
every predicted frame with the real one, at horizons 1..H, per camera.

Reported for each decoding mode (sequential / parallel) and decoder (token / diffusion), beside
two baselines: *repeat the last context frame*, and *the model with the actions shuffled across
windows* (the PSNR gap between true and shuffled actions is the controllability score of
Genie). Also: reward / termination / success head accuracy along the rollout, and the
decoder's reconstruction of real frames from their tokens (token decode vs diffusion decode).

Dimension legend: :mod:`wfm_sim.dims`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch

from wfm_sim.datasets.split import Split
from wfm_sim.datasets.windows import WindowDataset, collate
from wfm_sim.metrics import psnr, ssim
from wfm_sim.models.rng import RowNoise
from wfm_sim.models.rollout import Rollout
from wfm_sim.models.sampling import SamplingConfig
from wfm_sim.models.world_model import WorldModel
from wfm_sim.records import Batch
from wfm_sim.viz import label_bar, mosaic


@dataclass(frozen=True)
class EvalConfig:
    """Flags of ``wfm-sim evaluate``."""

    horizon: int = 8
    windows: int = 32
    """Evaluation windows, spread evenly over the chosen episodes."""
    split: str = "all"
    """'all' for a store the model never saw; 'val' for the held-out episodes of a training
    store (read from the model folder's split.json, see :func:`evaluate`)."""
    modes: tuple[str, ...] = ("sequential", "parallel")
    decoders: tuple[str, ...] = ("token", "diffusion")
    parallel_steps: int = 8
    diffusion_steps: int | None = None
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    batch: int = 32
    seed: int = 0
    """Sampling seeds of the rollouts."""

    def __post_init__(self):
        for name in ("horizon", "windows", "parallel_steps", "batch"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if self.diffusion_steps is not None and self.diffusion_steps < 1:
            raise ValueError(f"diffusion-steps must be >= 1, got {self.diffusion_steps}")


def eval_windows(model: WorldModel, data: str, cfg: EvalConfig, split: Split | None = None) -> Batch:
    """``cfg.windows`` real windows of ``context + horizon`` frames from ``data``."""
    c = model.cfg
    if cfg.split != "all" and split is None:
        raise ValueError(f"split={cfg.split!r} needs the model's recorded train/val split "
                         "(wfm_sim.datasets.split.load_split(MODEL_FOLDER, data)); use split='all' for an unseen store")
    ds = WindowDataset(data, c.context_video_frames + c.frames_per_step * cfg.horizon, split=cfg.split, cameras=c.cameras,
                       episodes=split if cfg.split != "all" else None)
    idx = np.linspace(0, len(ds) - 1, min(cfg.windows, len(ds))).astype(int)
    return collate([ds[int(i)] for i in idx])


@torch.no_grad()
def rollout(model: WorldModel, batch: Batch, mode: str, decoder: str, cfg: EvalConfig,
            actions: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Open-loop rollouts for every window through :class:`Rollout`; returns predicted
    frames ``(b, f*s, v, H, W, 3)`` (all f frames of each of the s latent steps) and head
    outputs ``(b, s)`` per latent step."""
    C, H, k = model.cfg.context_video_frames, cfg.horizon, model.cfg.frames_per_step
    n = batch.obs.shape[0]
    acts = batch.action if actions is None else actions
    frames, rewards, terms, succ = [], [], [], []
    for s in range(0, n, cfg.batch):
        obs, a = batch.obs[s : s + cfg.batch], acts[s : s + cfg.batch]
        r = obs.shape[0]
        im = Rollout(model, r, mode, cfg.sampling, cfg.parallel_steps, decoder, cfg.diffusion_steps)
        im.reset(None, obs[:, :C], a[:, : C - 1] if C > 1 else None, [cfg.seed * 7919 + s + i for i in range(r)])
        out_f, out_r, out_t, out_s = [], [], [], []
        for h in range(H):
            group = a[:, C - 1 + k * h : C - 1 + k * (h + 1)]  # the k actions of latent step h
            step = im.step(model.check_action(group.to(model.device), (r,)))
            out_f.append(step.frames.cpu())
            out_r.append(step.reward.cpu())
            out_t.append(step.terminated.cpu())
            out_s.append(step.success.cpu() if step.success is not None else torch.zeros(r, dtype=torch.bool))
        frames.append(torch.cat(out_f, 1))
        rewards.append(torch.stack(out_r, 1))
        terms.append(torch.stack(out_t, 1))
        succ.append(torch.stack(out_s, 1))
    return {"frames": torch.cat(frames), "reward": torch.cat(rewards), "terminated": torch.cat(terms),
            "success": torch.cat(succ)}


def frame_scores(pred: torch.Tensor, real: torch.Tensor) -> dict[str, list]:
    """PSNR / SSIM per horizon and camera for ``(b, s, v, H, W, 3)`` uint8 predictions."""
    n, H, V = pred.shape[:3]
    p = psnr(pred.flatten(0, 2), real.flatten(0, 2)).view(n, H, V)
    s = ssim(pred.flatten(0, 2), real.flatten(0, 2)).view(n, H, V)
    return {"psnr": p.mean(0).T.tolist(), "ssim": s.mean(0).T.tolist(),  # [camera][horizon]
            "psnr_mean": p.mean((0, 2)).tolist(), "ssim_mean": s.mean((0, 2)).tolist()}


def head_scores(out: dict, batch: Batch, C: int, H: int, k: int = 1) -> dict[str, float]:
    """Heads per latent step against the real values of its k frames (reward summed,
    termination any, success at the last), as the backbone is trained."""
    def group(x):
        return x[:, C - 1 : C - 1 + k * H].reshape(x.shape[0], H, k)

    real_r, real_t = group(batch.reward).sum(-1), group(batch.terminated).any(-1)
    scores = {"reward_mae": (out["reward"] - real_r).abs().mean().item(),
              "terminated_acc": (out["terminated"] == real_t).float().mean().item()}
    if batch.success is not None:
        scores["success_acc"] = (out["success"] == group(batch.success)[..., -1]).float().mean().item()
    return scores


@torch.no_grad()
def decoder_reconstruction(model: WorldModel, batch: Batch, cfg: EvalConfig) -> dict[str, dict[str, float]]:
    """Decode real frames from their own tokens: token decode vs diffusion decode (prev = real).

    Per-frame models decode frame ``C``; grouped models the ``k`` frames of the first latent frame
    after the context, from the tokens of the whole clip (the tokenizer is causal in time).
    """
    C, k = model.cfg.context_video_frames, model.cfg.frames_per_step
    tokens = model.encode(batch.obs[:, C : C + 1] if k == 1 else batch.obs[:, : C + k])  # (b, l, v, h, w)
    real, prev = batch.obs[:, C : C + k].flatten(0, 2), batch.obs[:, C - 1]

    def scores(frames):
        frames = frames.cpu().flatten(0, 2)
        return {"psnr": psnr(frames, real).mean().item(), "ssim": ssim(frames, real).mean().item()}

    out = {"token": scores(model.decode(tokens, "token"))}
    if model.decoder is not None:
        steps = sorted({1, model.decoder.cfg.steps} | ({cfg.diffusion_steps} if cfg.diffusion_steps else set()))
        for n in steps:
            noise = RowNoise(torch.arange(len(prev), device=model.device), torch.zeros(len(prev), dtype=torch.long,
                                                                                       device=model.device))
            out[f"diffusion_{n}step"] = scores(model.decode(tokens, "diffusion", n, prev=prev, noise=noise))
    return out


def evaluate(model: WorldModel, data: str, cfg: EvalConfig = EvalConfig(),
             split: Split | None = None) -> tuple[dict, dict]:
    """Run the whole evaluation. Returns ``(report, videos)``: a JSON-ready report and the
    frames for side-by-side videos (``{"real": ..., method: ...}``, each ``(b, s, v, H, W, 3)``).

    ``split``: the model's recorded split of ``data`` (needed for ``cfg.split`` 'val' / 'train').
    """
    model.eval()
    C, H, k = model.cfg.context_video_frames, cfg.horizon, model.cfg.frames_per_step
    batch = eval_windows(model, data, cfg, split)
    real = batch.obs[:, C : C + k * H]  # scores are per frame: k*H of them
    results, videos = {}, {"real": real}
    last = batch.obs[:, C - 1 : C].expand(-1, k * H, -1, -1, -1, -1)
    results["baseline/repeat_last"] = frame_scores(last, real)
    # Shuffle actions across windows (roll by one: every window gets another window's actions).
    shuffled = torch.cat((batch.action[:, :C - 1], torch.roll(batch.action[:, C - 1 :], 1, dims=0)), dim=1)
    decoders = [d for d in cfg.decoders if d == "token" or model.decoder is not None]
    if not decoders:
        raise ValueError(f"no decoder to evaluate: asked for {list(cfg.decoders)}, the model has no diffusion decoder")
    probe = decoders[0]  # the decoder the shuffled-action baseline (controllability) is measured with
    for mode in cfg.modes:
        for dec in decoders:
            t0 = time.perf_counter()
            out = rollout(model, batch, mode, dec, cfg)
            fps = out["frames"].shape[0] * k * H / (time.perf_counter() - t0)
            results[f"{mode}/{dec}"] = {**frame_scores(out["frames"], real), **head_scores(out, batch, C, H, k),
                                        "frames_per_s": fps}
            videos[f"{mode}/{dec}"] = out["frames"]
        sh = rollout(model, batch, mode, probe, cfg, actions=shuffled)
        results[f"shuffled_actions/{mode}/{probe}"] = frame_scores(sh["frames"], real)
    control = {}
    for mode in cfg.modes:
        t, s = results[f"{mode}/{probe}"]["psnr_mean"], results[f"shuffled_actions/{mode}/{probe}"]["psnr_mean"]
        control[f"{mode}/{probe}"] = float(np.mean(np.asarray(t) - np.asarray(s)))
    report = {
        "data": str(data), "split": cfg.split, "windows": int(batch.obs.shape[0]), "horizon": H,
        "frames_per_step": k, "horizon_frames": k * H, "context_frames": C, "cameras": list(model.cfg.cameras), "sampling": vars(cfg.sampling),
        "parallel_steps": cfg.parallel_steps, "results": results, "controllability_delta_psnr": control,
        "decoder_reconstruction": decoder_reconstruction(model, batch, cfg),
    }
    return report, videos


def side_by_side(videos: dict, window: int, cameras: list[str], scale: int = 2) -> list[np.ndarray]:
    """Frames of one window: a row per method (real first, its name in a strip above), cameras
    side by side (named in the top row), upscaled ``scale`` times so the labels stay legible."""
    rows = []
    H = videos["real"].shape[1]
    for h in range(H):
        lines = []
        for k, (name, v) in enumerate(videos.items()):
            names = cameras if (k == 0 and len(cameras) > 1) else None
            line = mosaic([v[window, h, c].numpy() for c in range(len(cameras))], names, cols=len(cameras), scale=scale)
            lines.append(np.concatenate((label_bar(name, line.shape[1], 16), line), axis=0))
        width = max(x.shape[1] for x in lines)
        rows.append(np.concatenate([np.pad(x, ((0, 0), (0, width - x.shape[1]), (0, 0)), constant_values=255)
                                    for x in lines], axis=0))
    return rows


__all__ = ["EvalConfig", "evaluate", "rollout", "side_by_side"]
