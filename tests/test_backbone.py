"""Causal backbone: causality in both modes, KV-cache equivalence, sampling and errors."""

import pytest
import torch

from wfm_sim.models.backbone import Backbone, BackboneConfig, Dims
from wfm_sim.models.geometry import Geometry
from wfm_sim.models.rng import uniform
from wfm_sim.models.sampling import SamplingConfig, filtered_probs, sample

CFG = BackboneConfig(max_frames=4, dim=32, depth=2, heads=4, kv_heads=2, success_head=True)
GEO = Geometry(vocab_size=64, grid=2, frames_per_token=1, image_size=8, views=2, per_frame=True, action_dim=3,
               num_actions=0)
D = Dims(CFG, GEO)


@pytest.fixture
def net():
    torch.manual_seed(0)
    return Backbone(CFG, GEO).eval()


def _data(b=2, t=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, D.vocab_size, (b, t, D.num_views, D.grid, D.grid), generator=g)
    actions = torch.rand(b, t, 1, D.action_dim, generator=g)
    return tokens, actions


def _hidden(net, tokens, actions, mode):
    ids, acts = net.sequence(tokens, actions)
    pos = torch.arange(ids.shape[1]).expand(ids.shape[0], -1)
    return net.forward_chunk(ids, acts, pos, mode)


@pytest.mark.parametrize("mode", ["sequential", "parallel"])
def test_frame_t_plus_1_does_not_change_frames_up_to_t(net, mode):
    tokens, actions = _data()
    changed = tokens.clone()
    changed[:, 2] = (changed[:, 2] + 7) % D.vocab_size
    h0, h1 = _hidden(net, tokens, actions, mode), _hidden(net, changed, actions, mode)
    end_t1 = 1 + 2 * D.block  # everything up to and including action 1
    assert torch.equal(h0[:, :end_t1], h1[:, :end_t1])
    assert not torch.allclose(h0[:, end_t1:], h1[:, end_t1:])


@pytest.mark.parametrize("mode", ["sequential", "parallel"])
def test_action_t_reaches_frame_t_plus_1_only(net, mode):
    tokens, actions = _data()
    changed = actions.clone()
    changed[:, 1] += 0.5
    h0, h1 = _hidden(net, tokens, actions, mode), _hidden(net, tokens, changed, mode)
    a1 = 1 + D.block + D.frame_tokens  # position of action 1
    assert torch.equal(h0[:, :a1], h1[:, :a1]), "frame 1 must not see the action that follows it"
    assert not torch.allclose(h0[:, a1:], h1[:, a1:])


def test_parallel_mode_frame_tokens_see_each_other(net):
    tokens, actions = _data()
    changed = tokens.clone()
    changed[:, 1, -1, -1, -1] = (changed[:, 1, -1, -1, -1] + 1) % D.vocab_size
    first_of_f1 = 1 + D.block
    h0 = _hidden(net, tokens, actions, "parallel")
    h1 = _hidden(net, changed, actions, "parallel")
    assert not torch.allclose(h0[:, first_of_f1], h1[:, first_of_f1])
    s0 = _hidden(net, tokens, actions, "sequential")
    s1 = _hidden(net, changed, actions, "sequential")
    assert torch.equal(s0[:, first_of_f1], s1[:, first_of_f1])


def test_cached_incremental_logits_equal_full_sequence(net):
    tokens, actions = _data(b=2, t=4)
    ids, acts = net.sequence(tokens, actions)
    n = ids.shape[1]
    full = net.head_next(_hidden(net, tokens, actions, "sequential"))
    cache = net.new_cache(2)
    prefix = [5, 11]  # rows at different offsets
    for r, m in enumerate(prefix):
        rows = [r]
        net.forward_chunk(ids[rows, :m], acts[rows, :m], torch.arange(m)[None], "sequential", cache, rows)
    assert cache.lengths.tolist() == prefix
    steps = n - max(prefix)
    for _ in range(steps):
        pos = torch.as_tensor(cache.lengths)[:, None].clone()
        h = net.forward_chunk(ids.gather(1, pos), acts[torch.arange(2)[:, None], pos], pos, "sequential", cache)
        for r in range(2):
            p = int(pos[r, 0])
            torch.testing.assert_close(net.head_next(h[r, 0]), full[r, p], atol=1e-4, rtol=0)


def test_parallel_mode_blockwise_cache_equals_full(net):
    tokens, actions = _data(b=1, t=4)
    ids, acts = net.sequence(tokens, actions)
    full = _hidden(net, tokens, actions, "parallel")
    cache = net.new_cache(1)
    net.forward_chunk(ids[:, :1], acts[:, :1], torch.zeros(1, 1, dtype=torch.long), "parallel", cache)
    start = 1
    while start < ids.shape[1]:
        end = start + D.block
        pos = torch.arange(start, end)[None]
        # An uncommitted pass first (what parallel decoding does), then the committed one.
        net.forward_chunk(torch.full_like(ids[:, start:end], D.mask_id), acts[:, start:end], pos, "parallel", cache, commit=False)
        h = net.forward_chunk(ids[:, start:end], acts[:, start:end], pos, "parallel", cache)
        torch.testing.assert_close(h, full[:, start:end], atol=1e-4, rtol=0)
        start = end


def test_training_loss_has_all_terms_and_gradients(net):
    tokens, actions = _data(b=4, t=3)
    net.train()
    out = net(tokens, actions, torch.randn(4, 3), torch.zeros(4, 3, dtype=torch.bool), torch.ones(4, 3, dtype=torch.bool))
    out.loss.backward()
    for key in ("ce_sequential", "ce_parallel", "reward_loss", "terminated_loss", "success_loss"):
        assert key in out.logs
    assert net.head_next.weight.grad.abs().sum() > 0 and net.head_mask.weight.grad.abs().sum() > 0


def test_sampling_filters_and_is_seeded():
    logits = torch.tensor([[[4.0, 3.0, 0.0, -1.0]]])
    p = filtered_probs(logits, SamplingConfig(top_k=2))
    assert p[0, 0, 2:].sum() == 0
    p = filtered_probs(logits, SamplingConfig(top_p=0.5))
    assert p[0, 0, 0] == 1.0
    gens = lambda s: uniform(torch.tensor([s]), torch.zeros(1, dtype=torch.long), 0, 50)
    big = torch.randn(1, 50, 64)
    a = sample(big, SamplingConfig(), gens(3))[0]
    assert torch.equal(a, sample(big, SamplingConfig(), gens(3))[0])
    assert not torch.equal(a, sample(big, SamplingConfig(), gens(4))[0])
    assert torch.equal(sample(big, SamplingConfig(temperature=0), None)[0], big.argmax(-1))


def test_sampling_never_draws_filtered_tokens():
    logits = torch.randn(1, 2000, 16)
    ids, _ = sample(logits, SamplingConfig(top_k=3), torch.rand(1, 2000, generator=torch.Generator().manual_seed(0)))
    top3 = logits.topk(3, dim=-1).indices
    assert (ids[..., None] == top3).any(-1).all()


def test_config_errors_name_the_fix():
    with pytest.raises(ValueError, match="kv_heads"):
        BackboneConfig(dim=32, heads=4, kv_heads=3)
    with pytest.raises(ValueError, match="reward_classes"):
        BackboneConfig(reward_classes=5)
    with pytest.raises(ValueError, match="top_p"):
        SamplingConfig(top_p=0.0)


def test_the_reward_ensemble_is_unsure_far_from_its_data_and_sure_on_it():
    """The members fit the same rewards on the states they were trained on and spread apart on
    states unlike them: ``reward_std`` is the uncertainty RL penalises (MOPO)."""
    from dataclasses import replace

    torch.manual_seed(0)
    net = Backbone(replace(CFG, reward_ensemble=4), GEO).eval()
    g = torch.Generator().manual_seed(1)

    def states(low, high, b=16):  # hidden states at the action slots of sequences over a token range
        tokens = torch.randint(low, high, (b, 3, D.num_views, D.grid, D.grid), generator=g)
        actions = torch.rand(b, 3, 1, D.action_dim, generator=g)
        with torch.no_grad():
            return _hidden(net, tokens, actions, "sequential")[:, net.action_slots(3, "cpu")], actions

    seen, acts = states(0, 8)  # the data: scenes made of a few tokens
    reward = acts[:, :, 0, 0] * 2 - 1  # a reward the states determine (the action is in them)
    heads = [p for n, p in net.named_parameters() if n.startswith(("head_reward", "head_done"))]
    opt = torch.optim.Adam(heads, lr=3e-3)
    for _ in range(600):
        loss, logs = net.head_loss(seen, reward, torch.zeros_like(reward, dtype=torch.bool),
                                   torch.zeros_like(reward, dtype=torch.bool), None)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert logs["reward_ensemble_loss"] < 0.03  # every member learned the data
    unseen, _ = states(40, 64)  # scenes of tokens the data never held
    on_data = net.heads(seen)["reward_std"].mean()
    off_data = net.heads(unseen)["reward_std"].mean()
    assert off_data > 3 * on_data, (float(on_data), float(off_data))  # 4.0-6.3x over init seeds 0-5
    with pytest.raises(ValueError, match="reward_ensemble must be >= 0 and needs reward regression"):
        replace(CFG, reward_ensemble=2, reward_classes=3)
