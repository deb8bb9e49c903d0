"""Loading NVIDIA's Cosmos-Tokenize1 discrete video tokenizers: names, shapes, safety, causality.

The released weights cannot be downloaded here, so checkpoints are built with the released
parameter names and shapes (enumerated below from the Cosmos source's network definition) and
random values. ``scripts/check_cosmos_reference.py`` compares outputs with NVIDIA's own code.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from wfm_sim.models.cosmos_tokenizer import CosmosTokenizerConfig, CosmosVideoTokenizer, haar3d, inverse_haar3d
from wfm_sim.models.cosmos_weights import CosmosCheckpointError, load_cosmos_tokenizer, save_cosmos_tokenizer


def released_shapes() -> dict[str, tuple[int, ...]]:
    """Parameter names and shapes of Cosmos' ``CausalDiscreteVideoTokenizer`` with the released
    ``discrete_video`` config (channels 128, mult [2, 4, 4], 2 res blocks, patch 4, z 16, FSQ 6-d).
    The same for DV4x8x8, DV8x8x8 and DV8x16x16: compression only changes which resamplers act."""
    out: dict[str, tuple[int, ...]] = {}

    def conv(name, cout, cin, k):
        out[f"{name}.conv3d.weight"] = (cout, cin, *k)
        out[f"{name}.conv3d.bias"] = (cout,)

    def norm(name, c):
        out[f"{name}.norm.weight"] = out[f"{name}.norm.bias"] = (c,)

    def factorised(name, cout, cin):
        conv(f"{name}.0", cout, cin, (1, 3, 3))
        conv(f"{name}.1", cout, cout, (3, 1, 1))

    def res(name, cin, cout):
        norm(f"{name}.norm1", cin)
        factorised(f"{name}.conv1", cout, cin)
        norm(f"{name}.norm2", cout)
        factorised(f"{name}.conv2", cout, cout)
        if cin != cout:
            conv(f"{name}.nin_shortcut", cout, cin, (1, 1, 1))

    def attn(name, c):
        for part in ("0", "1"):  # spatial, then causal temporal
            norm(f"{name}.{part}.norm", c)
            for p in ("q", "k", "v", "proj_out"):
                conv(f"{name}.{part}.{p}", c, c, (1, 1, 1))

    def resampler(name, c):
        conv(f"{name}.conv1", c, c, (1, 3, 3) if name.endswith("downsample") else (3, 1, 1))
        conv(f"{name}.conv2", c, c, (3, 1, 1) if name.endswith("downsample") else (1, 3, 3))
        conv(f"{name}.conv3", c, c, (1, 1, 1))

    def mid(name, c):
        res(f"{name}.block_1", c, c)
        attn(f"{name}.attn_1", c)
        res(f"{name}.block_2", c, c)

    widths = [256, 512, 512]
    factorised("encoder.conv_in", 128, 3 * 4**3)
    cin = 128
    for i, w in enumerate(widths):
        for j in range(2):
            res(f"encoder.down.{i}.block.{j}", cin, w)
            cin = w
        if i < 2:
            resampler(f"encoder.down.{i}.downsample", w)
    mid("encoder.mid", 512)
    norm("encoder.norm_out", 512)
    factorised("encoder.conv_out", 16, 512)
    conv("quant_conv", 6, 16, (1, 1, 1))
    conv("post_quant_conv", 16, 6, (1, 1, 1))
    factorised("decoder.conv_in", 512, 16)
    mid("decoder.mid", 512)
    cin = 512
    for i in (2, 1, 0):
        for j in range(3):
            res(f"decoder.up.{i}.block.{j}", cin, widths[i])
            cin = widths[i]
        if i > 0:
            resampler(f"decoder.up.{i}.upsample", widths[i])
    norm("decoder.norm_out", 256)
    factorised("decoder.conv_out", 3 * 4**3, 256)
    return out


def random_state(shapes: dict[str, tuple[int, ...]]) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    state = {}
    for k, s in shapes.items():
        fan_in = max(1, torch.Size(s[1:]).numel())
        state[k] = torch.randn(s, generator=g) * (0.3 if len(s) == 1 else fan_in**-0.5)
    return state


@pytest.fixture(scope="module")
def released(tmp_path_factory):
    """A folder laid out as documented, holding a full-size DV4x8x8 state dict with random values."""
    folder = tmp_path_factory.mktemp("cosmos") / "Cosmos-Tokenize1-DV4x8x8-360p"
    folder.mkdir()
    state = random_state(released_shapes())
    torch.save(state, folder / "model.pt")
    return folder, state


def small(name="DV4x8x8", **kw) -> CosmosVideoTokenizer:
    torch.manual_seed(0)
    return CosmosVideoTokenizer(CosmosTokenizerConfig.variant(name, channels=8, **kw)).eval()


@pytest.mark.parametrize("name", ["DV4x8x8", "DV8x8x8", "DV8x16x16"])
def test_parameter_names_and_shapes_are_the_released_ones(name):
    with torch.device("meta"):
        model = CosmosVideoTokenizer(CosmosTokenizerConfig.variant(name))
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert ours == released_shapes()
    assert sum(v.numel() for v in model.state_dict().values()) == 112_472_182


def test_released_layout_loads_and_encodes_to_the_expected_token_shapes(released):
    folder, state = released
    model = load_cosmos_tokenizer(folder)
    assert model.cfg.name == "DV4x8x8" and model.cfg.vocab_size == 64_000
    loaded = model.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in state.items())
    video = torch.rand(1, 3, 9, 64, 64) * 2 - 1
    with torch.no_grad():
        tokens, codes, latent = model.encode(video)
        frames = model.decode(tokens)
    assert tokens.shape == (1, 3, 8, 8) and tokens.dtype == torch.int64  # 1 + 8/4 latent frames, 64/8 tokens
    assert 0 <= int(tokens.min()) and int(tokens.max()) < 64_000
    assert codes.shape == latent.shape == (1, 6, 3, 8, 8)
    assert frames.shape == (1, 3, 9, 64, 64) and frames.abs().max() <= 1


def test_encoder_and_decoder_halves_load_like_the_whole(released, tmp_path):
    folder, state = released
    halves = tmp_path / "Cosmos-Tokenize1-DV4x8x8-360p"
    halves.mkdir()
    # The state dicts of NVIDIA's encoder.jit and decoder.jit hold these prefixes.
    torch.save({k: v for k, v in state.items() if k.startswith(("encoder.", "quant_conv."))}, halves / "encoder.pt")
    torch.save({k: v for k, v in state.items() if k.startswith(("decoder.", "post_quant_conv."))}, halves / "decoder.pt")
    model = load_cosmos_tokenizer(halves)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in state.items())


@pytest.mark.slow
def test_nine_frames_at_512_give_3x64x64_tokens(released):
    model = load_cosmos_tokenizer(released[0])
    with torch.no_grad():
        tokens, _, _ = model.encode(torch.rand(1, 3, 9, 512, 512) * 2 - 1)
    assert tokens.shape == (1, 3, 64, 64)


@pytest.mark.parametrize("name,frames,grid", [("DV4x8x8", 9, 8), ("DV8x8x8", 17, 8), ("DV8x16x16", 17, 4)])
def test_shapes_round_trip_and_causality_per_variant(name, frames, grid):
    model = small(name)
    k = model.cfg.temporal_compression
    video = torch.rand(1, 3, frames, 64, 64) * 2 - 1
    with torch.no_grad():
        tokens, _, latent = model.encode(video)
        assert tokens.shape == (1, 3, grid, grid)
        assert model.decode(tokens).shape == video.shape
        # A prefix of 1 + k frames encodes to the same first two latent frames: nothing looks ahead.
        _, _, prefix = model.encode(video[:, :, : 1 + k])
        torch.testing.assert_close(prefix, latent[:, :, :2], atol=1e-5, rtol=1e-5)
        # Changing the last group changes only the last latent frame.
        later = video.clone()
        later[:, :, 1 + k :] = -later[:, :, 1 + k :]
        _, _, changed = model.encode(later)
        torch.testing.assert_close(changed[:, :, :2], latent[:, :, :2], atol=1e-5, rtol=1e-5)
        assert not torch.allclose(changed[:, :, 2], latent[:, :, 2])


def test_haar_patcher_is_exactly_invertible_and_band_zero_is_the_block_mean():
    x = torch.randn(2, 3, 4, 8, 8, dtype=torch.float64)
    y = haar3d(x)
    assert y.shape == (2, 24, 2, 4, 4)
    torch.testing.assert_close(inverse_haar3d(y), x)
    block_mean = x.unfold(2, 2, 2).unfold(3, 2, 2).unfold(4, 2, 2).mean((-1, -2, -3))
    torch.testing.assert_close(y[:, :3], block_mean)


def test_save_and_load_round_trip_with_config(tmp_path):
    model = small("DV8x16x16")
    folder = save_cosmos_tokenizer(model, tmp_path / "mine")  # folder name says nothing: config.json does
    again = load_cosmos_tokenizer(folder)
    assert again.cfg == model.cfg
    video = torch.rand(1, 3, 9, 32, 32) * 2 - 1
    with torch.no_grad():
        assert torch.equal(again.encode(video)[0], model.encode(video)[0])


# ---------------------------------------------------------------- bad input: each a clear error


def test_torchscript_archive_is_refused_without_being_loaded(tmp_path):
    folder = tmp_path / "Cosmos-Tokenize1-DV4x8x8-360p"
    folder.mkdir()
    torch.jit.script(nn.Linear(2, 2)).save(str(folder / "model.pt"))
    with pytest.raises(CosmosCheckpointError, match="TorchScript archive, not a state dict.*never loads"):
        load_cosmos_tokenizer(folder)


def test_folder_of_jit_files_says_how_to_convert(tmp_path):
    folder = tmp_path / "Cosmos-Tokenize1-DV8x16x16-720p"
    folder.mkdir()
    torch.jit.script(nn.Linear(2, 2)).save(str(folder / "autoencoder.jit"))
    with pytest.raises(CosmosCheckpointError, match=r"no model.pt.*autoencoder.jit.*torch.jit.load"):
        load_cosmos_tokenizer(folder)


def test_corrupt_and_foreign_files_are_refused(tmp_path):
    folder = tmp_path / "Cosmos-Tokenize1-DV4x8x8-360p"
    folder.mkdir()
    (folder / "model.pt").write_bytes(b"\x80\x04not a checkpoint at all")
    with pytest.raises(CosmosCheckpointError, match="not a readable PyTorch state dict"):
        load_cosmos_tokenizer(folder)
    torch.save([1, 2, 3], folder / "model.pt")
    with pytest.raises(CosmosCheckpointError, match="holds a list, not a state dict"):
        load_cosmos_tokenizer(folder)
    torch.save({"encoder.conv_in.0.conv3d.weight": torch.zeros(3)}, folder / "model.pt")
    with pytest.raises(CosmosCheckpointError, match=r"not a Cosmos-Tokenize1 DV4x8x8 state dict.*missing.*shape"):
        load_cosmos_tokenizer(folder)
    with pytest.raises(CosmosCheckpointError, match="no such folder"):
        load_cosmos_tokenizer(tmp_path / "nowhere")


def test_continuous_tokenizer_weights_are_named_as_such(tmp_path):
    folder = tmp_path / "Cosmos-Tokenize1-DV4x8x8-360p"
    folder.mkdir()
    state = random_state(released_shapes())
    state["quant_conv.conv3d.weight"] = torch.zeros(16, 16, 1, 1, 1)  # CV: 16 latent channels, no FSQ
    torch.save(state, folder / "model.pt")
    with pytest.raises(CosmosCheckpointError, match=r"16 latent channels: a continuous \(CV\) tokenizer"):
        load_cosmos_tokenizer(folder)


def test_variant_must_be_known_and_consistent(tmp_path, released):
    folder, _ = released
    with pytest.raises(CosmosCheckpointError, match="conflicting.*variant argument says DV8x16x16, folder name says DV4x8x8"):
        load_cosmos_tokenizer(folder, variant="DV8x16x16")
    anonymous = tmp_path / "weights"
    anonymous.mkdir()
    with pytest.raises(CosmosCheckpointError, match="cannot tell which Cosmos tokenizer"):
        load_cosmos_tokenizer(anonymous)
    (anonymous / "config.json").write_text(json.dumps({"temporal_compression": 2, "spatial_compression": 8}))
    with pytest.raises(CosmosCheckpointError, match="DV2x8x8 is not a released discrete video tokenizer"):
        load_cosmos_tokenizer(anonymous)


def test_video_of_wrong_length_size_or_dtype_is_refused():
    model = small("DV4x8x8")
    with pytest.raises(ValueError, match=r"1 \+ 4\*m frames for Cosmos DV4x8x8, got 8"):
        model.encode(torch.zeros(1, 3, 8, 32, 32))
    with pytest.raises(ValueError, match="multiples of 8"):
        model.encode(torch.zeros(1, 3, 5, 36, 32))
    with pytest.raises(TypeError, match="float tensor"):
        model.encode(torch.zeros(1, 3, 5, 32, 32, dtype=torch.uint8))
    with pytest.raises(ValueError, match=r"\(b, 3, t, H, W\)"):
        model.encode(torch.zeros(3, 5, 32, 32))


def test_cli_tokenizes_and_reconstructs_a_video(tmp_path, capsys):
    from wfm_sim.cli import main
    from wfm_sim.viz import write_mp4

    folder = save_cosmos_tokenizer(small("DV4x8x8"), tmp_path / "Cosmos-Tokenize1-DV4x8x8-360p")
    rng = np.random.default_rng(0)
    write_mp4(tmp_path / "clip.mp4", [rng.integers(0, 255, (36, 44, 3), dtype=np.uint8) for _ in range(11)])
    assert main([ "cosmos-tokenize", str(folder), "--video", str(tmp_path / "clip.mp4"),
                  "--out", str(tmp_path / "out")]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["variant"] == "DV4x8x8" and report["frames"] == 9  # 11 frames -> longest 1 + 4m prefix
    assert report["frame_size"] == [32, 40] and report["tokens"] == [3, 4, 5]
    assert np.load(tmp_path / "out" / "tokens.npy").shape == (3, 4, 5)
    assert (tmp_path / "out" / "input_vs_reconstruction.mp4").stat().st_size > 0
    assert main(["cosmos-tokenize", str(tmp_path / "clip.mp4"), "--video", "x.mp4"]) == 2
    assert "no such folder" in capsys.readouterr().err


def test_a_world_model_runs_on_the_cosmos_tokenizer(tmp_path):
    """The Tokenizer protocol: a WorldModel built on NVIDIA's Cosmos tokenizer (random weights at a
    small size) saves, loads, and steps through the imagined env like one on wfm_sim's own."""
    import numpy as np

    from wfm_sim.envs.imagined import ImaginedVectorEnv
    from wfm_sim.models import WorldModel, preset
    from wfm_sim.models.geometry import Tokenizer
    from wfm_sim.models.presets import with_tokenizer

    tok = CosmosTokenizerConfig.variant("DV4x8x8", channels=8, image_size=32)
    torch.manual_seed(0)
    model = WorldModel(with_tokenizer(preset("tiny"), tok)).setup("cpu", "fp32").eval()
    assert isinstance(model.tokenizer, CosmosVideoTokenizer) and isinstance(model.tokenizer, Tokenizer)
    geo = model.cfg.geometry
    assert (geo.vocab_size, geo.grid, geo.frames_per_token, geo.image_size) == (64000, 4, 4, 32)
    loaded = WorldModel.from_pretrained(model.save_pretrained(tmp_path / "m"), device="cpu", precision="fp32")
    assert loaded.cfg == model.cfg and isinstance(loaded.tokenizer, CosmosVideoTokenizer)
    frames = np.random.default_rng(0).integers(0, 256, (2, 5, 1, 32, 32, 3), dtype=np.uint8)  # 1 + 4 frames
    runs = []
    for _ in range(2):
        env = ImaginedVectorEnv(2, loaded, obs_frames="all", parallel_steps=2, max_episode_steps=None)
        obs, _ = env.reset(seed=3, options={"frames": frames, "actions": np.full((2, 4, 3), 0.5, np.float32)})
        steps = [env.step(np.full((2, 4, 3), 0.5, np.float32)) for _ in range(3)]  # slides the 4-frame window
        assert obs.shape == (2, 4, 32, 32, 3) and steps[-1][0].shape == (2, 4, 32, 32, 3)
        runs.append(np.stack([s[0] for s in steps]))
    assert np.array_equal(runs[0], runs[1])  # seeded: the same rollout again


def test_a_tokenizer_of_unknown_kind_is_refused(tmp_path):
    import json

    from wfm_sim.checkpoint import CheckpointError
    from wfm_sim.models import WorldModel, preset

    d = WorldModel(preset("tiny")).save_pretrained(tmp_path / "m")
    meta = json.loads((d / "config.json").read_text())
    assert meta["config"]["tokenizer"]["kind"] == "wfm"
    meta["config"]["tokenizer"]["kind"] = "magvit"
    (d / "config.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match=r"unknown kind 'magvit'; expected one of \['cosmos', 'wfm'\]"):
        WorldModel.from_pretrained(d)
