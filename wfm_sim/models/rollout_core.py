"""The one imagined rollout: context in, frames, rewards and terminations out.

:class:`RolloutCore` is the model-side step every imagined rollout goes through: the imagined
envs (and through them the demo, the Ray rollout workers and RL), and the open-loop fidelity
evaluation. It holds an :class:`~wfm_sim.models.imagination.Imagination` (KV cache, token
histories, one generator per row) and each row's last decoded frame, and does, per step:
advance the given rows by one latent frame, read the reward / termination / success heads,
and decode the new tokens to pixels conditioned on the previous frame.

Dimension legend: ``B`` rows, ``r`` rows in a call, ``C`` context frames, ``V`` cameras,
``H W`` pixels, ``g`` token grid, ``k`` actions per latent frame, ``a`` action features.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from wfm_sim.models.imagination import Imagination
from wfm_sim.models.sampling import SamplingConfig

DECODERS = ("token", "diffusion")


@dataclass
class CoreStep:
    """What one step of ``r`` rows produced (tensors on the model's device)."""

    tokens: torch.Tensor
    """``(r, V, g, g)`` int64 token ids of the new latent frame."""
    frames: torch.Tensor | None
    """``(r, V, H, W, 3)`` uint8 decoded frames, the last of the step's k (None when decoding is off)."""
    reward: torch.Tensor
    """``(r,)`` float32."""
    terminated: torch.Tensor
    """``(r,)`` bool."""
    success: torch.Tensor | None
    """``(r,)`` bool, for models with a success head."""
    entropy: torch.Tensor
    """``(r,)`` mean token entropy (nats) of the predicted frame."""
    group_frames: torch.Tensor | None = None
    """``(r, k, V, H, W, 3)`` uint8: all k frames of the new latent frame, oldest first."""


class RolloutCore:
    """``batch`` imagined rows of one world model.

    Args:
        model: a :class:`~wfm_sim.models.world_model.WorldModel` (in eval mode).
        batch: number of rows.
        mode: 'sequential' (a token per pass, KV cache) or 'parallel' (MaskGIT passes).
        sampling: temperature / top-k / top-p.
        parallel_steps: passes per frame in parallel mode.
        decoder: 'token' (the tokenizer's decoder) or 'diffusion' (the EDM decoder).
        diffusion_steps: sampler steps (default: the decoder config's).
        decode: False skips pixel decoding (token observations); ``frames`` then stays at
            the last context frame.
        text, text_mask: per-row prompt embeddings ``(B, S, D)`` / ``(B, S)`` for
            text-conditioned models.
    """

    def __init__(self, model, batch: int, mode: str = "parallel", sampling: SamplingConfig | None = None,
                 parallel_steps: int = 8, decoder: str = "token", diffusion_steps: int | None = None,
                 decode: bool = True, text: torch.Tensor | None = None, text_mask: torch.Tensor | None = None):
        if decoder not in DECODERS:
            raise ValueError(f"decoder must be one of {DECODERS}, got {decoder!r}")
        if decoder == "diffusion" and model.decoder is None:
            raise ValueError("this model has no diffusion decoder; use decoder='token'")
        if batch < 1:
            raise ValueError(f"batch must be >= 1, got {batch}")
        self.model, self.batch, self.decoder, self.diffusion_steps = model, batch, decoder, diffusion_steps
        self.decode_pixels = decode
        self.im: Imagination = model.imagine(batch, mode=mode, sampling=sampling or SamplingConfig(),
                                             parallel_steps=parallel_steps, text=text, text_mask=text_mask)
        c = model.cfg
        s = c.tokenizer.image_size
        self.k = c.frames_per_step
        self.group_frames = torch.zeros((batch, self.k, len(c.cameras), s, s, 3), dtype=torch.uint8,
                                        device=model.device)
        """``(B, k, V, H, W, 3)`` uint8: each row's last k frames (after a reset: the context's last k,
        the first one repeated where the context is shorter)."""

    @property
    def frames(self) -> torch.Tensor:
        """``(B, V, H, W, 3)`` uint8: each row's last frame (context or decoded), a view."""
        return self.group_frames[:, -1]

    @property
    def device(self) -> torch.device:
        return self.model.device

    def _rows(self, rows) -> torch.Tensor:
        if rows is None:
            return torch.arange(self.batch, device=self.device)
        return torch.as_tensor(rows, dtype=torch.long, device=self.device)

    @torch.no_grad()
    def reset(self, rows, frames: torch.Tensor, actions: torch.Tensor | None, seeds: list[int] | None) -> None:
        """Start ``rows`` from real context.

        Args:
            rows: ``(r,)`` row indices.
            frames: ``(r, C, V, H, W, 3)`` uint8 context frames.
            actions: ``(r, C-1, ...)`` actions between them (None or empty when C == 1).
            seeds: one seed per row for its generator; None continues each row's stream.
        """
        t_rows = self._rows(rows)
        tokens = self.model.encode(frames)  # (r, C', V, g, g)
        r, ctx = tokens.shape[:2]
        acts = None
        if ctx > 1:
            if actions is None:
                raise ValueError(f"a context of {ctx} latent frames needs the actions between them")
            acts = self.model.check_action(torch.as_tensor(actions).to(self.device), (r, ctx - 1))
        self.im.reset(t_rows, tokens.flatten(2), acts, seeds)
        tail = frames[:, -self.k:].to(self.device)
        if tail.shape[1] < self.k:  # a one-frame context: pad in front with its first frame
            tail = torch.cat((tail[:, :1].expand(-1, self.k - tail.shape[1], -1, -1, -1, -1), tail), dim=1)
        self.group_frames[t_rows] = tail

    @torch.no_grad()
    def reset_from_text(self, rows, seeds: list[int]) -> None:
        """Start ``rows`` from their prompt alone: generate frame 0 and decode it."""
        t_rows = self._rows(rows)
        c = self.model.cfg
        frame0 = self.im.reset_from_text(t_rows, seeds)
        tokens = frame0.view(len(t_rows), 1, len(c.cameras), c.tokenizer.grid, c.tokenizer.grid)
        self.group_frames[t_rows] = self.model.decode(tokens, "token")[:, -1:]  # one frame, repeated k times

    @torch.no_grad()
    def step(self, actions: torch.Tensor, rows=None) -> CoreStep:
        """Advance ``rows`` (default all) by one latent frame under ``actions`` ``(r, k, a)`` / ``(r, k)``."""
        t_rows = self._rows(rows)
        out = self.im.step(actions, None if rows is None else t_rows)
        frames = group = None
        if self.decode_pixels:
            group = self._decode(t_rows, out.tokens)  # (r, k, V, H, W, 3)
            frames = group[:, -1]
            self.group_frames[t_rows] = group
        return CoreStep(out.tokens, frames, out.reward, out.terminated, out.success, out.entropy, group)

    def _decode(self, t_rows: torch.Tensor, new_tokens: torch.Tensor) -> torch.Tensor:
        tk = self.model.cfg.tokenizer
        if tk.temporal_kernel == 1 and tk.temporal_downsample == 1:
            history = new_tokens[:, None]  # a per-frame tokenizer decodes the new frame alone
        else:
            history = self.im.history(t_rows, int(self.im.count[t_rows].min()))
        gens = [self.im.generators[i] for i in t_rows.tolist()]
        return self.model.decode(history, self.decoder, self.diffusion_steps, prev=self.frames[t_rows], generators=gens)

    def last_tokens(self) -> torch.Tensor:
        """``(B, V, g, g)`` each row's newest latent frame of tokens."""
        c = self.model.cfg
        last = (self.im.count - 1).clamp_min(0)
        rows = torch.arange(self.batch, device=self.device)
        return self.im.tokens[rows, last].view(self.batch, len(c.cameras), c.tokenizer.grid, c.tokenizer.grid)
