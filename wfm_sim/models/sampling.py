"""Token sampling with temperature, top-k and top-p, by inverse CDF of given uniforms.

The caller draws the uniforms (one row's from that row's counter-based stream,
:mod:`wfm_sim.models.rng`), so a row's sample never depends on which other rows share the batch.

Dimension legend: :mod:`wfm_sim.dims`.
"""

from __future__ import annotations

import math

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class SamplingConfig:
    """How tokens are drawn from the backbone's logits."""

    temperature: float = 1.0
    """0 means greedy (argmax)."""
    top_k: int = 0
    """Keep the k most likely tokens; 0 keeps all."""
    top_p: float = 1.0
    """Nucleus sampling: keep the smallest set with this much probability; 1.0 keeps all."""

    def __post_init__(self):
        if not math.isfinite(self.temperature) or self.temperature < 0:
            raise ValueError(f"temperature must be a finite number >= 0, got {self.temperature}")
        if isinstance(self.top_k, bool) or not isinstance(self.top_k, int) or self.top_k < 0:
            raise ValueError(f"top_k must be an integer >= 0, got {self.top_k!r}")
        if not math.isfinite(self.top_p):
            raise ValueError(f"top_p must lie in (0, 1], got {self.top_p}")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must lie in (0, 1], got {self.top_p}")


def filtered_probs(logits: torch.Tensor, cfg: SamplingConfig) -> torch.Tensor:
    """Softmax of ``(..., K)`` logits after temperature, top-k and top-p filtering (fp32)."""
    logits = logits.float() / max(cfg.temperature, 1e-6)
    if cfg.top_k and cfg.top_k < logits.shape[-1]:
        kth = torch.topk(logits, cfg.top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = torch.softmax(logits, dim=-1)
    if cfg.top_p < 1.0:
        sorted_p, order = probs.sort(dim=-1, descending=True)
        # Drop a token when the mass before it already reaches top_p (the top token always stays).
        drop = (sorted_p.cumsum(-1) - sorted_p) >= cfg.top_p
        sorted_p = sorted_p.masked_fill(drop, 0.0)
        probs = torch.zeros_like(probs).scatter(-1, order, sorted_p)
        probs = probs / probs.sum(-1, keepdim=True)
    return probs


def sample(logits: torch.Tensor, cfg: SamplingConfig, u: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw one token per position.

    Args:
        logits: ``(b, n, K)``.
        u: ``(b, n)`` fp32 uniforms in [0, 1) (unused, and may be None, when greedy).

    Returns:
        ids ``(b, n)`` int64 and the probability each drawn token had ``(b, n)`` fp32.
    """
    if cfg.temperature == 0:
        probs = torch.softmax(logits.float(), dim=-1)
        ids = probs.argmax(-1)
        return ids, probs.gather(-1, ids[..., None])[..., 0]
    probs = filtered_probs(logits, cfg)
    u = u.to(logits.device).clamp_min(1e-7)  # (b, n); 0 could pick a p=0 token
    cdf = probs.cumsum(-1)
    ids = torch.searchsorted(cdf, (u * cdf[..., -1]).unsqueeze(-1).contiguous()).squeeze(-1)
    ids = ids.clamp(max=logits.shape[-1] - 1)
    return ids, probs.gather(-1, ids[..., None])[..., 0]


def entropy(logits: torch.Tensor) -> torch.Tensor:
    """Mean entropy (nats) over the token axis: ``(b, n, K) -> (b,)``."""
    logp = torch.log_softmax(logits.float(), dim=-1)
    return -(logp.exp() * logp).sum(-1).mean(-1)
