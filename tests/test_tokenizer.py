"""Video tokenizer: FSQ codes, Haar patcher, temporal causality, shapes and errors."""

import itertools
from dataclasses import replace

import pytest
import torch

from wfm_sim.models.fsq import FSQ
from wfm_sim.models.tokenizer import HARD_FRACTION, TokenizerConfig, VideoTokenizer, haar_patch, haar_unpatch, hard_pixel_l1

GROUPED = TokenizerConfig(image_size=16, spatial_downsample=4, temporal_downsample=4, temporal_kernel=3,
                          base_channels=8, channel_mult=(1, 2), levels=(4, 3, 5))


def test_fsq_every_index_round_trips():
    fsq = FSQ((8, 5, 5, 5))
    idx = torch.arange(fsq.codebook_size).view(1, -1)
    codes = fsq.indices_to_codes(idx)
    assert codes.shape == (1, 4, 1000)
    assert codes.abs().max() <= 1
    assert torch.equal(fsq.codes_to_indices(codes), idx)


def test_fsq_quantise_uses_exactly_the_levels():
    fsq = FSQ((4, 3))
    z = torch.linspace(-10, 10, 2001).view(1, 1, -1).expand(1, 2, -1).contiguous()
    codes, idx = fsq(z)
    assert sorted(set(codes[0, 0].tolist())) == pytest.approx([-1.0, -0.5, 0.0, 0.5])
    assert sorted(set(codes[0, 1].tolist())) == pytest.approx([-1.0, 0.0, 1.0])
    assert idx.min() >= 0 and idx.max() < 12


def test_fsq_straight_through_gradient():
    fsq = FSQ((8, 5, 5, 5))
    z = torch.randn(2, 4, 3, requires_grad=True)
    fsq(z)[0].sum().backward()
    assert z.grad is not None and z.grad.abs().sum() > 0


def test_fsq_rejects_bad_ids():
    fsq = FSQ((4, 4))
    with pytest.raises(ValueError, match=r"\[0, 16\)"):
        fsq.indices_to_codes(torch.tensor([[16]]))
    with pytest.raises(TypeError, match="int"):
        fsq.indices_to_codes(torch.tensor([[1.0]]))


def test_haar_is_invertible():
    x = torch.randn(3, 3, 8, 12)
    assert torch.allclose(haar_unpatch(haar_patch(x)), x, atol=1e-6)


@pytest.mark.parametrize("frames,latent", [(1, 1), (5, 2), (9, 3)])
def test_grouped_shapes(frames, latent):
    tok = VideoTokenizer(GROUPED)
    video = torch.rand(2, 3, frames, 16, 16) * 2 - 1
    ids, codes, latent_z = tok.encode(video)
    assert ids.shape == (2, latent, 4, 4) and ids.dtype == torch.int64
    assert codes.shape == latent_z.shape == (2, 3, latent, 4, 4)
    assert tok.decode(ids).shape == (2, 3, frames, 16, 16)


def test_encoder_is_causal_in_time():
    torch.manual_seed(0)
    tok = VideoTokenizer(GROUPED).eval()
    video = torch.rand(1, 3, 9, 16, 16) * 2 - 1
    changed = video.clone()
    changed[:, :, 5:] = torch.rand_like(changed[:, :, 5:])  # the third group (latent frame 2)
    _, _, z0 = tok.encode(video)
    _, _, z1 = tok.encode(changed)
    assert torch.equal(z0[:, :, :2], z1[:, :, :2]), "latent frames 0-1 must not see frames 5-8"
    assert not torch.equal(z0[:, :, 2], z1[:, :, 2])


def test_decoder_is_causal_in_time():
    torch.manual_seed(0)
    tok = VideoTokenizer(GROUPED).eval()
    ids = torch.randint(0, tok.fsq.codebook_size, (1, 3, 4, 4))
    changed = ids.clone()
    changed[:, 2] = (changed[:, 2] + 1) % tok.fsq.codebook_size
    a, b = tok.decode(ids), tok.decode(changed)
    assert torch.equal(a[:, :, :5], b[:, :, :5]), "frames 0-4 must not depend on latent frame 2"
    assert not torch.equal(a[:, :, 5:], b[:, :, 5:])


def test_per_frame_tokenizer_frames_independent():
    cfg = TokenizerConfig(image_size=16, spatial_downsample=4, base_channels=8, channel_mult=(1, 2), levels=(4, 4))
    tok = VideoTokenizer(cfg).eval()
    video = torch.rand(1, 3, 3, 16, 16) * 2 - 1
    alone = tok.encode(video[:, :, 1:2])[0]
    together = tok.encode(video)[0][:, 1:2]
    assert torch.equal(alone, together)


def test_training_loss_backprops_and_logs_usage():
    tok = VideoTokenizer(GROUPED)
    out = tok(torch.rand(2, 3, 5, 16, 16) * 2 - 1)
    out.loss.backward()
    assert all(p.grad is not None for p in tok.enc_in.parameters())
    assert 0 < out.logs["codebook_used"] <= 1 and out.logs["codebook_perplexity"] >= 1


def test_hard_pixel_term_weighs_a_dropped_small_object():
    """A 2x2 object missing from a 32x32 reconstruction barely moves the mean L1 but dominates the
    mean of the worst 1% of pixels, which is what hard_pixels adds to the loss."""
    err = torch.zeros(1, 3, 1, 32, 32)
    err[..., 10:12, 20:22] = 1.0  # the object's 4 pixels, fully wrong in every channel
    k = int(32 * 32 * HARD_FRACTION)  # 10 worst pixels per frame
    assert hard_pixel_l1(err).item() == pytest.approx(4 / k)
    assert err.mean().item() == pytest.approx(4 / 1024)
    cfg = replace(GROUPED, hard_pixels=0.5)
    tok = VideoTokenizer(cfg)
    torch.manual_seed(0)
    video = torch.rand(2, 3, 5, 16, 16) * 2 - 1
    with_hard, plain = tok(video), VideoTokenizer(GROUPED)
    plain.load_state_dict(tok.state_dict())
    base = plain(video)
    assert float(with_hard.logs["hard_l1"]) == pytest.approx(float(base.logs["hard_l1"]))
    assert with_hard.loss.item() == pytest.approx(base.loss.item() + 0.5 * float(base.logs["hard_l1"]), rel=1e-5)
    with pytest.raises(ValueError, match="hard_pixels must be >= 0"):
        replace(GROUPED, hard_pixels=-1.0)


@pytest.mark.parametrize(
    "video,match",
    [
        (torch.rand(1, 3, 4, 16, 16), "1 \\+ 4\\*m"),
        (torch.rand(1, 1, 5, 16, 16), "\\(b, 3, t, 16, 16\\)"),
        (torch.rand(1, 3, 5, 8, 8), "\\(b, 3, t, 16, 16\\)"),
        (torch.zeros(1, 3, 5, 16, 16, dtype=torch.uint8), "float"),
    ],
)
def test_bad_video_raises(video, match):
    with pytest.raises((ValueError, TypeError), match=match):
        VideoTokenizer(GROUPED).encode(video)


def test_config_validation_names_the_fix():
    with pytest.raises(ValueError, match="divisible"):
        TokenizerConfig(image_size=60, spatial_downsample=8)
    with pytest.raises(ValueError, match="channel_mult"):
        TokenizerConfig(spatial_downsample=16, channel_mult=(1, 2))
    for combo in itertools.product((4, 8, 16), (1, 4, 8)):
        sd, td = combo
        levels = len(bin(sd)) - 3
        if td > 1 and levels < len(bin(td)) - 3:
            continue
        TokenizerConfig(image_size=64, spatial_downsample=sd, temporal_downsample=td, channel_mult=(1,) * levels)
