"""Batched imagined rollouts over the backbone: prefill, step, sliding window, per-row resets.

An :class:`Imagination` owns one static KV cache for ``B`` rows, each row's token history
(at most ``max_frames`` frames) and one ``torch.Generator`` per row. Per step, every row feeds
its pending tokens and its action in one chunk, reads the reward / termination heads from the
action token, then generates the next frame:

* sequential: one token per forward pass with the KV cache (``V*g*g`` passes per frame);
* parallel: all of the frame's tokens at once, refined in ``parallel_steps`` confidence-ordered
  passes (MaskGIT), then kept in the cache on the next step.

When a row's window is full it drops its oldest frame and re-prefills from the remaining
history with time positions rebased to 0, so the cache always equals a fresh prefill.

Dimension legend: ``B`` rows, ``W`` window frames, ``n`` tokens per time step (all views),
``k`` actions per latent frame, ``a`` action features, ``P`` pending tokens.
"""

from __future__ import annotations

import math

import torch

from wfm_sim.models.backbone import Backbone
from wfm_sim.models.sampling import SamplingConfig, entropy, sample
from wfm_sim.records import StepOutput


class Imagination:
    """Rollout state for ``batch`` rows. Create with :meth:`WorldModel.imagine` or directly."""

    def __init__(self, backbone: Backbone, batch: int, mode: str = "sequential",
                 sampling: SamplingConfig = SamplingConfig(), parallel_steps: int = 8,
                 text: torch.Tensor | None = None, text_mask: torch.Tensor | None = None):
        if mode not in ("sequential", "parallel"):
            raise ValueError(f"mode must be 'sequential' or 'parallel', got {mode!r}")
        if parallel_steps < 1:
            raise ValueError(f"parallel_steps must be >= 1, got {parallel_steps}")
        c = backbone.cfg
        self.net, self.cfg, self.mode = backbone, c, mode
        self.sampling, self.parallel_steps = sampling, parallel_steps
        p = next(backbone.parameters())
        self.device = p.device
        self.cache = backbone.new_cache(batch)
        self.batch = batch
        self.n = c.frame_tokens
        self.pending = 1 if mode == "sequential" else self.n
        act_shape = (c.action_group,) if c.num_actions else (c.action_group, c.action_dim)
        self.act_dtype = torch.long if c.num_actions else torch.float32
        self.tokens = torch.zeros(batch, c.max_frames, self.n, dtype=torch.long, device=self.device)
        self.actions = torch.zeros((batch, c.max_frames) + act_shape, dtype=self.act_dtype, device=self.device)
        self.count = torch.zeros(batch, dtype=torch.long, device=self.device)
        self.generators = [torch.Generator(device=self.device) for _ in range(batch)]
        self.text, self.text_mask = text, text_mask
        self.forward_passes = 0

    # ----------------------------------------------------------------- resets
    def reset(self, rows: torch.Tensor, tokens: torch.Tensor, actions: torch.Tensor | None,
              seeds: list[int] | None) -> None:
        """Start ``rows`` from context.

        Args:
            rows: ``(r,)`` int64 row indices.
            tokens: ``(r, C, n)`` int64 context tokens, ``1 <= C <= max_frames - 1``.
            actions: ``(r, C-1, k, a)`` actions between the context frames (None when C == 1).
            seeds: one seed per row for its generator; None keeps each row's generator running
                (an autoreset continues the sub-env's random stream).
        """
        r, ctx = tokens.shape[:2]
        if not 1 <= ctx <= self.cfg.max_frames - 1:
            raise ValueError(f"context must hold 1..{self.cfg.max_frames - 1} latent frames, got {ctx}")
        for i, s in zip(rows.tolist(), seeds or []):
            self.generators[i].manual_seed(int(s))
        self.tokens[rows, :ctx] = tokens.to(self.device)
        if ctx > 1:
            self.actions[rows, : ctx - 1] = actions.to(self.device, self.act_dtype)
        self.count[rows] = ctx
        self._prefill(rows)

    def reset_from_text(self, rows: torch.Tensor, seeds: list[int]) -> torch.Tensor:
        """Start ``rows`` from nothing but BOS and the text prompt: generate frame 0.

        Returns the generated ``(r, n)`` tokens of frame 0.
        """
        for i, s in zip(rows.tolist(), seeds):
            self.generators[i].manual_seed(int(s))
        self.cache.lengths[rows] = 0
        r = rows.numel()
        pos = torch.zeros(r, 1, dtype=torch.long, device=self.device)
        h = self._forward(torch.zeros_like(pos), self._no_action(r, 1), pos, rows, commit=True)
        frame, _ = self._generate(rows, h[:, -1])
        self.tokens[rows, 0] = frame
        self.count[rows] = 1  # sequential generation already fed all but the last token
        return frame

    # ------------------------------------------------------------------- step
    @torch.no_grad()
    def step(self, action: torch.Tensor, rows: torch.Tensor | None = None,
             frame: torch.Tensor | None = None) -> StepOutput:
        """Advance rows by one latent frame.

        Args:
            action: ``(r, k, a)`` float32 or ``(r, k)`` int64, the action after each row's last frame.
            rows: ``(r,)`` row indices to advance (default: all rows); the others are untouched.
            frame: ``(r, n)`` int64 tokens to take as the next frame instead of generating one
                (teacher forcing: the heads then read real histories; entropy is 0).
        """
        idx = torch.arange(self.batch, device=self.device) if rows is None else rows.to(self.device)
        sub = None if rows is None else idx
        if bool((self.count[idx] == 0).any()):
            raise RuntimeError("step() called on rows that were never reset")
        full = idx[self.count[idx] >= self.cfg.max_frames]
        if full.numel():
            self._slide(full)
        r, P = idx.numel(), self.pending
        last = self.count[idx] - 1
        self.actions[idx, last] = action.to(self.device, self.act_dtype)
        ids = torch.cat((self.tokens[idx, last, self.n - P:], self.tokens.new_zeros(r, 1)), dim=1)
        acts = self._no_action(r, P + 1)
        acts[:, -1] = self.actions[idx, last]
        pos = self.cache.lengths[idx][:, None] + torch.arange(P + 1, device=self.device)
        h = self._forward(ids, acts, pos, sub, commit=True)
        heads = self.net.heads(h[:, -1])
        if frame is None:
            frame, ent = self._generate(sub, h[:, -1])
        else:
            if frame.shape != (r, self.n):
                raise ValueError(f"a forced frame must be ({r}, {self.n}) token ids, got {tuple(frame.shape)}")
            frame, ent = frame.to(self.device, torch.long), torch.zeros(r, device=self.device)
            if self.pending < self.n:  # sequential: the cache holds a frame's tokens but its last
                pos = self.cache.lengths[idx][:, None] + torch.arange(self.n - self.pending, device=self.device)
                self._forward(frame[:, : self.n - self.pending], self._no_action(r, self.n - self.pending), pos, sub,
                              commit=True)
        self.tokens[idx, self.count[idx]] = frame
        self.count[idx] += 1
        c = self.cfg
        success = heads.get("success_logit")
        return StepOutput(
            tokens=frame.view(r, c.num_views, c.grid, c.grid),
            reward=heads["reward"],
            terminated=heads["terminated_logit"] > 0,
            success=None if success is None else success > 0,
            entropy=ent,
        )

    def history(self, rows: torch.Tensor, frames: int) -> torch.Tensor:
        """The last ``frames`` latent frames of ``rows``: ``(r, frames, v, g, g)`` (rows need that many)."""
        c = self.cfg
        cnt = self.count[rows]
        if bool((cnt < frames).any()):
            raise ValueError(f"rows hold fewer than {frames} frames")
        offs = cnt[:, None] - frames + torch.arange(frames, device=self.device)
        out = self.tokens[rows[:, None], offs]
        return out.view(rows.numel(), frames, c.num_views, c.grid, c.grid)

    # -------------------------------------------------------------- internals
    def _no_action(self, r: int, q: int) -> torch.Tensor:
        return torch.zeros((r, q) + tuple(self.actions.shape[2:]), dtype=self.act_dtype, device=self.device)

    def _forward(self, ids, acts, pos, rows, commit: bool) -> torch.Tensor:
        self.forward_passes += 1
        txt = self.text if (self.text is None or rows is None) else self.text[rows]
        tm = self.text_mask if (self.text_mask is None or rows is None) else self.text_mask[rows]
        return self.net.forward_chunk(ids, acts, pos, self.mode, self.cache, rows, commit, txt, tm)

    def _prefill(self, rows: torch.Tensor) -> None:
        """Re-run each row's history into its cache, holding back its last ``pending`` tokens."""
        for ctx in self.count[rows].unique().tolist():
            sub = rows[self.count[rows] == ctx]
            frames = self.tokens[sub, :ctx].view(sub.numel(), ctx, 1, 1, self.n)
            ids, acts = self.net.sequence(frames, self.actions[sub, :ctx])
            keep = 1 + (ctx - 1) * self.cfg.block + self.n - self.pending
            self.cache.lengths[sub] = 0
            pos = torch.arange(keep, device=self.device).expand(sub.numel(), -1)
            self._forward(ids[:, :keep], acts[:, :keep], pos, sub, commit=True)

    def _slide(self, rows: torch.Tensor) -> None:
        self.tokens[rows] = torch.roll(self.tokens[rows], -1, dims=1)
        self.actions[rows] = torch.roll(self.actions[rows], -1, dims=1)
        self.count[rows] -= 1
        self._prefill(rows)

    def _generate(self, rows: torch.Tensor | None, h_last: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Generate one frame's ``n`` tokens for ``rows`` (None = all); returns ids and entropy."""
        gens = self.generators if rows is None else [self.generators[i] for i in rows.tolist()]
        if self.mode == "sequential":
            return self._generate_sequential(rows, h_last, gens)
        return self._generate_parallel(rows, gens)

    def _generate_sequential(self, rows, h_last, gens):
        r = len(gens)
        out = torch.zeros(r, self.n, dtype=torch.long, device=self.device)
        ent = torch.zeros(r, device=self.device)
        lengths = self.cache.lengths if rows is None else self.cache.lengths[rows]
        h = h_last
        for i in range(self.n):
            if i > 0:
                pos = lengths[:, None].clone()
                h = self._forward(out[:, i - 1 : i], self._no_action(r, 1), pos, rows, commit=True)[:, -1]
                lengths = self.cache.lengths if rows is None else self.cache.lengths[rows]
            logits = self.net.head_next(h).float()[:, None]  # (r, 1, V)
            out[:, i] = sample(logits, self.sampling, gens)[0][:, 0]
            ent += entropy(logits) / self.n
        return out, ent

    def _generate_parallel(self, rows, gens):
        r, n = len(gens), self.n
        lengths = self.cache.lengths if rows is None else self.cache.lengths[rows]
        pos = lengths[:, None] + torch.arange(n, device=self.device)
        ids = torch.full((r, n), self.cfg.mask_id, dtype=torch.long, device=self.device)
        masked = torch.ones(r, n, dtype=torch.bool, device=self.device)
        ent = None
        for s in range(self.parallel_steps):
            h = self._forward(ids, self._no_action(r, n), pos, rows, commit=False)
            logits = self.net.head_mask(h).float()
            if ent is None:
                ent = entropy(logits)
            drawn, conf = sample(logits, self.sampling, gens)
            # Cosine schedule (MaskGIT): tokens still masked after this pass.
            remain = int(math.floor(n * math.cos(math.pi / 2 * (s + 1) / self.parallel_steps)))
            conf = torch.where(masked, conf, torch.inf)
            keep = conf.argsort(dim=1, descending=True, stable=True).argsort(dim=1, stable=True) < (n - remain)
            newly = keep & masked
            ids = torch.where(newly, drawn, ids)
            masked = masked & ~keep
        return ids, ent
