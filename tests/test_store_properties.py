"""Property-based tests (Hypothesis) of the episode store: random rigs, shapes, lengths and action
spaces round-trip exactly; a writer killed at a random write point loses only the episode it was
writing, and the next writer completes the store; wrong frames are refused and change nothing.

The example budget is fixed and the search derandomized, so CI runs the same examples every time.
"""

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from wfm_sim.datasets import EpisodeReader, EpisodeWriter, StoreError  # noqa: E402
from wfm_sim.datasets.episode import Episode  # noqa: E402

SETTINGS = settings(max_examples=25, derandomize=True, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


class Killed(BaseException):
    """The process dying at a write: nothing after it runs, not even cleanup."""


@st.composite
def stores(draw):
    cams = tuple(f"CAM_{i}" for i in range(draw(st.integers(1, 2))))
    size = draw(st.sampled_from([8, 12]))
    discrete = draw(st.booleans())
    space = {"type": "discrete", "n": draw(st.integers(2, 5))} if discrete else \
        {"type": "box", "shape": [d := draw(st.integers(1, 3))], "low": [-1.0] * d, "high": [1.0] * d}
    lengths = draw(st.lists(st.integers(1, 5), min_size=1, max_size=4))
    seed = draw(st.integers(0, 2**16))
    rng = np.random.default_rng(seed)
    eps = []
    for i, n in enumerate(lengths):
        action = rng.integers(0, space["n"], n) if discrete else rng.uniform(-1, 1, (n, space["shape"][0])).astype(np.float32)
        term = np.zeros(n, bool)
        term[-1] = bool(rng.integers(2))
        eps.append(Episode(obs={c: rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8) for c in cams},
                           action=action, reward=rng.normal(size=n).astype(np.float32), terminated=term,
                           truncated=~term & (np.arange(n) == n - 1), seed=1000 + i, key=f"ep{i}"))
    return cams, size, space, eps


def _writer(path, cams, size, space):
    return EpisodeWriter(path, cams, size, space, fps=10.0, source_env="Property")


def _same(a: Episode, b: Episode) -> bool:
    return (all(np.array_equal(a.obs[c], b.obs[c]) for c in a.obs) and np.array_equal(a.action, b.action)
            and np.array_equal(a.reward, b.reward) and np.array_equal(a.terminated, b.terminated)
            and np.array_equal(a.truncated, b.truncated) and a.seed == b.seed)


@SETTINGS
@given(data=stores())
def test_any_store_round_trips_exactly(tmp_path_factory, data):
    cams, size, space, eps = data
    path = tmp_path_factory.mktemp("s") / "s.zarr"
    with _writer(path, cams, size, space) as w:
        for ep in eps:
            w.write_episode(ep)
    r = EpisodeReader(path)
    assert r.num_episodes == len(eps) and r.episode_keys == [ep.key for ep in eps]
    assert all(_same(r.episode(i), ep) for i, ep in enumerate(eps))


@SETTINGS
@given(data=stores(), at=st.integers(0, 40))
def test_a_kill_at_any_write_loses_only_the_episode_being_written(tmp_path_factory, monkeypatch, data, at):
    cams, size, space, eps = data
    path = tmp_path_factory.mktemp("k") / "k.zarr"
    calls = {"n": 0}
    real_append = EpisodeWriter._append

    def append(arr, values, n0):  # the at-th array write never happens: the process died there
        calls["n"] += 1
        if calls["n"] > at:
            raise Killed
        real_append(arr, values, n0)

    w = _writer(path, cams, size, space)
    done = 0
    with monkeypatch.context() as m:
        m.setattr(EpisodeWriter, "_append", staticmethod(append))
        try:
            for ep in eps:
                w.write_episode(ep)
                done += 1
        except Killed:
            pass
    w._lock.release()  # the kernel drops a dead process's lock
    r = EpisodeReader(path)  # readers see committed episodes only
    assert r.num_episodes == done and all(_same(r.episode(i), eps[i]) for i in range(done))
    with _writer(path, cams, size, space) as again:  # the next writer drops the partial rows and completes
        for ep in eps:
            if not again.has(ep.key):
                again.write_episode(ep)
    r = EpisodeReader(path)
    assert r.num_episodes == len(eps) and all(_same(r.episode(i), ep) for i, ep in enumerate(eps))


@SETTINGS
@given(data=stores(), dtype=st.sampled_from(["float32", "int64", "uint16", "bool"]),
       shape_change=st.sampled_from([(0, 0), (1, 0), (0, -1)]))
def test_frames_of_a_wrong_dtype_or_shape_are_refused_and_change_nothing(tmp_path_factory, data, dtype, shape_change):
    cams, size, space, eps = data
    path = tmp_path_factory.mktemp("b") / "b.zarr"
    with _writer(path, cams, size, space) as w:
        w.write_episode(eps[0])
        bad = eps[-1]
        wrong = np.zeros((size + shape_change[0], size, 3 + shape_change[1]), dtype)  # never uint8 (size, size, 3)
        with pytest.raises(StoreError, match=rf"obs\['{cams[0]}'\] must be uint8 \({size}, {size}, 3\)"):
            w.add_step({**{cam: bad.obs[cam][0] for cam in cams}, cams[0]: wrong}, bad.action[0], 0.0, False, False)
    r = EpisodeReader(path)
    assert r.num_episodes == 1 and _same(r.episode(0), eps[0])
