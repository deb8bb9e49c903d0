"""Sanity limits on config sizes, checked before anything is allocated.

A typo such as ``dim=10**9`` or ``depth=10**7`` would otherwise ask for hundreds of GB or spend
minutes building modules before failing. The limits are far above every preset (the 12B
``large`` model included); each error names the field, its value and the allowed range.
"""

from __future__ import annotations

import math

LIMITS = {
    # tokenizer (vocab_size and grid are its properties: the model's geometry)
    "image_size": (8, 8192), "base_channels": (1, 4096), "num_res_blocks": (0, 16), "token_embed_dim": (1, 4096),
    "vocab_size": (2, 2**20), "grid": (1, 512),
    # backbone
    "max_frames": (2, 4096), "dim": (8, 65536),
    "depth": (1, 512), "heads": (1, 512), "kv_heads": (1, 512), "mlp_ratio": (0.25, 16),
    "text_dim": (0, 65536),
    # decoder
    "steps": (1, 1000),
}
POLICY_LIMITS = {"image_size": (8, 8192), "cameras": (1, 64), "action_dim": (1, 4096), "width": (1, 4096),
                 "hidden": (1, 65536), "keypoints": (1, 4096)}
"""The same for pixel policies (``ConvPolicyConfig``, ``ActorCriticConfig``): a config.json saying
``width: 1000000`` would otherwise ask for terabytes when the policy is built on load."""


def check_limits(cfg, fields: tuple[str, ...] | None = None, limits: dict | None = None) -> None:
    """Raise ``ValueError`` for a field of ``cfg`` outside ``limits`` (default :data:`LIMITS`) or not
    a finite number."""
    limits = LIMITS if limits is None else limits
    names = fields if fields is not None else tuple(f for f in limits if hasattr(cfg, f))
    for name in names:
        v = getattr(cfg, name)
        lo, hi = limits[name]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or (isinstance(v, float) and not math.isfinite(v)):
            raise ValueError(f"{type(cfg).__name__}.{name} must be a number in [{lo}, {hi}], got {v!r}")
        if not lo <= v <= hi:
            hint = "every preset, the 12B 'large' included, is far inside it" if limits is LIMITS else \
                "a corrupt or mistyped config"
            raise ValueError(f"{type(cfg).__name__}.{name} = {v} is outside the sane range [{lo}, {hi}]; "
                             f"a typo? ({hint})")


def check_numbers(cfg, positive: tuple[str, ...] = (), nonnegative: tuple[str, ...] = (),
                  unit: tuple[str, ...] = ()) -> None:
    """Raise ``ValueError`` for a training hyper-parameter of ``cfg`` that is not a finite number in
    its range: ``positive`` (> 0, a learning rate, a clip), ``nonnegative`` (>= 0, a penalty or a
    loss weight) or ``unit`` ([0, 1], a discount or a fraction). ``None`` passes (an unset option).

    A NaN learning rate or entropy weight would otherwise train for minutes and end in a
    distribution's "invalid values" error; a zero learning rate or clip would train to nothing.
    """
    rules = [(n, "> 0", lambda v: v > 0) for n in positive] + [(n, ">= 0", lambda v: v >= 0) for n in nonnegative]
    rules += [(n, "in [0, 1]", lambda v: 0 <= v <= 1) for n in unit]
    for name, what, ok in rules:
        v = getattr(cfg, name)
        if v is None:
            continue
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or not ok(v):
            raise ValueError(f"{name.replace('_', '-')} must be a finite number {what}, got {v!r}")
