"""Self-attention with a static, per-row KV cache, and text cross-attention.

The cache is preallocated once (``max_len`` positions) and each batch row keeps its own
length, so rows of a vector env can sit at different points of their episodes. A chunk of
``q`` new tokens is written at ``lengths[row] + arange(q)``; the owner of the cache (a
:class:`~wfm_sim.models.rollout.Rollout`) advances the lengths only for chunks it keeps, so a
chunk it does not keep is overwritten by the next one (parallel decoding refines one frame
several times before keeping it).

Dimension legend: :mod:`wfm_sim.dims` (``r`` rows, ``q`` new tokens, ``k`` key positions,
``m`` heads, ``g`` kv heads, ``e`` head dim, ``d`` width, ``p`` prompt tokens).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange, repeat
from torch import nn

from wfm_sim.models.layers import RMSNorm, Rope3D


class KVCache:
    """Static key/value cache for every layer: ``(layers, b, max_len, g, e)``.

    ``lengths`` ``(b,)`` counts each row's filled positions and lives on the host (numpy): the
    caller always knows where a chunk goes and how far keys reach, so no forward ever waits on
    the device to find out.
    """

    def __init__(self, layers: int, batch: int, max_len: int, kv_heads: int, head_dim: int,
                 device: torch.device, dtype: torch.dtype):
        shape = (layers, batch, max_len, kv_heads, head_dim)
        self.k = torch.zeros(shape, device=device, dtype=dtype)
        self.v = torch.zeros(shape, device=device, dtype=dtype)
        self.lengths = np.zeros(batch, dtype=np.int64)
        self.max_len = max_len

    @property
    def batch(self) -> int:
        return self.k.shape[1]

    def nbytes(self) -> int:
        return self.k.numel() * self.k.element_size() * 2


class ChunkContext:
    """Where a chunk of new tokens goes in the cache, and what each new token may see.

    Args:
        cache: the cache, or None for a plain full-sequence forward.
        rows: ``(r,)`` int64 device tensor of the cache rows this chunk belongs to, or None for
            all rows in order.
        inner_mask: ``(r, q, q)`` bool, True where new token i may attend new token j.
        pos: ``(r, q)`` int64 cache slots of the new tokens (``lengths[rows] + arange(q)``).
        kv_len: keys to attend, ``max(lengths[rows]) + q`` (a host int: the caller knows it).
        causal: a cache-free token-causal forward (no mask at all).
    """

    def __init__(self, cache: KVCache | None, rows: torch.Tensor | None, inner_mask: torch.Tensor | None,
                 pos: torch.Tensor | None = None, kv_len: int = 0, causal: bool = False):
        self.cache, self.rows = cache, rows
        self.inner_mask, self.is_causal = inner_mask, causal
        if cache is None:
            if causal != (inner_mask is None):
                raise ValueError("pass either an inner mask or causal=True for a cache-free forward")
            self.mask = None if causal else inner_mask.unsqueeze(1)
            return
        if inner_mask is None or pos is None:
            raise ValueError("a cached forward needs an inner mask and the chunk's cache slots")
        b, q, _ = inner_mask.shape
        if kv_len > cache.max_len:
            raise RuntimeError(f"KV cache overflow: {kv_len} positions > max_len {cache.max_len}")
        self.kv_len, self.write_pos = kv_len, pos
        rel = torch.arange(kv_len, device=pos.device)[None, :] - pos[:, :1]  # (r, k)
        new_vis = torch.gather(inner_mask, 2, rel.clamp(0, q - 1)[:, None, :].expand(b, q, kv_len))
        in_chunk = ((rel >= 0) & (rel < q))[:, None, :]
        self.mask = ((rel < 0)[:, None, :] | (in_chunk & new_vis)).unsqueeze(1)  # (r, 1, q, k)

    def kv(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store this chunk's ``(r, q, g, e)`` keys/values and return all visible ones."""
        if self.cache is None:
            return k, v
        c = self.cache
        row_idx = (torch.arange(c.batch, device=k.device) if self.rows is None else self.rows)[:, None]
        c.k[layer][row_idx, self.write_pos] = k.to(c.k.dtype)
        c.v[layer][row_idx, self.write_pos] = v.to(c.v.dtype)
        if self.rows is None:
            return c.k[layer][:, : self.kv_len], c.v[layer][:, : self.kv_len]
        return c.k[layer][self.rows, : self.kv_len], c.v[layer][self.rows, : self.kv_len]


class SelfAttention(nn.Module):
    """Multi-head self-attention with GQA, QK-norm (RMSNorm on q and k) and 3D RoPE."""

    def __init__(self, dim: int, heads: int, kv_heads: int, dropout: float = 0.0):
        super().__init__()
        if dim % heads or heads % kv_heads:
            raise ValueError(f"dim {dim} must divide by heads {heads}, and heads by kv_heads {kv_heads}")
        self.heads, self.kv_heads, self.head_dim = heads, kv_heads, dim // heads
        self.qkv = nn.Linear(dim, (heads + 2 * kv_heads) * self.head_dim, bias=False)
        self.q_norm, self.k_norm = RMSNorm(self.head_dim), RMSNorm(self.head_dim)
        self.proj = nn.Linear(dim, dim, bias=False)
        self.dropout = dropout

    def forward(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor], ctx: ChunkContext,
                layer: int) -> torch.Tensor:
        e, h, g = self.head_dim, self.heads, self.kv_heads
        q, k, v = self.qkv(x).split((h * e, g * e, g * e), dim=-1)
        q = Rope3D.rotate(self.q_norm(rearrange(q, "b q (m e) -> b m q e", e=e)), *rope)
        k = Rope3D.rotate(self.k_norm(rearrange(k, "b q (g e) -> b g q e", e=e)), *rope)
        v = rearrange(v, "b q (g e) -> b q g e", e=e)
        k_all, v_all = ctx.kv(layer, rearrange(k, "b g q e -> b q g e"), v)  # (b, k, g, e); j = m / g
        k_all = repeat(k_all, "b k g e -> b (g j) k e", j=h // g).to(q.dtype)
        v_all = repeat(v_all, "b k g e -> b (g j) k e", j=h // g).to(q.dtype)
        out = F.scaled_dot_product_attention(
            q, k_all, v_all, attn_mask=ctx.mask, dropout_p=self.dropout if self.training else 0.0,
            is_causal=ctx.is_causal,
        )
        return self.proj(rearrange(out, "b m q e -> b q (m e)"))


class CrossAttention(nn.Module):
    """Attention from sequence tokens to text-encoder embeddings (T5), with QK-norm."""

    def __init__(self, dim: int, text_dim: int, heads: int):
        super().__init__()
        self.heads, self.head_dim = heads, dim // heads
        self.q = nn.Linear(dim, dim, bias=False)
        self.kv = nn.Linear(text_dim, 2 * dim, bias=False)
        self.q_norm, self.k_norm = RMSNorm(self.head_dim), RMSNorm(self.head_dim)
        self.proj = nn.Linear(dim, dim, bias=False)

    def forward(self, x: torch.Tensor, text: torch.Tensor, text_mask: torch.Tensor | None) -> torch.Tensor:
        """``x (b, q, d)``, ``text (b, p, text_dim)``, ``text_mask (b, p)`` bool True = real token."""
        q = self.q_norm(rearrange(self.q(x), "b q (m e) -> b m q e", m=self.heads))
        k, v = rearrange(self.kv(text.to(x.dtype)), "b p (two m e) -> two b m p e", two=2, m=self.heads)
        k = self.k_norm(k)
        mask = None if text_mask is None else text_mask[:, None, None, :]
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.proj(rearrange(out, "b m q e -> b q (m e)"))
