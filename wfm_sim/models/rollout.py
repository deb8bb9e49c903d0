"""The imagined rollout: the one owner of what a batch of imagined rows holds.

A :class:`Rollout` keeps, for ``b`` rows of one world model: the static KV cache, each row's
token and action history (at most ``max_frames`` latent frames), its prompt, its random key
(seed and step counter) and its last decoded frames. Everything that imagines goes through it:
the imagined envs (and through them RL, the Ray workers and generation), open-loop fidelity,
heads-on-real-frames replay (``step(frame=...)``: teacher forcing), planning and scoring.

One step of rows ``r`` feeds each row's pending tokens and its action in one chunk, reads the
reward / termination / success heads from the action token, generates the next latent frame
and (optionally) decodes it to pixels conditioned on the previous frame:

* sequential: one token per forward pass with the KV cache (``n`` passes per frame);
* parallel: all of the frame's tokens at once, refined in ``parallel_steps``
  confidence-ordered passes (MaskGIT), then kept in the cache on the next step.

When a row's window is full it drops its oldest latent frame and re-prefills from the rest
with time positions rebased to 0, so the cache always equals a fresh prefill.

Random numbers are counter-based (:mod:`wfm_sim.models.rng`): a row's draws are a function of
its seed, its step counter and the draw's place in the step, so a row never depends on its
batch company and a :meth:`snapshot` replays exactly after :meth:`restore` (branching).

Validation happens at :meth:`reset` and at the env boundary; :meth:`step` trusts its inputs
and never waits on the device: counts, cache lengths and keys live on the host.

Dimension legend: :mod:`wfm_sim.dims`.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, fields

import numpy as np
import torch

from wfm_sim.models import rng
from wfm_sim.models.sampling import SamplingConfig, entropy, sample

DECODERS = ("token", "diffusion")
MODES = ("sequential", "parallel")
AUTOCAST_MIN_TOKENS = 512
"""Rows x positions of a forward chunk from which it runs in the model's autocast precision
(measured on a 2-core bf16 CPU: parallel passes at batch 16 ran 1.75x faster in bf16; one-token
passes and batch-1 passes were no faster, often slower)."""


@dataclass
class StepOut:
    """What one step of ``r`` rows produced (tensors on the model's device)."""

    tokens: torch.Tensor
    """``(r, v, h, w)`` int64 token ids of the new latent frame."""
    reward: torch.Tensor
    """``(r,)`` float32 predicted reward for the action just taken."""
    terminated: torch.Tensor
    """``(r,)`` bool predicted termination."""
    success: torch.Tensor | None
    """``(r,)`` bool predicted task success (models with a success head), else None."""
    entropy: torch.Tensor
    """``(r,)`` mean token entropy (nats) of the predicted frame (0 for forced frames)."""
    frames: torch.Tensor | None = None
    """``(r, f, v, H, W, 3)`` uint8: the new latent frame's ``f`` frames, oldest first (None
    when the rollout does not decode)."""
    reward_std: torch.Tensor | None = None
    """``(r,)`` spread of the reward-ensemble members (models with ``reward_ensemble``), else None."""


@dataclass
class RolloutState:
    """A copy of some rows' whole state, from :meth:`Rollout.snapshot`."""

    tokens: torch.Tensor
    actions: torch.Tensor
    cache_k: torch.Tensor
    cache_v: torch.Tensor
    group_frames: torch.Tensor
    text: torch.Tensor | None
    text_mask: torch.Tensor | None
    count: np.ndarray
    lengths: np.ndarray
    seeds: np.ndarray
    ticks: np.ndarray

    @property
    def rows(self) -> int:
        return len(self.count)


class Rollout:
    """``batch`` imagined rows of one world model.

    Args:
        model: a :class:`~wfm_sim.models.world_model.WorldModel` (in eval mode).
        batch: number of rows.
        mode: 'sequential' (a token per pass, KV cache) or 'parallel' (MaskGIT passes).
        sampling: temperature / top-k / top-p.
        parallel_steps: passes per latent frame in parallel mode.
        decoder: 'token' (the tokenizer's decoder) or 'diffusion' (the EDM decoder).
        diffusion_steps: sampler steps (default: the decoder config's).
        decode: False skips pixel decoding (token observations); ``frames`` then stay at the
            last context frame.
        prompt_tokens: length of each row's prompt buffer (text-conditioned models; 0: no
            prompts, the cross-attention layers are skipped).
    """

    def __init__(self, model, batch: int, mode: str = "parallel", sampling: SamplingConfig | None = None,
                 parallel_steps: int = 8, decoder: str = "token", diffusion_steps: int | None = None,
                 decode: bool = True, prompt_tokens: int = 0):
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if decoder not in DECODERS:
            raise ValueError(f"decoder must be one of {DECODERS}, got {decoder!r}")
        if decoder == "diffusion" and model.decoder is None:
            raise ValueError("this model has no diffusion decoder; use decoder='token'")
        if int(batch) < 1:
            raise ValueError(f"batch must be >= 1, got {batch}")
        if parallel_steps < 1:
            raise ValueError(f"parallel_steps must be >= 1, got {parallel_steps}")
        text_dim = model.cfg.backbone.text_dim
        if prompt_tokens and not text_dim:
            raise ValueError("this model has no text conditioning (backbone.text_dim == 0): it takes no prompt")
        self.model, self.net, self.cfg = model, model.backbone, model.backbone.dims
        self.batch, self.mode, self.parallel_steps = int(batch), mode, parallel_steps
        self.sampling = sampling or SamplingConfig()
        self.decoder, self.diffusion_steps, self.decode_pixels = decoder, diffusion_steps, decode
        self.device = model.device
        c, b, dev = self.cfg, self.batch, self.device
        self.n = c.frame_tokens
        self.pending = 1 if mode == "sequential" else self.n
        self.cache = self.net.new_cache(b, model.amp_dtype)
        act_shape = (c.action_group,) if c.num_actions else (c.action_group, c.action_dim)
        self.act_dtype = torch.long if c.num_actions else torch.float32
        self.tokens = torch.zeros(b, c.max_frames, self.n, dtype=torch.long, device=dev)
        """``(b, max_frames, n)`` each row's latent-frame history, oldest first."""
        self.actions = torch.zeros((b, c.max_frames) + act_shape, dtype=self.act_dtype, device=dev)
        """``(b, max_frames, f, a)`` / ``(b, max_frames, f)`` the action after each latent frame."""
        self.count = np.zeros(b, dtype=np.int64)
        """``(b,)`` latent frames each row holds (host)."""
        self.seeds = np.zeros(b, dtype=np.int64)
        self.ticks = np.zeros(b, dtype=np.int64)
        """``(b,)`` each row's random-draw counter (steps since its last seeding; host)."""
        s, v = model.cfg.tokenizer.image_size, len(model.cfg.cameras)
        self.group_frames = torch.zeros((b, model.cfg.frames_per_step, v, s, s, 3), dtype=torch.uint8, device=dev)
        """``(b, f, v, H, W, 3)`` uint8: each row's newest f frames (after a reset: the context's
        last f, its first frame repeated in front where it is shorter)."""
        self.text = self.text_mask = None
        if prompt_tokens:
            self.text = torch.zeros(b, prompt_tokens, text_dim, device=dev)
            self.text_mask = torch.zeros(b, prompt_tokens, dtype=torch.bool, device=dev)
            self.text_mask[:, 0] = True  # a zero vector at token 0 means "no prompt"
        self.forward_passes = 0

    # ----------------------------------------------------------------- views
    @property
    def frames(self) -> torch.Tensor:
        """``(b, v, H, W, 3)`` uint8: each row's newest frame (a view)."""
        return self.group_frames[:, -1]

    def last_tokens(self) -> torch.Tensor:
        """``(b, v, h, w)`` each row's newest latent frame of tokens."""
        last = torch.as_tensor(np.maximum(self.count - 1, 0), device=self.device)
        out = self.tokens[torch.arange(self.batch, device=self.device), last]
        return self._grid(out)

    def history(self, rows, frames: int) -> torch.Tensor:
        """``(r, frames, v, h, w)`` the newest ``frames`` latent frames of ``rows``."""
        host, dev = self._rows(rows)
        if (self.count[host] < frames).any():
            raise ValueError(f"rows hold fewer than {frames} latent frames")
        offs = torch.as_tensor(self.count[host][:, None] - frames + np.arange(frames), device=self.device)
        return self._grid(self.tokens[self._all(dev)[:, None], offs])

    @torch.no_grad()
    def decode(self, rows=None) -> torch.Tensor:
        """``(r, v, H, W, 3)`` uint8: the rows' newest latent frame decoded by the token decoder
        (what a token-observation env renders)."""
        host, _ = self._rows(rows)
        tk = self.model.cfg.tokenizer
        span = 1 if tk.per_frame else int(self.count[host].min())
        return self.model.decode_ids(self.history(rows, span), "token")[:, -1]

    # ---------------------------------------------------------------- prompts
    def set_prompt(self, rows, emb: torch.Tensor | None = None, mask: torch.Tensor | None = None) -> None:
        """Condition ``rows`` on prompt embeddings ``emb (r, p, d_text)`` / ``mask (r, p)``;
        None clears them to "no prompt"."""
        if self.text is None:
            raise ValueError("this rollout has no prompt buffers: make it with prompt_tokens > 0 on a text-conditioned model")
        host, dev = self._rows(rows)
        idx = self._all(dev)
        self.text[idx] = 0
        self.text_mask[idx] = False
        if emb is None:
            self.text_mask[idx, 0] = True
            return
        p = emb.shape[1]
        if emb.shape[0] != len(host) or p > self.text.shape[1] or emb.shape[2] != self.text.shape[2]:
            raise ValueError(f"prompt embeddings must be ({len(host)}, <= {self.text.shape[1]}, {self.text.shape[2]}), "
                             f"got {tuple(emb.shape)}")
        self.text[idx, :p] = emb.to(self.device, self.text.dtype)
        self.text_mask[idx, :p] = mask.to(self.device)

    # ----------------------------------------------------------------- resets
    @torch.no_grad()
    def reset(self, rows, frames: torch.Tensor | None = None, actions: torch.Tensor | None = None,
              seeds=None, tokens: torch.Tensor | None = None) -> None:
        """Start ``rows`` from real context.

        Args:
            rows: host row indices (None: all rows).
            frames: ``(r, t, v, H, W, 3)`` uint8 context frames (``t = 1 + f*m``), encoded here.
            actions: ``(r, t-1, ...)`` per-frame actions between them (None when t == 1).
            seeds: one int per row: seeds its random stream and restarts its step counter;
                None continues each row's stream (an autoreset of the same sub-env).
            tokens: ``(r, l, v, h, w)`` or ``(r, l, n)`` int64 context tokens instead of frames
                (then ``actions`` is ``(r, l-1, f, a)``, and ``frames`` may still be given for
                the decoded-frame buffer).
        """
        host, dev = self._rows(rows)
        r = len(host)
        if tokens is None:
            if frames is None:
                raise ValueError("reset needs context frames or context tokens")
            tokens = self.model.encode(frames)
        tokens = tokens.to(self.device).reshape(tokens.shape[0], tokens.shape[1], -1)
        ctx = tokens.shape[1]
        if tokens.shape[0] != r or tokens.shape[2] != self.n:
            raise ValueError(f"context tokens must be ({r}, l, {self.n}), got {tuple(tokens.shape)}")
        if not 1 <= ctx <= self.cfg.max_frames - 1:
            raise ValueError(f"context must hold 1..{self.cfg.max_frames - 1} latent frames, got {ctx}")
        acts = None
        if ctx > 1:
            if actions is None:
                raise ValueError(f"a context of {ctx} latent frames needs the actions between them")
            acts = self.model.check_action(torch.as_tensor(actions).to(self.device), (r, ctx - 1))
        self._seed(host, seeds)
        idx = self._all(dev)
        self.tokens[idx, :ctx] = tokens
        if acts is not None:
            self.actions[idx, : ctx - 1] = acts.to(self.act_dtype)
        self.count[host] = ctx
        self._prefill(host)
        if frames is not None:
            self._set_group_frames(idx, frames.to(self.device))
        elif self.decode_pixels:
            self.group_frames[idx] = self.model.decode_ids(self._grid(tokens), "token")[:, -1:]

    @torch.no_grad()
    def reset_from_prompt(self, rows, seeds=None) -> torch.Tensor:
        """Start ``rows`` from BOS and their prompt alone: generate latent frame 0 (and decode it).

        Returns the ``(r, n)`` tokens of frame 0.
        """
        if self.text is None:
            raise ValueError("starting from a prompt needs prompt buffers (prompt_tokens > 0) and set_prompt()")
        host, dev = self._rows(rows)
        self._seed(host, seeds)
        r = len(host)
        self.cache.lengths[host] = 0
        pos = torch.zeros(r, 1, dtype=torch.long, device=self.device)
        h = self._forward(torch.zeros_like(pos), self._no_action(r, 1), pos, host, dev, commit=True)
        frame, _ = self._generate(host, dev, h[:, -1])
        idx = self._all(dev)
        self.tokens[idx, 0] = frame
        self.count[host] = 1  # sequential generation already fed all but the last token
        self.ticks[host] += 1
        self.group_frames[idx] = self.model.decode_ids(self._grid(frame)[:, None], "token")[:, -1:]
        return frame

    # ------------------------------------------------------------------- step
    @torch.no_grad()
    def step(self, actions: torch.Tensor, rows=None, frame: torch.Tensor | None = None) -> StepOut:
        """Advance ``rows`` (host indices; default all) by one latent frame.

        Args:
            actions: ``(r, f, a)`` float32 or ``(r, f)`` int64 on the model's device, already
                checked (``WorldModel.check_action``).
            frame: ``(r, n)`` int64 tokens to take as the next frame instead of generating one
                (teacher forcing: the heads then read real histories; entropy is 0).
        """
        host, dev = self._rows(rows)
        if (self.count[host] == 0).any():
            raise RuntimeError("step() called on rows that were never reset")
        full = host[self.count[host] >= self.cfg.max_frames]
        if full.size:
            self._slide(full)
        r, P, idx = len(host), self.pending, self._all(dev)
        last = torch.as_tensor(self.count[host] - 1, device=self.device)
        self.actions[idx, last] = actions.to(self.act_dtype)
        ids = torch.cat((self.tokens[idx, last, self.n - P:], self.tokens.new_zeros(r, 1)), dim=1)
        acts = self._no_action(r, P + 1)
        acts[:, -1] = self.actions[idx, last]
        h = self._forward(ids, acts, self._positions(host, P + 1), host, dev, commit=True)
        heads = self.net.heads(h[:, -1])
        if frame is None:
            frame, ent = self._generate(host, dev, h[:, -1])
        else:
            if tuple(frame.shape) != (r, self.n):
                raise ValueError(f"a forced frame must be ({r}, {self.n}) token ids, got {tuple(frame.shape)}")
            frame, ent = frame.to(self.device, torch.long), torch.zeros(r, device=self.device)
            if P < self.n:  # sequential: the cache must hold the forced frame's tokens but its last
                q = self.n - P
                self._forward(frame[:, :q], self._no_action(r, q), self._positions(host, q), host, dev, commit=True)
        self.tokens[idx, torch.as_tensor(self.count[host], device=self.device)] = frame
        self.count[host] += 1
        group = self._decode_new(host, dev, frame) if self.decode_pixels else None
        self.ticks[host] += 1
        success = heads.get("success_logit")
        return StepOut(tokens=self._grid(frame), reward=heads["reward"], terminated=heads["terminated_logit"] > 0,
                       success=None if success is None else success > 0, entropy=ent, frames=group,
                       reward_std=heads.get("reward_std"))

    # --------------------------------------------------------------- branching
    def snapshot(self, rows=None) -> RolloutState:
        """A copy of ``rows``' whole state: history, cache, prompt, random key, frames."""
        host, dev = self._rows(rows)
        idx = self._all(dev)
        return RolloutState(
            tokens=self.tokens[idx].clone(), actions=self.actions[idx].clone(),
            cache_k=self.cache.k[:, idx].clone(), cache_v=self.cache.v[:, idx].clone(),
            group_frames=self.group_frames[idx].clone(),
            text=None if self.text is None else self.text[idx].clone(),
            text_mask=None if self.text_mask is None else self.text_mask[idx].clone(),
            count=self.count[host].copy(), lengths=self.cache.lengths[host].copy(),
            seeds=self.seeds[host].copy(), ticks=self.ticks[host].copy())

    def restore(self, state: RolloutState, rows=None, seeds=None) -> None:
        """Put a snapshot into ``rows`` (one row's state may fill many: branching).

        ``seeds`` (one per row) re-keys the restored rows so branches draw different futures;
        None keeps the snapshot's keys (the same future, exactly).
        """
        host, dev = self._rows(rows)
        if state.rows not in (1, len(host)):
            raise ValueError(f"a snapshot of {state.rows} rows restores into 1 or {state.rows} rows, not {len(host)}")
        idx = self._all(dev)
        for f in fields(state):
            val = getattr(state, f.name)
            if val is None:
                continue
            if isinstance(val, np.ndarray):
                target = {"count": self.count, "lengths": self.cache.lengths, "seeds": self.seeds, "ticks": self.ticks}[f.name]
                target[host] = val
            elif f.name.startswith("cache_"):
                getattr(self.cache, f.name[6:])[:, idx] = val
            else:
                getattr(self, f.name)[idx] = val
        if seeds is not None:
            self._seed(host, seeds, restart=False)

    # -------------------------------------------------------------- internals
    def _rows(self, rows) -> tuple[np.ndarray, torch.Tensor | None]:
        """Host indices and their device tensor (None when ``rows`` is None: all rows in order)."""
        if rows is None:
            return np.arange(self.batch), None
        host = rows.detach().cpu().numpy() if isinstance(rows, torch.Tensor) else np.asarray(rows)
        host = host.astype(np.int64).reshape(-1)
        if host.size and (host.min() < 0 or host.max() >= self.batch):
            raise IndexError(f"rows must lie in [0, {self.batch}), got {host.tolist()}")
        return host, torch.as_tensor(host, device=self.device)

    def _all(self, dev: torch.Tensor | None) -> torch.Tensor:
        return torch.arange(self.batch, device=self.device) if dev is None else dev

    def _grid(self, ids: torch.Tensor) -> torch.Tensor:
        """``(..., n)`` -> ``(..., v, h, w)``."""
        c = self.cfg
        return ids.reshape(ids.shape[:-1] + (c.num_views, c.grid, c.grid))

    def _seed(self, host: np.ndarray, seeds, restart: bool = True) -> None:
        if seeds is None:
            return
        s = np.asarray(seeds, dtype=np.int64).reshape(-1)
        if s.size != len(host):
            raise ValueError(f"give one seed per row: {len(host)} rows, got {s.size} seeds")
        self.seeds[host] = s
        if restart:
            self.ticks[host] = 0

    def _keys(self, host: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        return (torch.as_tensor(self.seeds[host], device=self.device),
                torch.as_tensor(self.ticks[host], device=self.device))

    def _positions(self, host: np.ndarray, q: int) -> torch.Tensor:
        """``(r, q)`` the rows' next ``q`` cache slots."""
        return torch.as_tensor(self.cache.lengths[host][:, None] + np.arange(q), device=self.device)

    def _no_action(self, r: int, q: int) -> torch.Tensor:
        return torch.zeros((r, q) + tuple(self.actions.shape[2:]), dtype=self.act_dtype, device=self.device)

    def _forward(self, ids, acts, pos, host, dev, commit: bool) -> torch.Tensor:
        self.forward_passes += 1
        rows = None if dev is None else host
        txt = self.text if (self.text is None or dev is None) else self.text[dev]
        tm = self.text_mask if (self.text_mask is None or dev is None) else self.text_mask[dev]
        # The model's precision (bf16 where it is native) for chunks big enough to gain from it:
        # a pass of a few tokens is bound by casts and memory traffic, and runs faster in fp32.
        ctx = self.model.autocast() if ids.numel() >= AUTOCAST_MIN_TOKENS else contextlib.nullcontext()
        with ctx:
            return self.net.forward_chunk(ids, acts, pos, self.mode, self.cache, rows, commit, txt, tm)

    def _prefill(self, host: np.ndarray) -> None:
        """Re-run each row's history into its cache, holding back its last ``pending`` tokens."""
        for ctx in np.unique(self.count[host]):
            sub = host[self.count[host] == ctx]
            dev = torch.as_tensor(sub, device=self.device)
            frames = self.tokens[dev, :ctx].view(len(sub), ctx, 1, 1, self.n)
            ids, acts = self.net.sequence(frames, self.actions[dev, :ctx])
            keep = 1 + (int(ctx) - 1) * self.cfg.block + self.n - self.pending
            self.cache.lengths[sub] = 0
            pos = torch.arange(keep, device=self.device).expand(len(sub), -1)
            self._forward(ids[:, :keep], acts[:, :keep], pos, sub, dev, commit=True)

    def _slide(self, host: np.ndarray) -> None:
        dev = torch.as_tensor(host, device=self.device)
        self.tokens[dev] = torch.roll(self.tokens[dev], -1, dims=1)
        self.actions[dev] = torch.roll(self.actions[dev], -1, dims=1)
        self.count[host] -= 1
        self._prefill(host)

    def _set_group_frames(self, idx: torch.Tensor, frames: torch.Tensor) -> None:
        f = self.group_frames.shape[1]
        tail = frames[:, -f:]
        if tail.shape[1] < f:  # a one-frame context: pad in front with its first frame
            tail = torch.cat((tail[:, :1].expand(-1, f - tail.shape[1], -1, -1, -1, -1), tail), dim=1)
        self.group_frames[idx] = tail

    def _decode_new(self, host: np.ndarray, dev: torch.Tensor | None, frame: torch.Tensor) -> torch.Tensor:
        """Decode the rows' new latent frame to ``(r, f, v, H, W, 3)`` and keep it as their frames."""
        tk = self.model.cfg.tokenizer
        if tk.per_frame:
            history = self._grid(frame)[:, None]  # a per-frame tokenizer decodes the new frame alone
        else:
            history = self.history(None if dev is None else host, int(self.count[host].min()))
        idx = self._all(dev)
        noise = rng.RowNoise(*self._keys(host)) if self.decoder == "diffusion" else None
        group = self.model.decode_ids(history, self.decoder, self.diffusion_steps, prev=self.frames[idx], noise=noise)
        self.group_frames[idx] = group
        return group

    def _generate(self, host, dev, h_last: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Generate one latent frame's ``n`` tokens for the rows; returns ids and entropy."""
        if self.mode == "sequential":
            return self._generate_sequential(host, dev, h_last)
        return self._generate_parallel(host, dev)

    def _uniforms(self, keys, passes: int, n: int) -> torch.Tensor | None:
        """``(r, passes, n)`` every uniform a frame's sampling takes, in one draw (None when greedy)."""
        if self.sampling.temperature == 0:
            return None
        return rng.uniform(*keys, rng.TOKENS, passes * n).view(-1, passes, n)

    def _generate_sequential(self, host, dev, h_last):
        r = len(host)
        u = self._uniforms(self._keys(host), 1, self.n)
        out = torch.zeros(r, self.n, dtype=torch.long, device=self.device)
        ent = torch.zeros(r, device=self.device)
        h = h_last
        for i in range(self.n):
            if i > 0:
                h = self._forward(out[:, i - 1 : i], self._no_action(r, 1), self._positions(host, 1), host, dev,
                                  commit=True)[:, -1]
            logits = self.net.head_next(h).float()[:, None]  # (r, 1, K)
            out[:, i] = sample(logits, self.sampling, None if u is None else u[:, 0, i : i + 1])[0][:, 0]
            ent += entropy(logits) / self.n
        return out, ent

    def _generate_parallel(self, host, dev):
        r, n = len(host), self.n
        u = self._uniforms(self._keys(host), self.parallel_steps, n)
        pos = self._positions(host, n)
        ids = torch.full((r, n), self.cfg.mask_id, dtype=torch.long, device=self.device)
        masked = torch.ones(r, n, dtype=torch.bool, device=self.device)
        ent = None
        for s in range(self.parallel_steps):
            h = self._forward(ids, self._no_action(r, n), pos, host, dev, commit=False)
            logits = self.net.head_mask(h).float()
            if ent is None:
                ent = entropy(logits)
            drawn, conf = sample(logits, self.sampling, None if u is None else u[:, s])
            # Cosine schedule (MaskGIT): tokens still masked after this pass.
            remain = int(math.floor(n * math.cos(math.pi / 2 * (s + 1) / self.parallel_steps)))
            conf = torch.where(masked, conf, torch.inf)
            keep = conf.argsort(dim=1, descending=True, stable=True).argsort(dim=1, stable=True) < (n - remain)
            ids = torch.where(keep & masked, drawn, ids)
            masked = masked & ~keep
        return ids, ent
