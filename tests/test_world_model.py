"""WorldModel: imagination (determinism, batch independence, sliding window), files, errors."""

import json

import pytest
import torch

from wfm_sim.checkpoint import CheckpointError
from wfm_sim.models import SamplingConfig, WorldModel, preset
from wfm_sim.models.rollout import Rollout


def _context(model, b=2, t=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    s = model.cfg.tokenizer.image_size
    frames = torch.randint(0, 256, (b, t, 1, s, s, 3), generator=g, dtype=torch.uint8)
    return model.encode(frames).flatten(2), torch.rand(b, t - 1, 1, 3, generator=g)


def _rollout(model, mode, actions, seeds, tokens, ctx_actions, **kw):
    im = model.imagine(len(seeds), mode=mode, **kw)
    im.reset(None, tokens=tokens, actions=ctx_actions, seeds=seeds)
    return [im.step(a) for a in actions]


@pytest.mark.parametrize("mode", ["sequential", "parallel"])
def test_same_seed_same_rollout_and_valid_tokens(tiny_model, mode):
    tokens, ctx_a = _context(tiny_model)
    actions = torch.rand(5, 2, 1, 3)
    a = _rollout(tiny_model, mode, actions, [1, 2], tokens, ctx_a)
    b = _rollout(tiny_model, mode, actions, [1, 2], tokens, ctx_a)
    c = _rollout(tiny_model, mode, actions, [3, 4], tokens, ctx_a)
    assert all(torch.equal(x.tokens, y.tokens) for x, y in zip(a, b))
    assert not all(torch.equal(x.tokens, y.tokens) for x, y in zip(a, c))
    vocab = tiny_model.cfg.tokenizer.vocab_size
    assert all(0 <= int(x.tokens.min()) and int(x.tokens.max()) < vocab for x in a)


@pytest.mark.parametrize("mode", ["sequential", "parallel"])
def test_rows_do_not_depend_on_batch_company(tiny_model, mode):
    """Row 1 with the same context, actions and seed gives the same rollout whatever rows 0 and 2
    hold (the batch layout stays the same: other batch sizes may sum in another order)."""
    tokens, ctx_a = _context(tiny_model, b=3)
    actions = torch.rand(6, 3, 1, 3)  # 6 steps: slides the 4-frame window too
    together = _rollout(tiny_model, mode, actions, [5, 6, 7], tokens, ctx_a)
    swap = torch.tensor([2, 1, 0])  # rows 0 and 2 trade contexts, actions and seeds; row 1 stays
    company = _rollout(tiny_model, mode, actions[:, swap], [7, 6, 5], tokens[swap], ctx_a[swap])
    for x, y in zip(together, company):
        assert torch.equal(x.tokens[1:2], y.tokens[1:2])
        assert torch.equal(x.reward[1:2], y.reward[1:2])
    assert not all(torch.equal(x.tokens[0], y.tokens[0]) for x, y in zip(together, company))


def test_changing_the_action_changes_the_prediction(tiny_model):
    # At random init the action embedding is small (std 0.02); scale it so it can matter.
    torch.nn.init.normal_(tiny_model.backbone.act_emb.mlp[2].weight, std=1.0)
    tokens, ctx_a = _context(tiny_model, b=1)
    greedy = SamplingConfig(temperature=0)
    one = _rollout(tiny_model, "sequential", torch.zeros(1, 1, 1, 3), [0], tokens, ctx_a, sampling=greedy)
    two = _rollout(tiny_model, "sequential", torch.ones(1, 1, 1, 3) * 5, [0], tokens, ctx_a, sampling=greedy)
    assert not torch.allclose(one[0].reward, two[0].reward)
    assert not torch.equal(one[0].tokens, two[0].tokens)


def test_sliding_window_cache_equals_fresh_prefill(tiny_model):
    W = tiny_model.cfg.backbone.max_frames
    tokens, ctx_a = _context(tiny_model, b=1)
    im = tiny_model.imagine(1, sampling=SamplingConfig(temperature=0))
    im.reset(None, tokens=tokens, actions=ctx_a, seeds=[0])
    for _ in range(W - 2):
        im.step(torch.rand(1, 1, 3))
    assert int(im.count[0]) == W
    hist_t, hist_a = im.tokens[:, 1:W].clone(), im.actions[:, 1 : W - 1].clone()
    action = torch.rand(1, 1, 3)
    slid = im.step(action)  # must slide before stepping
    fresh = tiny_model.imagine(1, sampling=SamplingConfig(temperature=0))
    fresh.reset(None, tokens=hist_t, actions=hist_a, seeds=[0])
    ref = fresh.step(action)
    assert torch.equal(slid.tokens, ref.tokens)
    torch.testing.assert_close(slid.reward, ref.reward, atol=1e-5, rtol=0)


@pytest.mark.parametrize("mode", ["sequential", "parallel"])
def test_forced_frames_reproduce_a_free_rollout_and_steer_the_heads(tiny_model, mode):
    """Teacher forcing: stepping with the frames a free rollout generated gives its rewards and
    terminations exactly (through the sliding window); other frames give other rewards."""
    torch.nn.init.normal_(tiny_model.backbone.head_reward[2].weight, std=1.0)  # make the head matter
    tokens, ctx_a = _context(tiny_model)
    actions = torch.rand(6, 2, 1, 3)
    free = _rollout(tiny_model, mode, actions, [1, 2], tokens, ctx_a)
    im = tiny_model.imagine(2, mode=mode)
    im.reset(None, tokens=tokens, actions=ctx_a, seeds=[8, 9])  # other seeds: forcing must not sample
    forced = [im.step(a, frame=f.tokens.flatten(1)) for a, f in zip(actions, free)]
    for x, y in zip(free, forced):
        torch.testing.assert_close(x.reward, y.reward, atol=1e-5, rtol=0)
        assert torch.equal(x.terminated, y.terminated) and torch.equal(x.tokens, y.tokens)
        assert float(y.entropy.abs().max()) == 0.0
    im.reset(None, tokens=tokens, actions=ctx_a, seeds=[8, 9])
    other = [im.step(a, frame=torch.zeros_like(f.tokens.flatten(1))) for a, f in zip(actions, free)]
    assert torch.allclose(other[0].reward, free[0].reward)  # step 0 reads the context only
    assert not torch.allclose(other[1].reward, free[1].reward)
    with pytest.raises(ValueError, match=r"forced frame must be \(2, "):
        im.step(actions[0], frame=torch.zeros(2, 3, dtype=torch.long))


def test_parallel_decoding_needs_few_passes(tiny_model):
    tokens, ctx_a = _context(tiny_model, b=1)
    seq = tiny_model.imagine(1, mode="sequential")
    par = tiny_model.imagine(1, mode="parallel", parallel_steps=3)
    for im in (seq, par):
        im.reset(None, tokens=tokens, actions=ctx_a, seeds=[0])
        im.forward_passes = 0
        im.step(torch.rand(1, 1, 3))
    assert par.forward_passes == 1 + 3
    assert seq.forward_passes == tiny_model.backbone.dims.frame_tokens


def test_step_before_reset_raises(tiny_model):
    im = tiny_model.imagine(2)
    with pytest.raises(RuntimeError, match="never reset"):
        im.step(torch.zeros(2, 1, 3))


def test_text_conditioning_changes_the_output():
    from wfm_sim.models.text import TextEncoder

    enc = TextEncoder.random(d_model=16)
    torch.manual_seed(0)
    model = WorldModel(preset("tiny", text_dim=enc.dim)).setup("cpu", "fp32").eval()
    for blk in model.backbone.blocks:  # random init leaves cross-attn output tiny; make it matter
        torch.nn.init.normal_(blk.cross.proj.weight, std=1.0)
    emb, mask = enc(["a red car turns left", "an empty road at night"])
    im = model.imagine(2, prompt_tokens=emb.shape[1], sampling=SamplingConfig(temperature=0))
    im.set_prompt(None, emb, mask)
    frame0 = im.reset_from_prompt(None, [0, 0])
    assert frame0.shape == (2, 16) and int(frame0.max()) < model.cfg.tokenizer.vocab_size
    # The first token's distribution (from BOS + cross-attention alone) depends on the prompt.
    bb = model.backbone
    bos = torch.zeros(2, 1, dtype=torch.long)
    logits = bb.head_next(bb.forward_chunk(bos, torch.zeros(2, 1, 1, 3), bos, "sequential", text=emb, text_mask=mask))
    assert (logits[0] - logits[1]).abs().max() > 1e-2
    same = bb.head_next(bb.forward_chunk(bos, torch.zeros(2, 1, 1, 3), bos, "sequential", text=emb[:1].expand(2, -1, -1),
                                         text_mask=mask[:1].expand(2, -1)))
    torch.testing.assert_close(same[0], same[1])
    with pytest.raises(ValueError, match="no text conditioning"):
        WorldModel(preset("tiny")).imagine(1, prompt_tokens=8)


def test_save_load_round_trip_is_exact(tiny_model, tmp_path):
    tiny_model.save_pretrained(tmp_path / "m")
    loaded = WorldModel.from_pretrained(tmp_path / "m", device="cpu", precision="fp32")
    assert loaded.cfg == tiny_model.cfg
    a, b = tiny_model.state_dict(), loaded.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    tokens, ctx_a = _context(tiny_model, b=1)
    actions = torch.rand(3, 1, 1, 3)
    x = _rollout(tiny_model, "parallel", actions, [9], tokens, ctx_a)
    y = _rollout(loaded, "parallel", actions, [9], tokens, ctx_a)
    assert all(torch.equal(p.tokens, q.tokens) and torch.equal(p.reward, q.reward) for p, q in zip(x, y))


def test_checkpoint_errors_are_clear(tiny_model, tmp_path):
    d = tiny_model.save_pretrained(tmp_path / "m")
    weights = (d / "model.safetensors").read_bytes()
    (d / "model.safetensors").write_bytes(weights[: len(weights) // 2])
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        WorldModel.from_pretrained(d)
    (d / "model.safetensors").write_bytes(b"\x80\x04\x95 pickle bytes, not safetensors")
    with pytest.raises(CheckpointError, match="safetensors"):
        WorldModel.from_pretrained(d)
    (d / "config.json").write_text(json.dumps({"format": "someone.else", "config": {}}))
    with pytest.raises(CheckpointError, match="wfm_sim.WorldModel"):
        WorldModel.from_pretrained(d)
    (d / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        WorldModel.from_pretrained(d)
    with pytest.raises(FileNotFoundError, match="shipped"):
        WorldModel.from_pretrained("no-such-model")


def test_weights_of_another_model_are_refused(tiny_model, tmp_path):
    d = tiny_model.save_pretrained(tmp_path / "m")
    other = WorldModel(preset("tiny", cameras=("A", "B"))).save_pretrained(tmp_path / "other")
    (d / "model.safetensors").write_bytes((other / "model.safetensors").read_bytes())
    with pytest.raises(CheckpointError, match="shape|missing|unexpected"):
        WorldModel.from_pretrained(d)


def test_bad_inputs_name_the_expected_value(tiny_model):
    with pytest.raises(TypeError, match="uint8"):
        tiny_model.encode(torch.zeros(1, 1, 1, 16, 16, 3))
    with pytest.raises(ValueError, match=r"\(b, t, 1, 16, 16, 3\)"):
        tiny_model.encode(torch.zeros(1, 1, 1, 16, 15, 3, dtype=torch.uint8))
    with pytest.raises(ValueError, match=r"\[0, 64\)"):
        tiny_model.decode(torch.full((1, 1, 1, 4, 4), 64))
    with pytest.raises(ValueError, match=r"shape \(2, 1, 3\)"):
        tiny_model.check_action(torch.zeros(2, 4), (2,))
    with pytest.raises(ValueError, match="NaN"):
        tiny_model.check_action(torch.full((2, 3), float("nan")), (2,))
    with pytest.raises(ValueError, match="context"):
        tiny_model.imagine(1).reset(None, tokens=torch.zeros(1, 4, 16, dtype=torch.long), seeds=[0])
    with pytest.raises(ValueError, match="diffusion decoder needs prev"):
        tiny_model.decode(torch.zeros(1, 1, 1, 4, 4, dtype=torch.long), decoder="diffusion")


def test_unavailable_device_raises_instead_of_falling_back(tiny_cfg):
    if torch.cuda.is_available():
        pytest.skip("CUDA present")
    with pytest.raises(RuntimeError, match="CUDA is not available"):
        WorldModel(tiny_cfg).setup("cuda")


def test_dimensions_are_derived_once_and_old_files_are_checked(tmp_path):
    """The backbone and decoder read the geometry (no copies to disagree); a format-1 config.json
    that repeats it loads when its copies agree and is refused when they do not."""
    from dataclasses import replace

    cfg = replace(preset("tiny"), cameras=("A", "B"))
    assert cfg.geometry.views == 2 and WorldModel(cfg).backbone.view_emb.num_embeddings == 2
    d = WorldModel(preset("tiny")).save_pretrained(tmp_path / "m")
    meta = json.loads((d / "config.json").read_text())
    geo = preset("tiny").geometry
    meta["format_version"] = 1
    meta["config"]["backbone"].update(vocab_size=geo.vocab_size, grid=geo.grid, num_views=1, action_dim=3,
                                      num_actions=0, action_group=1)
    meta["config"]["decoder"].update(vocab_size=geo.vocab_size, grid=geo.grid, image_size=geo.image_size, frames=1)
    (d / "config.json").write_text(json.dumps(meta))
    assert WorldModel.read_config(d) == preset("tiny")
    meta["config"]["backbone"]["grid"] = geo.grid + 1
    (d / "config.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match=r"backbone.grid = 5 disagrees with the model's geometry \(grid = 4\)"):
        WorldModel.from_pretrained(d)


def test_imagination_is_the_rollout_type(tiny_model):
    assert isinstance(tiny_model.imagine(1), Rollout)


@pytest.mark.parametrize("storage,atol", [("bf16", 2e-2), ("int8", 3e-2)])
def test_compact_storage_round_trip_is_close(tiny_model, tmp_path, storage, atol):
    d = tiny_model.save_pretrained(tmp_path / storage, storage=storage)
    full = tiny_model.save_pretrained(tmp_path / "fp32")
    assert (d / "model.safetensors").stat().st_size < 0.6 * (full / "model.safetensors").stat().st_size
    loaded = WorldModel.from_pretrained(d, device="cpu", precision="fp32")
    a, b = tiny_model.state_dict(), loaded.state_dict()
    for k in a:
        if a[k].is_floating_point():
            rel = (a[k] - b[k]).abs().max() / a[k].abs().max().clamp_min(1e-8)
            assert rel < atol, (k, float(rel))
        else:
            assert torch.equal(a[k], b[k])
