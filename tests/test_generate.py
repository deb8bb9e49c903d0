"""wfm-sim generate: provenance, exact regeneration, resume after a kill, clear refusals."""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from wfm_sim.datasets import EpisodeReader, StoreError
from wfm_sim.synthetic.generate import GenerateConfig, generate, regenerate
from wfm_sim.testing import square_world_store


def _cfg(model, store, **kw):
    base = dict(model=str(model), episodes=5, horizon=3, starts=str(store), policy="random", envs=2, seed=10,
                parallel_steps=2)
    base.update(kw)
    return GenerateConfig(**base)


def test_generate_writes_provenance_and_regenerates_bit_for_bit(tiny_model_dir_with_contexts, square_store, tmp_path):
    out = tmp_path / "gen.zarr"
    stats = generate(_cfg(tiny_model_dir_with_contexts, square_store), out, progress=False)
    assert stats["episodes"] == 5
    r = EpisodeReader(out)
    prov = r.attrs["provenance"]
    assert prov["model_hash"] and prov["wfm_sim_version"] and prov["settings"]["decoder"] == "token"
    assert prov["settings"]["envs"] == 2 and prov["settings"]["temperature"] == 1.0
    assert r.episode_seeds == [10, 11, 12, 13, 14]
    ep = r.episode(3)
    assert ep.extras["real_frame"].tolist() == [True, False, False]  # frame 0 is the real context frame
    assert np.isfinite(ep.extras["entropy"]).all() and (ep.extras["entropy"] > 0).all()
    start = prov["start_contexts"][int(ep.extras["start_context"][0])]
    assert str(square_store) in start and "episode=" in start
    for i in (4, 1):  # the lone episode of the last batch, and the second row of a full one
        again = regenerate(out, i)
        want = r.episode(i)
        assert all(np.array_equal(again.obs[c], want.obs[c]) for c in want.obs)
        assert np.array_equal(again.action, want.action) and np.array_equal(again.reward, want.reward)
    assert generate(_cfg(tiny_model_dir_with_contexts, square_store), out, progress=False)["skipped"] == 5


def test_generate_refuses_mixing_settings_and_bad_starts(tiny_model_dir_with_contexts, square_store, tmp_path):
    out = tmp_path / "gen.zarr"
    generate(_cfg(tiny_model_dir_with_contexts, square_store, episodes=1), out, progress=False)
    with pytest.raises(StoreError, match=r"other settings \(temperature\)"):
        generate(_cfg(tiny_model_dir_with_contexts, square_store, episodes=1, temperature=0.5), out, progress=False)

    other = square_world_store(tmp_path / "big.zarr", episodes=2, size=32)
    with pytest.raises(ValueError, match="32px"):
        generate(_cfg(tiny_model_dir_with_contexts, other), tmp_path / "x.zarr", progress=False)
    two = square_world_store(tmp_path / "two.zarr", episodes=2, cameras=("CAM_BACK",))
    with pytest.raises(StoreError, match=r"cameras \['CAM_BACK'\].*needs cameras \['CAM_FRONT'\]"):
        generate(_cfg(tiny_model_dir_with_contexts, two), tmp_path / "y.zarr", progress=False)
    with pytest.raises(ValueError, match="no text input"):
        generate(_cfg(tiny_model_dir_with_contexts, square_store, prompt="sharp left curve"), tmp_path / "z.zarr",
                 progress=False)
    np.save(tmp_path / "plan.npy", np.zeros((3, 2), np.float32))
    with pytest.raises(ValueError, match=r"must have shape \(T >= 3, 3\)"):
        generate(_cfg(tiny_model_dir_with_contexts, square_store, policy=str(tmp_path / "plan.npy")),
                 tmp_path / "w.zarr", progress=False)
    assert not (tmp_path / "x.zarr").exists() and not (tmp_path / "w.zarr").exists()


def test_a_killed_generate_resumes_without_loss_or_duplicates(tiny_model_dir_with_contexts, square_store, tmp_path):
    out = tmp_path / "gen.zarr"
    cmd = [sys.executable, "-m", "wfm_sim.cli", "generate", "--model", str(tiny_model_dir_with_contexts), "--out",
           str(out), "--episodes", "12", "--horizon", "6", "--starts", str(square_store), "--policy", "random",
           "--envs", "2", "--parallel-steps", "2", "--quiet"]
    proc = subprocess.Popen(cmd, env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.time() + 120
    while time.time() < deadline:  # kill it once some, but not all, episodes are committed
        try:
            if 2 <= EpisodeReader(out).num_episodes < 12:
                break
        except StoreError:  # not created yet, or being created
            pass
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    kept = EpisodeReader(out).num_episodes
    assert 2 <= kept < 12
    subprocess.run(cmd, check=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    r = EpisodeReader(out)
    assert r.num_episodes == 12 and sorted(r.episode_seeds) == list(range(12))
    assert len(set(r.episode_keys)) == 12
    for i in (0, kept, 11):  # before and after the kill: each episode is the one its provenance gives
        j = r.episode_seeds.index(i)
        again = regenerate(out, j)
        assert all(np.array_equal(again.obs[c], r.episode(j).obs[c]) for c in again.obs)
