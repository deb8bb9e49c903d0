"""Model code: tokenizer, backbone, diffusion decoder and the WorldModel bundle.

Nothing here imports gymnasium, ray or zarr.
"""

from wfm_sim.models.backbone import Backbone, BackboneConfig
from wfm_sim.models.diffusion import DecoderConfig, DiffusionDecoder
from wfm_sim.models.presets import PRESETS, preset
from wfm_sim.models.rollout import Rollout, RolloutState, StepOut
from wfm_sim.models.sampling import SamplingConfig
from wfm_sim.models.tokenizer import TokenizerConfig, VideoTokenizer
from wfm_sim.models.world_model import ActionSpec, WorldModel, WorldModelConfig, shipped_models

__all__ = [
    "ActionSpec", "Backbone", "BackboneConfig", "DecoderConfig", "DiffusionDecoder",
    "PRESETS", "Rollout", "RolloutState", "StepOut", "SamplingConfig", "TokenizerConfig", "VideoTokenizer", "WorldModel", "WorldModelConfig",
    "preset", "shipped_models",
]
