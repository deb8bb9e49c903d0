"""The token geometry of a world model, and what any tokenizer must offer to be its tokenizer.

:class:`Geometry` is derived once, from the tokenizer's config, the camera rig and the action
space; the backbone, the diffusion decoder, the rollout and the envs read their dimensions from
it, so no dimension is stored twice and none can disagree.

:class:`Tokenizer` is the protocol a discrete video tokenizer implements to plug into a
:class:`~wfm_sim.models.world_model.WorldModel`: wfm_sim's own
:class:`~wfm_sim.models.tokenizer.VideoTokenizer` and NVIDIA's Cosmos tokenizer
(:class:`~wfm_sim.models.cosmos_tokenizer.CosmosVideoTokenizer`) both do.

Dimension legend: :mod:`wfm_sim.dims`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch


@runtime_checkable
class TokenizerConfigLike(Protocol):
    """What a tokenizer config tells a world model."""

    kind: str
    """'wfm' or 'cosmos': which tokenizer class the config builds."""

    @property
    def vocab_size(self) -> int: ...

    @property
    def grid(self) -> int: ...

    @property
    def image_size(self) -> int: ...

    @property
    def temporal_downsample(self) -> int: ...

    @property
    def per_frame(self) -> bool: ...


@runtime_checkable
class Tokenizer(Protocol):
    """A discrete video tokenizer: clips of frames <-> token ids, causal in time."""

    cfg: TokenizerConfigLike

    def encode(self, video: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """``(b, 3, t, H, W)`` in [-1, 1] (``t = 1 + f*m``) -> ``(tokens (b, l, h, w) int64, ...)``."""
        ...

    def decode(self, tokens: torch.Tensor, check: bool = True) -> torch.Tensor:
        """``(b, l, h, w)`` int64 ids -> ``(b, 3, t, H, W)`` frames in [-1, 1] (``check=False``:
        ids from this tokenizer or its sampler, no range check on the host)."""
        ...


@dataclass(frozen=True)
class Geometry:
    """Every dimension the parts of one world model share."""

    vocab_size: int
    """``K``: token ids are ``0 .. K-1``."""
    grid: int
    """``h = w``: tokens per side of one view's latent frame."""
    frames_per_token: int
    """``f``: video frames (and actions) per latent frame."""
    image_size: int
    """``H = W``: pixels per side."""
    views: int
    """``v``: cameras."""
    per_frame: bool
    """The tokenizer codes each frame alone (no temporal receptive field)."""
    action_dim: int
    """``a``: features of a Box action (1 for a discrete one)."""
    num_actions: int
    """Choices of a discrete action (0 for a Box one)."""

    @property
    def tokens_per_frame(self) -> int:
        """``n = v*h*w``: tokens of one latent frame, every view."""
        return self.views * self.grid * self.grid

    @classmethod
    def of(cls, tokenizer: TokenizerConfigLike, cameras: tuple[str, ...], action) -> "Geometry":
        """The geometry of a tokenizer config, a camera rig and an ``ActionSpec``."""
        box = action.kind == "box"
        return cls(vocab_size=tokenizer.vocab_size, grid=tokenizer.grid, frames_per_token=tokenizer.temporal_downsample,
                   image_size=tokenizer.image_size, views=len(cameras), per_frame=tokenizer.per_frame,
                   action_dim=action.dim if box else 1, num_actions=0 if box else action.n)
