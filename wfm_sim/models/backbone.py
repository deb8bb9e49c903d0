"""Action-conditioned causal transformer over video tokens (Llama-style, after Cosmos' AR model).

Sequence layout for ``T`` latent frames with ``V`` views of ``g x g`` tokens each::

    [BOS] [f0: V*g*g tokens][a0] [f1: V*g*g tokens][a1] ... [f_{T-1}][a_{T-1}]

so a block is ``L = V*g*g + 1`` positions and every token of frame t+1 sees action t. The
hidden state of the action token ``a_t`` closes frame t: it has seen frames <= t and the action,
and carries the reward / termination / success heads for step t.

Two attention modes share all weights (Genie / 1X-style parallel decoding next to plain
next-token prediction):

* ``"sequential"``: token-causal. Trained by next-token cross-entropy; decoded one token at a
  time with the KV cache.
* ``"parallel"``: frame-causal. A frame's tokens see each other and everything in earlier
  blocks, never the action that follows them. Trained by masked-token prediction (MaskGIT);
  decoded a whole frame at a time in a few confidence-ordered steps.

Position information: 3D factorised RoPE over (t, h, w) in every attention layer plus learned
absolute embeddings (time, spatial slot, camera view, token kind) added to the input.

Dimension legend: :mod:`wfm_sim.dims`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from wfm_sim.models import rng
from wfm_sim.models.attention import ChunkContext, CrossAttention, KVCache, SelfAttention
from wfm_sim.models.geometry import Geometry
from wfm_sim.models.layers import RMSNorm, Rope3D, SwiGLU
from wfm_sim.models.limits import check_limits
from wfm_sim.records import LossAndLogs

KIND_BOS, KIND_FRAME, KIND_ACTION = 0, 1, 2
MODES = ("sequential", "parallel")


@dataclass(frozen=True)
class BackboneConfig:
    """Size and conditioning of the causal transformer."""

    max_frames: int = 8
    """Latent frames in the context window."""
    dim: int = 256
    depth: int = 8
    heads: int = 8
    kv_heads: int = 4
    """Key/value heads (grouped-query attention); must divide ``heads``."""
    mlp_ratio: float = 8 / 3
    text_dim: int = 0
    """Text-encoder width for cross-attention (T5); 0 disables text conditioning."""
    reward_classes: int = 0
    """0: reward regression; 3: classify the reward's sign (-, 0, +), as IRIS does."""
    success_head: bool = False
    """Predict task success (manipulation)."""
    reward_ensemble: int = 0
    """Extra reward heads, each initialised apart and trained on the same targets. With them the
    heads report ``reward_std``, the members' spread (env units): small where the data taught
    them all the same answer, large off the data (the epistemic uncertainty RL penalises)."""
    reward_scale: float = 1.0
    """Rewards are regressed as ``reward / reward_scale`` (set from the data's max |reward|)."""
    parallel_fraction: float = 0.5
    """Share of each training batch trained with the masked frame-causal objective."""
    rope_theta: float = 10000.0
    dropout: float = 0.0

    def __post_init__(self):
        check_limits(self)
        if self.dim % self.heads or self.heads % self.kv_heads:
            raise ValueError(f"dim ({self.dim}) % heads ({self.heads}) and heads % kv_heads ({self.kv_heads}) must be 0")
        if self.reward_classes not in (0, 3):
            raise ValueError(f"reward_classes must be 0 (regression) or 3 (sign classes), got {self.reward_classes}")
        if self.reward_ensemble < 0 or (self.reward_ensemble and self.reward_classes):
            raise ValueError(f"reward_ensemble must be >= 0 and needs reward regression (reward_classes 0), got "
                             f"{self.reward_ensemble} with reward_classes {self.reward_classes}")
        if self.reward_scale <= 0:
            raise ValueError(f"reward_scale must be > 0, got {self.reward_scale}")
        if not 0.0 <= self.parallel_fraction <= 1.0:
            raise ValueError(f"parallel_fraction must lie in [0, 1], got {self.parallel_fraction}")
        if self.max_frames < 2:
            raise ValueError(f"max_frames must be >= 2 (a context frame and one to predict), got {self.max_frames}")


class Dims:
    """The sequence layout of a backbone: its config's window over the model's :class:`Geometry`."""

    def __init__(self, cfg: BackboneConfig, geo: Geometry):
        self.geo, self.max_frames = geo, cfg.max_frames
        self.vocab_size, self.grid, self.num_views = geo.vocab_size, geo.grid, geo.views
        self.action_group, self.action_dim, self.num_actions = geo.frames_per_token, geo.action_dim, geo.num_actions
        self.frame_tokens = geo.tokens_per_frame
        """``n``: tokens per time step, all views."""
        self.block = self.frame_tokens + 1
        """Sequence positions per time step: frame tokens plus one action token."""
        self.max_len = 1 + cfg.max_frames * self.block
        self.mask_id = geo.vocab_size


class Layout(nn.Module):
    """Per-position tables of the sequence layout (kind, time, view, spatial slot, block rank)."""

    def __init__(self, dims: Dims):
        super().__init__()
        g, n, L = dims.grid, dims.frame_tokens, dims.block
        pos = torch.arange(dims.max_len)
        inner = (pos - 1) % L  # slot inside the block
        time = torch.where(pos == 0, 0, (pos - 1) // L)
        kind = torch.where(pos == 0, KIND_BOS, torch.where(inner == n, KIND_ACTION, KIND_FRAME))
        tok = inner.clamp(max=n - 1)
        view, spatial = tok // (g * g), tok % (g * g)
        is_frame = kind == KIND_FRAME
        hh = torch.where(is_frame, spatial // g, 0)
        ww = torch.where(is_frame, spatial % g, 0)
        for name, val in dict(kind=kind, time=time, view=view, spatial=spatial).items():
            self.register_buffer(name, val, persistent=False)
        self.register_buffer("rope_pos", torch.stack((time, hh, ww), -1), persistent=False)
        # Rank inside a block for the frame-causal mask: BOS 0, frame tokens 1, action 2.
        self.register_buffer("rank", kind.clone(), persistent=False)

    def mask(self, pos: torch.Tensor, mode: str) -> torch.Tensor:
        """``(b, q)`` positions of one chunk -> ``(b, q, q)`` bool visibility among them."""
        if mode == "sequential":
            return pos[:, None, :] <= pos[:, :, None]
        if mode != "parallel":
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        blk, rank = self.time[pos], self.rank[pos]
        blk_q, blk_k = blk[:, :, None], blk[:, None, :]
        return (blk_k < blk_q) | ((blk_k == blk_q) & (rank[:, None, :] <= rank[:, :, None]))


class Block(nn.Module):
    def __init__(self, cfg: BackboneConfig):
        super().__init__()
        self.norm1 = RMSNorm(cfg.dim)
        self.attn = SelfAttention(cfg.dim, cfg.heads, cfg.kv_heads, cfg.dropout)
        self.cross = None
        if cfg.text_dim:
            self.norm_x = RMSNorm(cfg.dim)
            self.cross = CrossAttention(cfg.dim, cfg.text_dim, cfg.heads)
        self.norm2 = RMSNorm(cfg.dim)
        self.mlp = SwiGLU(cfg.dim, cfg.mlp_ratio)

    def forward(self, x, rope, ctx: ChunkContext, layer: int, text=None, text_mask=None):
        x = x + self.attn(self.norm1(x), rope, ctx, layer)
        if self.cross is not None and text is not None:
            x = x + self.cross(self.norm_x(x), text, text_mask)
        return x + self.mlp(self.norm2(x))


class ActionEmbed(nn.Module):
    """Action(s) of one latent frame -> one token embedding: MLP (Box) or embedding (Discrete)."""

    def __init__(self, cfg: BackboneConfig, dims: Dims):
        super().__init__()
        self.dims = dims
        if dims.num_actions:
            self.table = nn.Embedding(dims.num_actions * dims.action_group, cfg.dim)
        else:
            a = dims.action_dim * dims.action_group
            self.mlp = nn.Sequential(nn.Linear(a, cfg.dim), nn.SiLU(), nn.Linear(cfg.dim, cfg.dim))

    def forward(self, action: torch.Tensor) -> torch.Tensor:
        """``(b, q, k, a)`` float or ``(b, q, k)`` int64 -> ``(b, q, d)``."""
        c = self.dims
        if c.num_actions:
            offset = torch.arange(c.action_group, device=action.device) * c.num_actions
            return self.table(action.long() + offset).sum(-2)
        return self.mlp(rearrange(action, "b n k a -> b n (k a)").to(self.mlp[0].weight.dtype))


class Backbone(nn.Module):
    """The causal transformer. See the module docstring for the layout and the two modes."""

    def __init__(self, cfg: BackboneConfig, geo: Geometry):
        super().__init__()
        self.cfg, self.dims = cfg, Dims(cfg, geo)
        d, dims = cfg.dim, self.dims
        self.layout = Layout(dims)
        self.tok_emb = nn.Embedding(dims.vocab_size + 1, d)  # + [MASK]
        self.act_emb = ActionEmbed(cfg, dims)
        self.bos = nn.Parameter(torch.zeros(d))
        self.time_emb = nn.Embedding(cfg.max_frames, d)
        self.spatial_emb = nn.Embedding(dims.grid * dims.grid, d)
        self.view_emb = nn.Embedding(dims.num_views, d)
        self.kind_emb = nn.Embedding(3, d)
        self.rope = Rope3D(d // cfg.heads, cfg.rope_theta)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.depth))
        self.norm = RMSNorm(d)
        self.head_next = nn.Linear(d, dims.vocab_size, bias=False)  # sequential: token p+1
        self.head_mask = nn.Linear(d, dims.vocab_size, bias=False)  # parallel: the masked token p
        self.head_reward = nn.Sequential(nn.Linear(d, d), nn.SiLU(), nn.Linear(d, max(1, cfg.reward_classes)))
        self.head_done = nn.Sequential(nn.Linear(d, d), nn.SiLU(), nn.Linear(d, 2 if cfg.success_head else 1))
        self.head_reward_ens = nn.ModuleList(nn.Sequential(nn.Linear(d, d), nn.SiLU(), nn.Linear(d, 1))
                                             for _ in range(cfg.reward_ensemble))
        self.apply(self._init)
        for m in self.head_reward_ens.modules():  # PyTorch's wider default init: members that start apart
            if isinstance(m, nn.Linear):
                m.reset_parameters()

    @staticmethod
    def _init(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, std=0.02)

    # ------------------------------------------------------------------ core
    def embed(self, ids: torch.Tensor, actions: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """Embed a chunk.

        Args:
            ids: ``(b, q)`` int64 frame-token ids (mask id allowed; ignored at non-frame slots).
            actions: ``(b, q, k, a)`` / ``(b, q, k)`` actions (read at action slots only).
            pos: ``(b, q)`` int64 layout positions.
        """
        lay = self.layout
        kind = lay.kind[pos]
        x = self.tok_emb(ids.clamp(0, self.dims.vocab_size)) + self.spatial_emb(lay.spatial[pos]) + self.view_emb(lay.view[pos])
        x = torch.where((kind == KIND_FRAME)[..., None], x, self.act_emb(actions).to(x.dtype))
        x = torch.where((kind == KIND_BOS)[..., None], self.bos.to(x.dtype), x)
        return x + self.time_emb(lay.time[pos]) + self.kind_emb(kind)

    def forward_chunk(self, ids, actions, pos, mode: str, cache: KVCache | None = None,
                      rows=None, commit: bool = True,
                      text: torch.Tensor | None = None, text_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Run a chunk of positions through the trunk; returns final-normed hidden ``(r, q, d)``.

        Without a cache this is the full-sequence forward (``pos`` must then start at 0). With
        one, ``pos`` must be each row's next cache slots (``cache.lengths[rows] + arange(q)``);
        ``rows`` (host int array, or None for all rows) picks the cache rows, and ``commit``
        advances their lengths (on the host: nothing here waits on the device).
        """
        x = self.embed(ids, actions, pos)
        # A full token-causal sequence needs no explicit mask: SDPA's is_causal path is faster.
        causal = cache is None and mode == "sequential"
        inner = None if causal else self.layout.mask(pos, mode)
        if cache is None:
            ctx = ChunkContext(None, None, inner, causal=causal)
        else:
            q = ids.shape[1]
            host = np.arange(cache.batch) if rows is None else np.asarray(rows, dtype=np.int64)
            dev_rows = None if rows is None else torch.as_tensor(host, device=ids.device)
            ctx = ChunkContext(cache, dev_rows, inner, pos, int(cache.lengths[host].max()) + q)
        rope = self.rope.angles(self.layout.rope_pos[pos])
        for i, blk in enumerate(self.blocks):
            x = blk(x, rope, ctx, i, text, text_mask)
        if cache is not None and commit:
            cache.lengths[host] += q
        return self.norm(x)

    def heads(self, h: torch.Tensor) -> dict[str, torch.Tensor]:
        """Reward / termination / success predictions from action-token hidden states ``(..., d)``."""
        r = self.head_reward(h).float()
        done = self.head_done(h).float()
        out = {"terminated_logit": done[..., 0]}
        if self.cfg.reward_classes:
            out["reward_logits"] = r
            out["reward"] = r.argmax(-1).float() - 1.0  # classes are sign -1, 0, +1
        else:
            out["reward_normed"] = r[..., 0]
            out["reward"] = r[..., 0] * self.cfg.reward_scale
        if self.cfg.reward_ensemble:
            members = torch.stack([r[..., 0]] + [m(h)[..., 0].float() for m in self.head_reward_ens])
            out["reward_members"] = members
            out["reward_std"] = members.std(0, unbiased=False) * self.cfg.reward_scale
        if self.cfg.success_head:
            out["success_logit"] = done[..., 1]
        return out

    def new_cache(self, batch: int, dtype: torch.dtype | None = None) -> KVCache:
        """A static cache for ``batch`` rows, in ``dtype`` (default: the weights' dtype; under bf16
        autocast keys and values are computed in bf16, and a bf16 cache keeps them so)."""
        p = next(self.parameters())
        c = self.cfg
        return KVCache(c.depth, batch, self.dims.max_len, c.kv_heads, c.dim // c.heads, p.device, dtype or p.dtype)

    # ------------------------------------------------------------ sequences
    def sequence(self, tokens: torch.Tensor, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Lay out ``(b, l, v, h, w)`` tokens and ``(b, l, k, a)`` actions as ``(b, q)`` ids and
        ``(b, q, k, a)`` per-position actions, ``n = 1 + t*L``."""
        b, t = tokens.shape[:2]
        ids = rearrange(tokens, "b t v h w -> b t (v h w)")
        ids = torch.cat((ids, ids.new_zeros(b, t, 1)), dim=2).reshape(b, -1)
        ids = torch.cat((ids.new_zeros(b, 1), ids), dim=1)
        n = ids.shape[1]
        acts = actions.new_zeros((b, n) + tuple(actions.shape[2:]))
        slots = 1 + torch.arange(t, device=tokens.device) * self.dims.block + self.dims.frame_tokens
        acts[:, slots] = actions
        return ids, acts

    def action_slots(self, t: int, device) -> torch.Tensor:
        return 1 + torch.arange(t, device=device) * self.dims.block + self.dims.frame_tokens

    def frame_slots(self, t: int, device) -> torch.Tensor:
        """``(l, n)`` positions of every frame token (``n = v*h*w``)."""
        base = 1 + torch.arange(t, device=device)[:, None] * self.dims.block
        return base + torch.arange(self.dims.frame_tokens, device=device)[None, :]

    # -------------------------------------------------------------- training
    def forward(self, tokens, actions, reward, terminated, success=None, valid=None,
                text=None, text_mask=None, generator: torch.Tensor | torch.Generator | None = None) -> LossAndLogs:
        """Training loss on token windows.

        Args:
            tokens: ``(b, l, v, h, w)`` int64 ids.
            actions: ``(b, l, k, a)`` float or ``(b, l, k)`` int64; action t follows frame t.
            reward, terminated, success: ``(b, l)`` targets for step t; ``valid (b, t)`` masks them.
        """
        c = self.cfg
        b, t = tokens.shape[:2]
        n_par = int(round(b * c.parallel_fraction)) if b > 1 else int(c.parallel_fraction >= 0.5)
        ids, acts = self.sequence(tokens, actions)
        pos = torch.arange(ids.shape[1], device=ids.device).expand(b, -1)
        fs = self.frame_slots(t, ids.device).flatten()
        a_slots = self.action_slots(t, ids.device)
        logs, losses, hidden = {}, [], []
        for mode, rows in (("sequential", slice(n_par, b)), ("parallel", slice(0, n_par))):
            r_ids = ids[rows]
            if r_ids.shape[0] == 0:
                continue
            r_txt = None if text is None else text[rows]
            r_tm = None if text_mask is None else text_mask[rows]
            if mode == "sequential":
                h = self.forward_chunk(r_ids, acts[rows], pos[rows], mode, text=r_txt, text_mask=r_tm)
                logits = self.head_next(h[:, fs - 1]).float()  # position p predicts p + 1
                loss = F.cross_entropy(logits.flatten(0, 1), r_ids[:, fs].flatten())
            else:
                masked = self._random_mask(r_ids.shape[0], t, ids.device, generator)  # (r, l*n): the parallel rows
                inp = r_ids.clone()
                inp[:, fs] = torch.where(masked, self.dims.mask_id, r_ids[:, fs])
                h = self.forward_chunk(inp, acts[rows], pos[rows], mode, text=r_txt, text_mask=r_tm)
                logits = self.head_mask(h[:, fs]).float()
                ce = F.cross_entropy(logits.flatten(0, 1), r_ids[:, fs].flatten(), reduction="none")
                w = masked.flatten().float()  # the masked positions' mean: no data-dependent shapes
                loss = (ce * w).sum() / w.sum()
            logs[f"ce_{mode}"] = loss.detach()
            losses.append(loss * (r_ids.shape[0] / b))
            hidden.append(h[:, a_slots])
        head_loss, head_logs = self.head_loss(torch.cat(hidden[::-1]), reward, terminated, success, valid)
        logs.update(head_logs)
        return LossAndLogs(loss=sum(losses) + head_loss, logs=logs)

    def _random_mask(self, b: int, t: int, device, generator) -> torch.Tensor:
        """MaskGIT training mask: each frame masks a cos-schedule fraction (>= 1 token)."""
        n = self.dims.frame_tokens
        u = rng.draw(generator, 0, (b, t, 1), device)
        k = (torch.cos(u * math.pi / 2) * n).ceil().clamp(1, n)
        score = rng.draw(generator, 1, (b, t, n), device)
        rank = score.argsort(-1).argsort(-1)
        return (rank < k).reshape(b, t * n)

    def head_loss(self, h, reward, terminated, success, valid):
        out = self.heads(h)
        valid = torch.ones_like(terminated, dtype=torch.bool) if valid is None else valid
        vf = valid.float()
        denom = vf.sum().clamp_min(1)
        if self.cfg.reward_classes:
            target = (torch.sign(reward) + 1).long()
            r_loss = (F.cross_entropy(out["reward_logits"].flatten(0, 1), target.flatten(), reduction="none") * vf.flatten()).sum() / denom
        else:
            target = reward.float() / self.cfg.reward_scale
            r_loss = (F.mse_loss(out["reward_normed"], target, reduction="none") * vf).sum() / denom
        d_loss = (F.binary_cross_entropy_with_logits(out["terminated_logit"], terminated.float(), reduction="none") * vf).sum() / denom
        logs = {"reward_loss": r_loss.detach(), "terminated_loss": d_loss.detach()}
        loss = r_loss + d_loss
        if self.cfg.reward_ensemble:  # every extra member regresses the same targets
            target = reward.float() / self.cfg.reward_scale
            e_loss = (F.mse_loss(out["reward_members"][1:], target.expand_as(out["reward_members"][1:]),
                                 reduction="none") * vf).sum() / (denom * self.cfg.reward_ensemble)
            logs["reward_ensemble_loss"] = e_loss.detach()
            loss = loss + e_loss
        if self.cfg.success_head and success is not None:
            s_loss = (F.binary_cross_entropy_with_logits(out["success_logit"], success.float(), reduction="none") * vf).sum() / denom
            logs["success_loss"] = s_loss.detach()
            loss = loss + s_loss
        return loss, logs
