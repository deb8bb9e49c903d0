"""The model-free baseline: SB3 PPO on the real twin, counted in real steps, saved without pickle."""

import json

import numpy as np
import pytest

pytest.importorskip("stable_baselines3")
pytest.importorskip("Box2D")

from wfm_sim.envs import sources  # noqa: E402
from wfm_sim.rl.real_ppo import RealPPOConfig, SB3PixelPolicy, train_real_ppo  # noqa: E402


@pytest.fixture
def short_episodes():
    """carracing-front with 6-step episodes, so a budget of a few dozen steps spans episodes."""
    old = dict(sources.SOURCES)
    src = sources.SOURCES["carracing-front"]
    sources.SOURCES["carracing-front"] = type(src)(**{**src.__dict__, "max_steps": 6})
    yield
    sources.SOURCES.clear()
    sources.SOURCES.update(old)


def tiny(out, **kw) -> RealPPOConfig:
    return RealPPOConfig(**{"source": "carracing-front", "out": str(out), "real_steps": 16, "num_envs": 2,
                            "size": 36, "eval_every": 8, "eval_starts": 2, "n_steps": 4, "batch_size": 8,
                            "n_epochs": 1, "progress": False, **kw})


def test_the_baseline_counts_real_steps_keeps_the_best_and_resumes(tmp_path, short_episodes):
    from wfm_sim.policies import make_policy
    from wfm_sim.rl.real_ppo import evaluate_real

    cfg = tiny(tmp_path / "ppo")
    curve = train_real_ppo(cfg)
    assert [c["real_steps"] for c in curve] == [8, 16]  # one validation score per 8 real steps
    assert all(np.isfinite(c["val_return"]) for c in curve)
    for c in curve:  # scored acting on the mean and sampling; the better one is the score
        assert c["val_return"] == max(c["val_return_mean"], c["val_return_sampled"])
        assert c["val_return"] == c[f"val_return_{c['val_mode']}"]
    best = json.loads((tmp_path / "ppo" / "best" / "config.json").read_text())["config"]
    assert best["val_return"] == max(c["val_return"] for c in curve)
    # The saved policy is safetensors + JSON, loads by folder like every policy, and drives the
    # twin deterministically: its validation return is reproduced from the files alone.
    assert not list((tmp_path / "ppo").rglob("*.zip")) and not list((tmp_path / "ppo").rglob("*.pkl"))
    policy = make_policy(str(tmp_path / "ppo" / "policy"))
    assert isinstance(policy, SB3PixelPolicy)
    again = evaluate_real(policy, "carracing-front", [1_000_000, 1_000_001], 36)
    assert np.mean(again) == pytest.approx(curve[-1]["val_return"], abs=1e-4)
    # A larger budget resumes after the last score: the curve so far is kept, not redone.
    longer = train_real_ppo(tiny(tmp_path / "ppo", real_steps=24))
    assert [c["real_steps"] for c in longer] == [8, 16, 24] and longer[:2] == curve
    assert train_real_ppo(tiny(tmp_path / "ppo", real_steps=24)) == longer  # nothing left to do


def test_the_baseline_refuses_bad_runs_by_name(tmp_path, short_episodes):
    with pytest.raises(ValueError, match="training seeds .* would reach the validation seeds"):
        tiny(tmp_path / "a", train_seed=999_990)
    with pytest.raises(ValueError, match="real-steps must be an integer >= 1, got 0"):
        tiny(tmp_path / "a", real_steps=0)
    with pytest.raises(ValueError, match="size must be >= 36 pixels"):
        tiny(tmp_path / "a", size=16)
    with pytest.raises(ValueError, match="must divide into batches"):
        tiny(tmp_path / "a", batch_size=3)
    with pytest.raises(FileNotFoundError, match="not a wfm-sim dyna run folder"):
        train_real_ppo(tiny(tmp_path / "a", compare=str(tmp_path)))
    train_real_ppo(tiny(tmp_path / "b", real_steps=8))
    with pytest.raises(ValueError, match=r"other settings \(lr\)"):
        train_real_ppo(tiny(tmp_path / "b", lr=1e-3))


def test_a_saved_baseline_refuses_another_rig(tmp_path, short_episodes):
    from wfm_sim.rl.real_ppo import save_sb3_policy
    from stable_baselines3 import PPO
    from stable_baselines3.common.vec_env import DummyVecEnv
    import gymnasium as gym

    space = gym.spaces.Box(0, 255, (6, 36, 36), np.uint8)

    class Stub(gym.Env):
        observation_space, action_space = space, gym.spaces.Box(np.array([-1, 0, 0], np.float32), np.ones(3, np.float32))

    cfg = tiny(tmp_path / "c")
    from wfm_sim.rl.real_ppo import _build_kwargs, _policy_kwargs
    model = PPO("CnnPolicy", DummyVecEnv([Stub]), use_sde=True, policy_kwargs=_build_kwargs(_policy_kwargs(cfg)),
                device="cpu")
    policy = SB3PixelPolicy.from_pretrained(save_sb3_policy(model, cfg, tmp_path / "c"))
    with pytest.raises(ValueError, match=r"acts on cameras \['CAM_FRONT'\] at 36px; the env has cameras"):
        policy.check_spaces(("CAM_FRONT", "CAM_BACK"), 36, None)
    with pytest.raises(ValueError, match=r"takes \(n, 1, 36, 36, 3\) frames"):
        policy(np.zeros((1, 64, 64, 3), np.uint8))
    a = policy(np.zeros((3, 36, 36, 3), np.uint8))
    assert a.shape == (3, 3) and a.dtype == np.float32 and (a[:, 1:] >= 0).all()
