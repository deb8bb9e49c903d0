"""Model speed at the `small` preset: backbone prefill and decode (with / without the KV cache),
frames/s of sequential vs parallel decoding, and diffusion-decoder frames/s per step count,
beside the machine's measured matmul peak.

    python benchmarks/bench_model.py [--batches 1 16 64] [--preset small] [--precision fp32 bf16]
"""

from __future__ import annotations

import argparse

import torch

from common import emit, machine, timed
from wfm_sim.models import SamplingConfig, WorldModel, preset


def flops_per_token(model: WorldModel) -> float:
    """Forward FLOPs per token of the backbone's dense layers (2 x non-embedding parameters)."""
    bb = model.backbone
    dense = sum(p.numel() for n, p in bb.named_parameters() if p.ndim == 2 and "emb" not in n)
    return 2.0 * dense


def bench(model: WorldModel, b: int, precision: str) -> dict:
    c = model.cfg.backbone
    d = model.backbone.dims
    W, n = c.max_frames, d.frame_tokens
    dev = model.device
    tokens = torch.randint(0, c.vocab_size, (b, W - 1, n), device=dev)
    acts = torch.rand(b, W - 2, 1, d.action_dim, device=dev)
    im = model.imagine(b, mode="sequential", sampling=SamplingConfig())

    def prefill():
        with model.autocast():
            im.reset(None, tokens=tokens, actions=acts, seeds=list(range(b)))

    t_prefill = timed(prefill)
    prefill_tokens = 1 + (W - 2) * d.block + n - 1

    def step(mode, steps=8):
        m = model.imagine(b, mode=mode, parallel_steps=steps)
        with model.autocast():
            m.reset(None, tokens=tokens[:, : W - 2], actions=acts[:, : W - 3], seeds=list(range(b)))
        return lambda: _step(model, m, b)

    t_seq = timed(step("sequential"), repeat=2)
    t_par = timed(step("parallel"), repeat=2)

    # Without a cache: every new token re-runs the whole sequence (measured over 8 tokens).
    ids, pos_acts = model.backbone.sequence(tokens[:, : W - 2].view(b, W - 2, 1, 1, n), torch.rand(b, W - 2, 1, d.action_dim, device=dev))
    L0 = ids.shape[1]

    def nocache():
        with torch.no_grad(), model.autocast():
            for k in range(8):
                seq = ids[:, : L0 - 8 + k + 1]
                pos = torch.arange(seq.shape[1], device=dev).expand(b, -1)
                h = model.backbone.forward_chunk(seq, pos_acts[:, : seq.shape[1]], pos, "sequential")
                model.backbone.head_next(h[:, -1])

    t_nocache = timed(nocache, repeat=1)
    fpt = flops_per_token(model)
    return {"batch": b, "precision": precision,
            "prefill_tok_s": b * prefill_tokens / t_prefill,
            "prefill_gflops": b * prefill_tokens * fpt / t_prefill / 1e9,
            "decode_tok_s_cache": b * n / t_seq,
            "decode_tok_s_nocache": b * 8 / t_nocache,
            "frames_s_sequential": b / t_seq,
            "frames_s_parallel8": b / t_par}


def _step(model, im, b):
    a = torch.rand(b, 1, model.backbone.dims.action_dim, device=model.device)
    with model.autocast():
        im.step(a)
    im.count -= 1  # a step commits one block: rewind so every timed step sees the same window
    im.cache.lengths -= im.cfg.block


def bench_decoder(model: WorldModel, b: int, precision: str) -> list[dict]:
    s, g = model.cfg.tokenizer.image_size, model.cfg.tokenizer.grid
    tokens = torch.randint(0, model.cfg.tokenizer.vocab_size, (b, 1, 1, g, g), device=model.device)
    prev = torch.randint(0, 255, (b, 1, s, s, 3), dtype=torch.uint8, device=model.device)
    rows = [{"batch": b, "precision": precision, "decoder": "token",
             "frames_s": b / timed(lambda: model.decode(tokens, "token"))}]
    for k in (1, 2, 4, 8):
        t = timed(lambda: model.decode(tokens, "diffusion", k, prev=prev), repeat=2)
        rows.append({"batch": b, "precision": precision, "decoder": f"diffusion x{k}", "frames_s": b / t})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="small")
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 16, 64])
    ap.add_argument("--precision", nargs="+", default=["fp32", "bf16"])
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()
    info = machine()
    torch.manual_seed(0)
    rows, dec = [], []
    for prec in args.precision:
        model = WorldModel(preset(args.preset)).setup(args.device, prec).eval()
        for b in args.batches:
            rows.append(bench(model, b, prec))
            dec += bench_decoder(model, b, prec)
    emit(f"backbone ({args.preset})", rows, info)
    emit(f"decoders ({args.preset}, 64x64 frames)", dec, info)


if __name__ == "__main__":
    main()
