"""EDM diffusion decoder: preconditioning maths, schedule, sampler and learning."""

import math

import pytest
import torch

from wfm_sim.models.diffusion import DecoderConfig, DiffusionDecoder, edm_scalings, karras_sigmas
from wfm_sim.models.geometry import Geometry

CFG = DecoderConfig(base_channels=8, channel_mult=(1, 2), token_embed_dim=4, prev_noise=0.0)
GEO = Geometry(vocab_size=64, grid=4, frames_per_token=1, image_size=16, views=1, per_frame=True, action_dim=3,
               num_actions=0)


def test_edm_scalings_match_the_paper():
    sd = 0.5
    sigma = torch.tensor([0.002, 0.5, 80.0])
    c_skip, c_out, c_in, c_noise = edm_scalings(sigma, sd)
    torch.testing.assert_close(c_skip, sd**2 / (sigma**2 + sd**2))
    torch.testing.assert_close(c_out, sigma * sd / (sigma**2 + sd**2).sqrt())
    torch.testing.assert_close(c_in, 1 / (sigma**2 + sd**2).sqrt())
    torch.testing.assert_close(c_noise, 0.25 * sigma.log())
    # Unit-variance network input and target for unit-variance data-plus-noise (EDM's design goal).
    torch.testing.assert_close(c_in * (sigma**2 + sd**2).sqrt(), torch.ones(3))
    assert c_skip[0] > 0.99 and c_skip[2] < 1e-4


def test_karras_schedule():
    s = karras_sigmas(4, 0.002, 80.0, 7.0)
    assert s.shape == (5,) and s[-1] == 0
    assert math.isclose(float(s[0]), 80.0, rel_tol=1e-5) and math.isclose(float(s[3]), 0.002, rel_tol=1e-4)
    assert bool((s[:-1] > s[1:]).all())
    assert karras_sigmas(1, 0.002, 80.0, 7.0).tolist() == [80.0, 0.0]


def test_one_euler_step_is_one_denoiser_call():
    torch.manual_seed(0)
    dec = DiffusionDecoder(CFG, GEO).eval()
    tokens = torch.randint(0, 64, (2, 4, 4))
    frames = torch.rand(2, 3, 16, 16) * 2 - 1
    out = dec.sample(tokens, frames, frames, steps=1, generator=torch.Generator().manual_seed(1))
    smax = dec.cfg.sigma_max
    x = torch.randn((2, 3, 16, 16), generator=torch.Generator().manual_seed(1)) * smax
    residual = dec.denoise(x, torch.full((2,), smax), dec.cond(tokens, frames, frames), torch.zeros(2))[0]
    ref = (residual + frames).clamp(-1, 1)  # the decoder diffuses frame - token decode
    torch.testing.assert_close(out, ref, atol=1e-4, rtol=0)  # x - (x - D) cancels |x| ~ sigma_max


def test_per_row_generators_make_rows_independent():
    torch.manual_seed(0)
    dec = DiffusionDecoder(CFG, GEO).eval()
    tokens = torch.randint(0, 64, (3, 4, 4))
    frames = torch.rand(3, 3, 16, 16) * 2 - 1
    gens = lambda: [torch.Generator().manual_seed(s) for s in (1, 2, 3)]
    both = dec.sample(tokens, frames, frames, steps=2, generator=gens())
    alone = dec.sample(tokens[1:2], frames[1:2], frames[1:2], steps=2, generator=gens()[1:2])
    torch.testing.assert_close(both[1:2], alone, atol=1e-5, rtol=0)


def _fit(dec, tokens, frames, token_decode, prev, iters):
    """Adam on one fixed batch; returns the EDM mse of every iteration."""
    opt = torch.optim.Adam(dec.parameters(), lr=2e-3)
    g = torch.Generator().manual_seed(0)
    losses = []
    for _ in range(iters):
        out = dec(frames, tokens, token_decode, prev, generator=g)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        losses.append(out.logs["edm_mse"])
    return losses


def test_decoder_learns_a_fixed_batch():
    torch.manual_seed(0)
    dec = DiffusionDecoder(CFG, GEO)
    tokens = torch.randint(0, 64, (8, 4, 4))
    frames = torch.rand(8, 3, 16, 16) * 2 - 1
    losses = _fit(dec, tokens, frames, frames * 0.5, frames.roll(1, 0), 60)
    assert sum(losses[-10:]) / 10 < 0.5 * sum(losses[:10]) / 10


def test_residual_decoder_keeps_a_static_frame():
    """Trained where frame, previous frame and token decode agree, it returns the frame nearly exactly."""
    torch.manual_seed(0)
    dec = DiffusionDecoder(CFG, GEO)
    tokens = torch.randint(0, 64, (8, 4, 4))
    frames = torch.rand(8, 3, 16, 16) * 2 - 1
    _fit(dec, tokens, frames, frames, frames, 150)
    sample = dec.sample(tokens, frames, frames, steps=1, generator=torch.Generator().manual_seed(1))
    mse = ((sample - frames) ** 2).mean() / 4
    assert -10 * torch.log10(mse) > 35  # dB on the [0, 1] scale


def test_previous_frame_noise_augmentation_is_used_in_training():
    dec = DiffusionDecoder(CFG, GEO)
    tokens = torch.randint(0, 64, (4, 4, 4))
    frames = torch.rand(4, 3, 16, 16) * 2 - 1
    seen = []
    orig = dec.cond
    dec.cond = lambda t, td, prev, *rest: seen.append(prev) or orig(t, td, prev, *rest)
    dec(frames, tokens, frames, frames, generator=torch.Generator().manual_seed(0))
    assert not torch.equal(seen[0], frames) and (seen[0] - frames).abs().max() < 1.5
    dec.cfg = DecoderConfig(**{**vars(CFG), "prev_noise_max": 0.0})
    seen.clear()
    dec(frames, tokens, frames, frames, generator=torch.Generator().manual_seed(0))
    assert torch.equal(seen[0], frames)


def test_missing_conditioning_is_named():
    dec = DiffusionDecoder(CFG, GEO)
    with pytest.raises(ValueError, match="prev"):
        dec.cond(torch.zeros(1, 4, 4, dtype=torch.long), torch.zeros(1, 3, 16, 16), None)
    with pytest.raises(ValueError, match=r"\(b, 4, 4\)"):
        dec.cond(torch.zeros(1, 5, 5, dtype=torch.long), None, None)
    with pytest.raises(ValueError, match="sampler"):
        DecoderConfig(sampler="ddim")
    with pytest.raises(ValueError, match="residual='prev' needs cond_prev_frame"):
        DecoderConfig(cond_prev_frame=False, residual="prev")
    with pytest.raises(ValueError, match="residual must be"):
        DecoderConfig(residual="prev_frame")
