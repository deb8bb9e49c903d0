"""The one imagined rollout: counter-based keys, determinism across batches, branching, and
equivalence with a cache-free decode."""

import re

import numpy as np
import pytest
import torch

from wfm_sim.models import SamplingConfig
from wfm_sim.models.rng import philox, rand, uniform


def test_philox_matches_the_published_known_answers():
    """Random123's kat_vectors for Philox4x32-10."""
    cases = [((0, 0), (0, 0, 0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
             ((0xFFFFFFFF,) * 2, (0xFFFFFFFF,) * 4, (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
             ((0xA4093822, 0x299F31D0), (0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344),
              (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1))]
    for k, ctr, want in cases:
        got = philox(torch.tensor([k]), tuple(torch.tensor([c]) for c in ctr))
        assert tuple(int(g) for g in got) == want


def test_a_rows_draws_depend_on_its_key_alone():
    seeds, steps = torch.tensor([7, 8, 9]), torch.tensor([0, 3, 5])
    batch = uniform(seeds, steps, 2, 50)
    for i in range(3):  # alone, or in another batch order, a row draws the same numbers
        torch.testing.assert_close(uniform(seeds[i : i + 1], steps[i : i + 1], 2, 50)[0], batch[i], rtol=0, atol=0)
    perm = torch.tensor([2, 0, 1])
    assert torch.equal(uniform(seeds[perm], steps[perm], 2, 50), batch[perm])
    assert not torch.equal(uniform(seeds, steps + 1, 2, 50), batch)  # the next step draws anew
    assert not torch.equal(uniform(seeds, steps, 3, 50), batch)  # so does another stream
    u = uniform(torch.tensor([1]), torch.tensor([0]), 0, 200_000)
    assert 0 <= float(u.min()) and float(u.max()) < 1 and abs(float(u.mean()) - 0.5) < 0.005


def test_a_key_draws_the_same_numbers_every_time():
    from wfm_sim.models.rng import key

    assert torch.equal(rand(key(3, 1), 0, (4, 5)), rand(key(3, 1), 0, (4, 5)))
    assert not torch.equal(rand(key(3, 1), 0, (4, 5)), rand(key(3, 2), 0, (4, 5)))


def _context(model, b, seed=0):
    g = torch.Generator().manual_seed(seed)
    s = model.cfg.tokenizer.image_size
    return torch.randint(0, 256, (b, 2, 1, s, s, 3), generator=g, dtype=torch.uint8), torch.rand(b, 1, 3, generator=g)


def _run(im, steps, actions):
    return [im.step(actions[j]) for j in range(steps)]


@pytest.mark.parametrize("mode", ["sequential", "parallel"])
def test_same_seeds_same_rollout_across_resets(tiny_model, mode):
    frames, acts = _context(tiny_model, 2)
    actions = torch.rand(6, 2, 1, 3)
    im = tiny_model.imagine(2, mode=mode, decode=True)
    im.reset(None, frames, acts, [4, 5])
    a = _run(im, 6, actions)
    im.reset(None, frames, acts, [4, 5])
    b = _run(im, 6, actions)
    for x, y in zip(a, b):
        assert torch.equal(x.tokens, y.tokens) and torch.equal(x.frames, y.frames)


@pytest.mark.parametrize("mode", ["sequential", "parallel"])
def test_a_snapshot_replays_exactly_and_branches_with_new_seeds(tiny_model, mode):
    frames, acts = _context(tiny_model, 1)
    actions = torch.rand(5, 1, 1, 3)
    im = tiny_model.imagine(4, mode=mode, decode=True)
    im.reset([0], frames, acts, [11])
    im.step(actions[0], rows=[0])
    state = im.snapshot([0])
    future = [im.step(actions[j], rows=[0]) for j in range(1, 5)]  # through the window slide
    im.restore(state, rows=[0])  # the same row, the same batch layout: the same future, exactly
    again = [im.step(actions[j], rows=[0]) for j in range(1, 5)]
    for f, g in zip(future, again):
        assert torch.equal(f.tokens, g.tokens) and torch.equal(f.frames, g.frames)
    im.restore(state, rows=[1, 2, 3], seeds=None)  # one row's state into three: three equal copies
    copies = [im.step(actions[j].expand(3, -1, -1), rows=[1, 2, 3]) for j in range(1, 5)]
    for c in copies:
        assert all(torch.equal(c.tokens[r], c.tokens[0]) and torch.equal(c.frames[r], c.frames[0]) for r in (1, 2))
    im.restore(state, rows=[1, 2, 3], seeds=[100, 101, 102])  # re-keyed: three different futures
    branches = [im.step(actions[j].expand(3, -1, -1), rows=[1, 2, 3]) for j in range(1, 5)]
    drawn = torch.stack([torch.stack([b.tokens[r] for b in branches]) for r in range(3)])
    assert not torch.equal(drawn[0], drawn[1]) and not torch.equal(drawn[1], drawn[2])
    with pytest.raises(ValueError, match="restores into 1 or 2 rows"):
        im.restore(im.snapshot([0, 1]), rows=[0, 1, 2])


def test_greedy_sequential_rollout_equals_cache_free_decoding(tiny_model):
    """Temperature 0 through the KV cache and the sliding window gives exactly the tokens of
    argmax decoding with full forward passes over each row's window."""
    torch.nn.init.normal_(tiny_model.backbone.act_emb.mlp[2].weight, std=1.0)
    net, W = tiny_model.backbone, tiny_model.cfg.backbone.max_frames
    frames, acts = _context(tiny_model, 1)
    actions = torch.rand(6, 1, 1, 3)
    im = tiny_model.imagine(1, mode="sequential", sampling=SamplingConfig(temperature=0))
    im.reset(None, frames, acts, [0])
    tokens = [t for t in tiny_model.encode(frames)[0].flatten(1)]  # latent frames so far
    hist_a = [a for a in acts[0][:, None]]  # actions between them, (1, 3) each
    for j in range(6):
        out = im.step(actions[j])
        hist_a.append(actions[j][0])
        keep = W - 1  # the window: the newest W-1 frames and the W-1 actions after them
        ctx_t, ctx_a = torch.stack(tokens[-keep:]), torch.stack(hist_a[-keep:])
        new = []
        for i in range(net.dims.frame_tokens):
            t = torch.cat((ctx_t, torch.cat((torch.tensor(new, dtype=torch.long),
                                             torch.zeros(net.dims.frame_tokens - i, dtype=torch.long)))[None]))
            a = torch.cat((ctx_a, torch.zeros(1, 1, 3)))
            ids, pa = net.sequence(t[None].view(1, len(t), 1, 1, -1), a[None])
            start = 1 + (len(t) - 1) * net.dims.block  # first slot of the new frame
            h = net.forward_chunk(ids[:, : start + i], pa[:, : start + i], torch.arange(start + i)[None], "sequential")
            new.append(int(net.head_next(h[:, -1]).argmax(-1)))
        assert out.tokens.flatten().tolist() == new, j
        tokens.append(torch.tensor(new))


def test_step_trusts_its_inputs_but_reset_checks_them(tiny_model):
    im = tiny_model.imagine(2)
    with pytest.raises(RuntimeError, match="never reset"):
        im.step(torch.zeros(2, 1, 3))
    with pytest.raises(ValueError, match="one seed per row"):
        im.reset(None, torch.zeros(2, 1, 1, 16, 16, 3, dtype=torch.uint8), seeds=[1])
    with pytest.raises(IndexError, match=r"rows must lie in \[0, 2\)"):
        im.reset([5], torch.zeros(1, 1, 1, 16, 16, 3, dtype=torch.uint8), seeds=[1])
    with pytest.raises(ValueError, match="prompt buffers"):
        im.set_prompt(None, None)


def test_no_module_reads_another_modules_private_attributes():
    """``obj._name`` is read only in the module that defines ``_name``: the layers talk through
    their public doors. (Private attributes of third-party objects, which no project module
    defines, are outside this rule.)"""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    files = [p for folder in ("wfm_sim", "envs", "policies", "datasets") for p in (root / folder).rglob("*.py")]
    defines = re.compile(r"^\s*(?:def|class)\s+(_[A-Za-z0-9]\w*)|\b\w+\.(_[A-Za-z0-9]\w*)\s*(?::[^=]+)?=(?!=)", re.M)
    owners: dict[str, set] = {}
    for path in files:
        for m in defines.finditer(path.read_text()):
            owners.setdefault(m.group(1) or m.group(2), set()).add(path)
    reads = re.compile(r"\b(?!self\b|cls\b)([A-Za-z_]\w*)\.(_[A-Za-z0-9]\w*)")
    bad = []
    for path in files:
        text = path.read_text()
        for m in reads.finditer(text):
            name = m.group(2)
            if name.startswith("__") or name not in owners or path in owners[name]:
                continue
            line = text[: m.start()].count("\n") + 1
            bad.append(f"{path.relative_to(root)}:{line}: {m.group(0)} (defined in "
                       f"{', '.join(str(o.relative_to(root)) for o in owners[name])})")
    assert not bad, "\n".join(bad)


def test_every_module_uses_the_one_dimension_legend():
    """No module writes a legend of its own, and its shape tuples use the legend's letters."""
    from pathlib import Path

    from wfm_sim.dims import LEGEND

    root = Path(__file__).resolve().parents[1]
    own, unknown = [], []
    for folder in ("wfm_sim", "envs", "policies", "datasets"):
        for path in (root / folder).rglob("*.py"):
            text = path.read_text()
            if "Dimension legend" in text and "Dimension legend: :mod:`wfm_sim.dims`" not in text:
                own.append(str(path.relative_to(root)))
            if "wfm_sim.dims" in text:
                unknown += [f"{path.relative_to(root)}:{line} {tok}" for line, tok in shape_letters(text)
                            if tok not in LEGEND]
    assert not own, f"modules with a legend of their own: {own}"
    assert not unknown, f"shape letters outside wfm_sim.dims: {unknown}"
    assert len(set(LEGEND.values())) == len(LEGEND)  # no letter means two things, no meaning two letters


def test_imagination_runs_in_the_models_precision(tiny_model, monkeypatch):
    """A model set up for bf16 imagines in bf16 (as it trains), with a bf16 KV cache, seeded as
    ever; chunks below AUTOCAST_MIN_TOKENS (one-token passes) stay in fp32, where they are faster."""
    from wfm_sim.models import rollout

    tiny_model.amp_dtype = torch.bfloat16  # what setup(precision='auto') picks where bf16 is native
    frames, acts = _context(tiny_model, 2)
    for threshold, want in ((0, {torch.bfloat16}), (10**9, {torch.float32})):
        monkeypatch.setattr(rollout, "AUTOCAST_MIN_TOKENS", threshold)
        seen = []
        hook = tiny_model.backbone.blocks[0].mlp.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
        runs = []
        for _ in range(2):
            im = tiny_model.imagine(2, mode="parallel", decode=True)
            assert im.cache.k.dtype == torch.bfloat16
            im.reset(None, frames, acts, [1, 2])
            runs.append([im.step(torch.rand(2, 1, 3, generator=torch.Generator().manual_seed(j))) for j in range(3)])
        hook.remove()
        assert set(seen) == want
        assert all(torch.equal(a.tokens, b.tokens) and torch.equal(a.reward, b.reward) for a, b in zip(*runs))


def shape_letters(text: str) -> list[tuple[int, str]]:
    """``(line, letter)`` for every one-letter dimension in the shape tuples of ``text``:
    ``(b, t, v, H, W, 3)`` spans in docstrings and ``# (b, q, d)`` comments."""
    found = []
    spans = [m for pat in (r"``\(([^`\n]*)\)``", r"#\s*\(([^)\n]*)\)") for m in re.finditer(pat, text)]
    for m in spans:
        line = text[: m.start()].count("\n") + 1
        for tok in re.findall(r"(?<![A-Za-z_0-9.'\"])([A-Za-z]'?)(?![A-Za-z_0-9('\"])", m.group(1)):
            found.append((line, tok))
    return found
