"""Ray rollout pool: request order, worker-count invariance, fault tolerance, plans, streaming.

Determinism is promised for the same seeds and the same batch layout (envs per worker), not
across batch sizes: kernels sum in another order for another batch size (see the README).
"""

import numpy as np
import pytest

ray = pytest.importorskip("ray")

from wfm_sim.datasets import EpisodeReader  # noqa: E402
from wfm_sim.envs import ImaginedVectorEnv  # noqa: E402
from wfm_sim.policies import PlanPolicy  # noqa: E402
from wfm_sim.rollout import PolicySpec, RolloutError, RolloutPool, RolloutRequest, play  # noqa: E402


@pytest.fixture(scope="module")
def ray_session():
    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def pools(ray_session, tiny_model_dir_with_contexts):
    model = str(tiny_model_dir_with_contexts)
    two = RolloutPool(model, workers=2, envs_per_worker=2, num_cpus=1)
    one = RolloutPool(model, workers=1, envs_per_worker=2, num_cpus=1)  # the same batch layout per worker
    yield two, one
    two.shutdown()
    one.shutdown()


def _same(a, b):
    """Frames, actions and rewards bit-identical."""
    return (a.seed == b.seed and np.array_equal(a.action, b.action) and np.array_equal(a.reward, b.reward)
            and all(np.array_equal(a.obs[c], b.obs[c]) for c in a.obs))


def test_order_and_worker_count_invariance(pools):
    two, one = pools
    req = RolloutRequest(episodes=7, horizon=4, seed=100)
    a, b = two.run(req), one.run(req)
    assert [e.seed for e in a] == list(range(100, 107))
    assert all(len(e) == 4 and e.obs["CAM_FRONT"].shape == (4, 16, 16, 3) for e in a)
    assert all(_same(x, y) for x, y in zip(a, b))
    assert not _same(a[0], a[1])


def test_killed_worker_is_replaced_and_nothing_is_lost_or_duplicated(pools):
    two, _ = pools
    req = RolloutRequest(episodes=8, horizon=4, seed=7)
    reference = two.run(req)
    killed = []

    def kill_other(index):
        if not killed:  # after the first chunk lands, kill a replica while others are in flight
            victim = two.workers[1]
            ray.kill(victim, no_restart=True)
            killed.append(victim)

    before = two.replacements
    episodes = two.run(req, on_result=kill_other)
    assert killed and two.replacements > before
    assert [e.seed for e in episodes] == [e.seed for e in reference]
    assert all(_same(x, y) for x, y in zip(episodes, reference))


def test_retries_exhausted_raise_a_clear_error(ray_session, tiny_model_dir_with_contexts):
    pool = RolloutPool(str(tiny_model_dir_with_contexts), workers=1, envs_per_worker=2, num_cpus=1, max_retries=0)
    try:
        with pytest.raises(RolloutError, match="failed 1 times"):
            pool.run(RolloutRequest(episodes=4, horizon=3, seed=0),
                     on_result=lambda i: ray.kill(pool.workers[0], no_restart=True))
    finally:
        pool.shutdown()


def test_plan_rollout_on_ray_matches_the_same_batch_played_locally(pools, tiny_model_dir_with_contexts):
    two, _ = pools
    plan = np.random.default_rng(0).uniform([-1, 0, 0], [1, 1, 1], (5, 3)).astype(np.float32)
    eps = two.run(RolloutRequest(episodes=3, horizon=5, seed=40, policy=PolicySpec("plan", plan=plan)))
    env = ImaginedVectorEnv(2, str(tiny_model_dir_with_contexts), max_episode_steps=5)
    local = play(env, PlanPolicy(plan), [40, 41], 5) + play(env, PlanPolicy(plan), [42], 5)  # the pool's chunks
    assert [e.seed for e in eps] == [40, 41, 42]
    assert all(_same(a, b) for a, b in zip(eps, local))
    assert all(np.array_equal(e.action, plan[: len(e)]) for e in eps)


def test_policy_weights_and_streaming_into_zarr(pools, tmp_path):
    import torch

    from wfm_sim.policies import ConvPolicy, ConvPolicyConfig

    two, _ = pools
    torch.manual_seed(0)
    policy = ConvPolicy(ConvPolicyConfig(image_size=16, width=8))
    spec = PolicySpec("conv", state=(vars(policy.cfg), policy.state_dict()))
    n = two.run_to_store(RolloutRequest(episodes=5, horizon=3, seed=3, policy=spec), tmp_path / "imagined.zarr",
                         progress=False)
    r = EpisodeReader(tmp_path / "imagined.zarr")
    assert n == 5 and r.num_episodes == 5 and r.episode_seeds == [3, 4, 5, 6, 7]
    ep = r.episode(0)
    expected = policy(ep.obs["CAM_FRONT"][:1])
    np.testing.assert_allclose(ep.action[0], expected[0], atol=1e-5)
    # A rerun (after a crash, say) writes nothing twice; a bigger request adds only what is missing.
    assert two.run_to_store(RolloutRequest(episodes=5, horizon=3, seed=3, policy=spec), tmp_path / "imagined.zarr",
                            progress=False) == 0
    assert two.run_to_store(RolloutRequest(episodes=7, horizon=3, seed=3, policy=spec), tmp_path / "imagined.zarr",
                            progress=False) == 2
    r = EpisodeReader(tmp_path / "imagined.zarr")
    assert r.episode_seeds == [3, 4, 5, 6, 7, 8, 9] and len(set(r.episode_keys)) == 7
    other = PolicySpec("random")  # another policy's episodes are other episodes
    assert two.run_to_store(RolloutRequest(episodes=2, horizon=3, seed=3, policy=other), tmp_path / "imagined.zarr",
                            progress=False) == 2


def test_a_pool_the_cluster_cannot_place_fails_within_seconds(ray_session, tiny_model_dir_with_contexts):
    import time

    model = str(tiny_model_dir_with_contexts)
    t0 = time.perf_counter()
    with pytest.raises(RolloutError, match=r"need 5 CPUs \(5 workers x 1\) but the cluster has 4"):
        RolloutPool(model, workers=5, envs_per_worker=1)
    with pytest.raises(RolloutError, match=r"1 GPUs \(2 workers x 0.5\) but the cluster has 0"):
        RolloutPool(model, workers=2, envs_per_worker=1, num_gpus=0.5)
    assert time.perf_counter() - t0 < 10
    for kw, match in (({"workers": 0}, "workers must be an integer >= 1"),
                      ({"envs_per_worker": 0}, "envs_per_worker must be an integer >= 1"),
                      ({"num_cpus": 0}, "num_cpus per worker must be > 0")):
        with pytest.raises(ValueError, match=match):
            RolloutPool(model, **kw)
    with pytest.raises(ValueError, match="episodes must be an integer >= 1"):
        RolloutRequest(episodes=0, horizon=3)
