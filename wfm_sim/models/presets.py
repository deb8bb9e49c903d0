"""Model presets: plain Python constants, from test-sized to Cosmos-sized.

``tiny`` builds in milliseconds for tests; ``small`` (8x8 tokens per view) and ``small-mv``
(4x4 tokens per view, for 4-6 camera rigs) are the CPU-trainable defaults at 64x64; ``base``
and ``large`` follow Cosmos-Predict1 (DV8x16x16 tokenizer with 64,000 FSQ codes, 4B / 12B-class
backbones) and are meant for GPUs (they at least construct on the meta device here).
"""

from __future__ import annotations

from dataclasses import replace

from wfm_sim.models.backbone import BackboneConfig
from wfm_sim.models.diffusion import DecoderConfig
from wfm_sim.models.tokenizer import TokenizerConfig
from wfm_sim.models.world_model import ActionSpec, WorldModelConfig

_TOKENIZERS = {
    "tiny": TokenizerConfig(image_size=16, spatial_downsample=4, base_channels=8, channel_mult=(1, 2),
                            levels=(4, 4, 4), attention=True),
    "small": TokenizerConfig(image_size=64, spatial_downsample=8, base_channels=48, channel_mult=(1, 2, 2),
                             levels=(8, 5, 5, 5)),
    "small-mv": TokenizerConfig(image_size=64, spatial_downsample=16, base_channels=48, channel_mult=(1, 1, 2, 2),
                                levels=(8, 5, 5, 5)),
    # Cosmos DV8x16x16: 8x temporal, 16x spatial, FSQ [8,8,8,5,5,5] = 64,000 codes.
    "base": TokenizerConfig(image_size=640, spatial_downsample=16, temporal_downsample=8, temporal_kernel=3,
                            base_channels=128, channel_mult=(1, 2, 4, 4), num_res_blocks=2,
                            levels=(8, 8, 8, 5, 5, 5)),
}
_TOKENIZERS["large"] = _TOKENIZERS["base"]
# Grouped time at test size: frame 0 alone, then groups of 4 frames per latent frame (as Cosmos DV4x8x8).
_TOKENIZERS["tiny-k4"] = replace(_TOKENIZERS["tiny"], temporal_downsample=4, temporal_kernel=3)
_TOKENIZERS["rl"] = _TOKENIZERS["small-mv"]
# The rl preset with Cosmos-style grouped time: 4 frames per latent frame, 4x4 tokens per frame group.
_TOKENIZERS["rl-k4"] = replace(_TOKENIZERS["rl"], temporal_downsample=4, temporal_kernel=3)

_BACKBONES = {
    "tiny": BackboneConfig(dim=32, depth=2, heads=4, kv_heads=2, max_frames=4),
    "tiny-k4": BackboneConfig(dim=32, depth=2, heads=4, kv_heads=2, max_frames=4),
    "small": BackboneConfig(dim=256, depth=6, heads=8, kv_heads=4, max_frames=6),
    "small-mv": BackboneConfig(dim=256, depth=6, heads=8, kv_heads=4, max_frames=6),
    # For RL in imagination on a CPU: one 4x4-token camera, a narrow and shallow backbone.
    "rl": BackboneConfig(dim=128, depth=4, heads=4, kv_heads=2, max_frames=4),
    "rl-k4": BackboneConfig(dim=128, depth=4, heads=4, kv_heads=2, max_frames=4),
    # Cosmos-Predict1-4B-like: 16 layers, width 4096, 32 heads, 8 kv heads, SwiGLU 14336.
    "base": BackboneConfig(dim=4096, depth=16, heads=32, kv_heads=8, mlp_ratio=3.5, max_frames=3),
    # Cosmos-Predict1-12B-like: 40 layers, width 5120, 32 heads, 8 kv heads.
    "large": BackboneConfig(dim=5120, depth=40, heads=32, kv_heads=8, mlp_ratio=2.8, max_frames=3),
}

_DECODERS = {
    "tiny": DecoderConfig(base_channels=8, channel_mult=(1, 2), token_embed_dim=4, steps=2),
    "small": DecoderConfig(base_channels=32, channel_mult=(1, 2, 2), token_embed_dim=16),
    "small-mv": DecoderConfig(base_channels=32, channel_mult=(1, 2, 2), token_embed_dim=16),
    "base": DecoderConfig(base_channels=128, channel_mult=(1, 2, 2, 4), num_res_blocks=2,
                          token_embed_dim=32, cond_prev_frame=False, steps=4),
}
_DECODERS["large"] = _DECODERS["base"]
_DECODERS["tiny-k4"] = _DECODERS["tiny"]
_DECODERS["rl"] = _DECODERS["small-mv"]
_DECODERS["rl-k4"] = _DECODERS["small-mv"]

PRESETS = tuple(_BACKBONES)


def preset(name: str, /, cameras: tuple[str, ...] = ("CAM_FRONT",), action: ActionSpec = ActionSpec(),
           text_dim: int = 0, success_head: bool = False, **fields) -> WorldModelConfig:
    """A consistent :class:`WorldModelConfig` for ``name``, the camera rig and the action space.

    Extra ``fields`` override :class:`WorldModelConfig` fields (e.g. ``fps``, ``name``).
    """
    if name not in _BACKBONES:
        raise ValueError(f"unknown preset {name!r}; choose one of {PRESETS}")
    tok = _TOKENIZERS[name]
    backbone = replace(_BACKBONES[name], text_dim=text_dim, success_head=success_head)
    fields.setdefault("context_frames", min(2, backbone.max_frames - 1))
    return WorldModelConfig(tokenizer=tok, backbone=backbone, decoder=_DECODERS[name], cameras=tuple(cameras),
                            action=action, **fields)


def with_tokenizer(cfg: WorldModelConfig, tok) -> WorldModelConfig:
    """``cfg`` with the tokenizer ``tok`` (e.g. another model's, or a Cosmos tokenizer): the
    backbone and decoder take their vocabulary, token grid, frame size and temporal compression
    from it (the model's geometry)."""
    return replace(cfg, tokenizer=tok)
