"""Counter-based random numbers: one Philox draw for a whole batch, every row on its own stream.

A draw is a pure function of ``(seed, step, stream, position)``: the row's seed, the row's step
counter, which draw of the step it is (a sampling pass, the diffusion noise, ...) and the
position inside the draw. Nothing is stateful, so

* a row's numbers never depend on which other rows share the batch, how many there are or in
  which order they sit (the determinism promise of the imagined envs);
* a snapshot of a rollout is its seeds and step counters: restoring them replays the same
  numbers, which is what branching from a saved state needs;
* the whole batch takes one call (a few dozen elementwise tensor ops; one fused kernel under
  ``torch.compile``) instead of one generator call per row.

The bijection is Philox4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3",
SC'11), the generator cuRAND and torch's CUDA backend use. Its 32x32 -> 64-bit multiplies are
done in 16-bit halves so every intermediate fits an int64: results are exact and identical on
any device and any CPU.

Dimension legend: :mod:`wfm_sim.dims`.
"""

from __future__ import annotations

import torch

_M0, _M1 = 0xD2511F53, 0xCD9E8D57  # Philox4x32 round multipliers
_W0, _W1 = 0x9E3779B9, 0xBB67AE85  # Weyl key increments (golden ratio, sqrt(3) - 1)
_MASK = 0xFFFFFFFF
ROUNDS = 10

# Draw streams: one per kind of randomness in a step, so no two ever share numbers.
TOKENS = 0
"""Token sampling: all of a step's uniforms in one draw."""
DIFFUSION = 1 << 16
"""The diffusion decoder's noise."""


def _mulhilo(a: torch.Tensor, m: int) -> tuple[torch.Tensor, torch.Tensor]:
    """High and low 32-bit words of ``a * m`` for ``0 <= a < 2**32`` (int64 tensor), exactly."""
    p_lo = a * (m & 0xFFFF)  # < 2**48
    p_hi = a * (m >> 16)  # < 2**48
    s = ((p_hi & 0xFFFF) << 16) + p_lo  # < 2**49
    return (p_hi >> 16) + (s >> 32), s & _MASK


def philox(key: torch.Tensor, counter: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    """Philox4x32-10 of broadcastable int64 tensors holding 32-bit words.

    Args:
        key: ``(..., 2)`` int64, two 32-bit key words.
        counter: four int64 tensors (32-bit words), broadcastable with ``key[..., 0]``.

    Returns:
        four int64 tensors of 32-bit random words.
    """
    k0, k1 = key[..., 0], key[..., 1]
    c0, c1, c2, c3 = counter
    for _ in range(ROUNDS):
        hi0, lo0 = _mulhilo(c0, _M0)
        hi1, lo1 = _mulhilo(c2, _M1)
        c0, c1, c2, c3 = hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0
        k0, k1 = (k0 + _W0) & _MASK, (k1 + _W1) & _MASK
    return c0, c1, c2, c3


def uniform(seeds: torch.Tensor, steps: torch.Tensor, stream: int, n: int,
            lanes: torch.Tensor | None = None) -> torch.Tensor:
    """``(b, n)`` fp32 uniforms in [0, 1), a pure function of each row's seed, step and lane.

    Args:
        seeds: ``(b,)`` int64 row seeds (any value; the low 64 bits are the Philox key).
        steps: ``(b,)`` int64 each row's step counter (counted modulo 2**32).
        stream: which draw of the step (see ``TOKENS``, ``DIFFUSION``), ``0 <= stream < 2**32``.
        n: positions per row.
        lanes: ``(b,)`` int64 sub-streams of one row (for example the camera of a decoded view);
            None is lane 0.
    """
    dev = seeds.device
    key = torch.stack((seeds & _MASK, (seeds >> 32) & _MASK), -1)[:, None]  # (b, 1, 2)
    quads = (n + 3) // 4  # each counter gives four words
    pos = torch.arange(quads, device=dev, dtype=torch.long)[None]  # (1, q)
    lane = torch.zeros_like(steps) if lanes is None else lanes
    words = philox(key, (pos, torch.full_like(pos, stream), (steps & _MASK)[:, None], (lane & _MASK)[:, None]))
    bits = torch.stack(words, -1).flatten(1)[:, :n]  # (b, n) 32-bit words
    return (bits >> 8).float() * (1.0 / (1 << 24))  # 24 random bits: every value exact in fp32


def normal(seeds: torch.Tensor, steps: torch.Tensor, stream: int, shape: tuple[int, ...],
           lanes: torch.Tensor | None = None) -> torch.Tensor:
    """``(b, *shape)`` fp32 standard normals (Box-Muller on :func:`uniform`)."""
    b, n = seeds.shape[0], 1
    for s in shape:
        n *= s
    u = uniform(seeds, steps, stream, 2 * ((n + 1) // 2), lanes).view(b, 2, -1)
    r = torch.sqrt(-2.0 * torch.log1p(-u[:, 0]))  # 1 - u in (0, 1]: log never sees 0
    theta = (2.0 * torch.pi) * u[:, 1]
    return torch.cat((r * torch.cos(theta), r * torch.sin(theta)), 1)[:, :n].reshape((b,) + tuple(shape))


class RowNoise:
    """Gaussian noise for a batch whose rows keep their own counter-based streams.

    Each call to :meth:`randn` takes the next stream after ``stream``, so one decode call can
    draw several noises (the previous frame's augmentation, the initial latent) that never
    repeat, and the same call on the same keys draws the same noise.

    Args:
        seeds, steps: ``(b,)`` int64 row keys (see :func:`uniform`).
        stream: the first stream to draw from.
        lanes: ``(b,)`` int64 sub-streams (see :func:`uniform`).
    """

    def __init__(self, seeds: torch.Tensor, steps: torch.Tensor, stream: int = DIFFUSION,
                 lanes: torch.Tensor | None = None):
        self.seeds, self.steps, self.stream, self.lanes = seeds, steps, stream, lanes

    def __len__(self) -> int:
        return self.seeds.shape[0]

    def per_view(self, v: int) -> "RowNoise":
        """Keys for ``(b v)`` rows (batch-major): every view of a row on its own lane."""
        lanes = torch.arange(v, device=self.seeds.device).repeat(len(self))
        return RowNoise(self.seeds.repeat_interleave(v), self.steps.repeat_interleave(v), self.stream, lanes)

    def randn(self, shape: tuple[int, ...], device: torch.device | None = None) -> torch.Tensor:
        """``(b, *shape)`` standard normals on the next stream."""
        out = normal(self.seeds, self.steps, self.stream, shape, self.lanes)
        self.stream += 1
        return out if device is None else out.to(device)


def key(seed: int, step: int = 0, device: torch.device | str = "cpu") -> torch.Tensor:
    """A ``(2,)`` int64 key ``[seed, step]`` for whole-tensor draws (:func:`rand`, :func:`randn`).

    A key is a plain tensor, so a compiled training step takes it as an input like any other:
    the same key gives the same draws, eager or compiled, on any device.
    """
    return torch.tensor([seed, step], dtype=torch.long, device=device)


def rand(k: torch.Tensor, stream: int, shape: tuple[int, ...]) -> torch.Tensor:
    """Uniforms in [0, 1) of ``shape`` from key ``k`` on ``stream``."""
    n = 1
    for s in shape:
        n *= s
    return uniform(k[:1], k[1:], stream, n).reshape(shape)


def randn(k: torch.Tensor, stream: int, shape: tuple[int, ...]) -> torch.Tensor:
    """Standard normals of ``shape`` from key ``k`` on ``stream``."""
    return normal(k[:1], k[1:], stream, tuple(shape)).reshape(shape)


def draw(generator, stream: int, shape: tuple[int, ...], device, normal_: bool = False) -> torch.Tensor:
    """Uniforms (or normals) of ``shape`` from a counter key (a tensor: :func:`key`), a
    ``torch.Generator`` or None (torch's global generator)."""
    if isinstance(generator, torch.Tensor):
        out = randn(generator, stream, shape) if normal_ else rand(generator, stream, shape)
        return out.to(device)
    fn = torch.randn if normal_ else torch.rand
    return fn(shape, device=device, generator=generator)
