"""Check wfm_sim's Cosmos tokenizer against NVIDIA's reference implementation, layer for layer.

    git clone https://github.com/NVIDIA/Cosmos-Tokenizer /tmp/Cosmos-Tokenizer
    python scripts/check_cosmos_reference.py --cosmos-src /tmp/Cosmos-Tokenizer

For each released DV variant: the reference network's parameter names and shapes at full size
must equal ours; then, at a reduced width with random weights (the architecture is the same
code path), the reference's state dict is loaded into ours with strict=True and both encode and
decode the same random clip. Prints the largest differences. NVIDIA's code is only imported
from the path given, never copied into wfm_sim.
"""

from __future__ import annotations

import argparse
import logging
import sys
import types

import torch

from wfm_sim.models.cosmos_tokenizer import VARIANTS, CosmosTokenizerConfig, CosmosVideoTokenizer

ap = argparse.ArgumentParser()
ap.add_argument("--cosmos-src", required=True, help="a checkout of github.com/NVIDIA/Cosmos-Tokenizer")
ap.add_argument("--channels", type=int, default=32, help="width for the numerical comparison")
ap.add_argument("--size", type=int, default=64)
args = ap.parse_args()

if "loguru" not in sys.modules:  # the reference logs with loguru; a stand-in is enough to import it
    try:
        import loguru  # noqa: F401
    except ImportError:
        sys.modules["loguru"] = types.SimpleNamespace(logger=logging.getLogger("cosmos_reference"))
sys.path.insert(0, args.cosmos_src)
from cosmos_tokenizer.networks import TokenizerConfigs, TokenizerModels  # noqa: E402

torch.manual_seed(0)
worst = 0.0
for name, (k, s) in VARIANTS.items():
    ref_cfg = dict(TokenizerConfigs["DV"].value, temporal_compression=k, spatial_compression=s)
    ref = TokenizerModels["DV"].value(**ref_cfg)
    with torch.device("meta"):
        ours = CosmosVideoTokenizer(CosmosTokenizerConfig.variant(name))
    ref_shapes = {n: tuple(v.shape) for n, v in ref.state_dict().items()}
    our_shapes = {n: tuple(v.shape) for n, v in ours.state_dict().items()}
    same = ref_shapes == our_shapes
    print(f"{name}: full size, {len(ref_shapes)} tensors, {sum(v.numel() for v in ref.state_dict().values()):,} "
          f"parameters; names and shapes identical: {same}")
    if not same:
        print("  only in reference:", sorted(set(ref_shapes) - set(our_shapes))[:5])
        print("  only in ours:", sorted(set(our_shapes) - set(ref_shapes))[:5])
        print("  shape differs:", [n for n in set(ref_shapes) & set(our_shapes) if ref_shapes[n] != our_shapes[n]][:5])
    del ref

    small = dict(ref_cfg, channels=args.channels)
    ref = TokenizerModels["DV"].value(**small).eval()
    ref.quantizer.dtype = torch.float32  # the reference defaults its codes to bf16
    with torch.no_grad():
        for p in ref.parameters():  # random values everywhere, norms included
            p.copy_(torch.randn_like(p) * (0.5 if p.ndim == 1 else 1.0 / max(1, p[0].numel()) ** 0.5))
    ours = CosmosVideoTokenizer(CosmosTokenizerConfig.variant(name, channels=args.channels)).eval()
    ours.load_state_dict(ref.state_dict(), strict=True)
    video = torch.rand(2, 3, 1 + 2 * k, args.size, args.size) * 2 - 1
    with torch.no_grad():
        ref_latent = ref.quant_conv(ref.encoder(video))
        ref_tokens, ref_codes, _ = ref.quantizer(ref_latent)
        ref_video = ref.decode(ref_codes)
        our_tokens, our_codes, _ = ours.encode(video)
        our_latent = ours.quant_conv(ours.encoder(video))
        our_video = ours.decode_codes(ref_codes)
    d_latent = (ref_latent - our_latent).abs().max().item()
    agree = (ref_tokens.long() == our_tokens).float().mean().item()
    d_video = (ref_video - our_video).abs().max().item()
    worst = max(worst, d_latent, d_video)
    print(f"  width {args.channels}, clip {tuple(video.shape)} -> tokens {tuple(our_tokens.shape)}: "
          f"max |latent diff| {d_latent:.2e}, tokens equal {agree:.2%}, max |decoded diff| {d_video:.2e} "
          f"(decoded range {ref_video.abs().max().item():.1f})")
print(f"largest difference over all variants: {worst:.2e}")
