"""Temporally compressed models in the imagined env: contexts of 1 + k*m frames, one step = k
actions and k frames, observations of the last frame or all k (the Cosmos 1 + k*t layout)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env

from wfm_sim.envs import ImaginedEnv, ImaginedVectorEnv
from wfm_sim.models import WorldModel, preset

K = 4


@pytest.fixture(scope="module")
def k4_model_dir(tmp_path_factory):
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("models") / "tiny-k4"
    model = WorldModel(preset("tiny-k4", success_head=True))
    torch.nn.init.constant_(model.backbone.head_done[-1].bias, -8.0)  # random heads would end episodes at random
    model.save_pretrained(folder)
    return folder


def _context(store, frames: int, episode: int = 0):
    from wfm_sim.datasets.store import EpisodeReader

    r = EpisodeReader(store)
    lo, _ = r.episode_bounds(episode)
    return r.read("obs/CAM_FRONT", lo, lo + frames), r.read("action", lo, lo + frames - 1)


def test_preset_layout():
    cfg = preset("tiny-k4")
    assert cfg.frames_per_step == K and cfg.backbone.action_group == K
    assert cfg.context_video_frames == 1 + K * (cfg.context_frames - 1) == 5
    assert [cfg.context_latent_frames(n) for n in (1, 5, 9)] == [1, 2, 3]


def test_check_env_passes_with_k4(k4_model_dir, square_store):
    env = ImaginedEnv(model=str(k4_model_dir), dataset=square_store, max_episode_steps=3, render_mode="rgb_array")
    assert env.action_space.shape == (K, 3)
    check_env(env, skip_render_check=False)


def test_reset_from_store_and_step_action_groups(k4_model_dir, square_store):
    env = ImaginedVectorEnv(2, str(k4_model_dir), dataset=square_store, max_episode_steps=3)
    obs, info = env.reset(seed=0)
    assert obs.shape == (2, 16, 16, 3)
    assert env.contexts.frames.shape[1] == 5  # 1 + k frames of real context per start
    for t in range(3):
        obs, reward, term, trunc, info = env.step(env.action_space.sample())
        assert obs.shape == (2, 16, 16, 3) and reward.shape == (2,) and not term.any()
    assert trunc.all()  # max_episode_steps counts steps of k frames


@pytest.mark.parametrize("frames", [1, 5, 9])
def test_caller_contexts_of_1_plus_k_m_frames(k4_model_dir, square_store, frames):
    ctx, acts = _context(square_store, frames)
    env = ImaginedEnv(model=str(k4_model_dir), obs_frames="all")
    obs, _ = env.reset(seed=0, options={"frames": ctx, "actions": acts})
    # After a reset the observation is the context's last k frames (frame 0 repeated in front).
    want = ctx[-K:] if frames >= K else np.concatenate([ctx[:1]] * (K - frames) + [ctx])
    np.testing.assert_array_equal(obs, want)
    for _ in range(3):  # a one-frame context steps too
        obs, *_ = env.step(env.action_space.sample())
        assert obs.shape == (K, 16, 16, 3)


def test_all_frames_end_with_the_last_frame(k4_model_dir, square_store):
    ctx, acts = _context(square_store, 5)
    last = ImaginedVectorEnv(2, str(k4_model_dir), obs_frames="last")
    every = ImaginedVectorEnv(2, str(k4_model_dir), obs_frames="all")
    assert every.single_observation_space.shape == (K, 16, 16, 3)
    a = np.stack([last.single_action_space.sample() for _ in range(2)])
    for env in (last, every):
        env.reset(seed=3, options={"frames": ctx, "actions": acts})
    o_last, *_ = last.step(a)
    o_all, *_ = every.step(a)
    np.testing.assert_array_equal(o_all[:, -1], o_last)
    assert not np.array_equal(o_all[:, 0], o_all[:, -1])  # k distinct predicted frames, not one repeated


def test_bad_contexts_and_action_groups_are_refused(k4_model_dir, square_store):
    env = ImaginedEnv(model=str(k4_model_dir))
    for n in (2, 4, 13):
        ctx, acts = _context(square_store, n)
        with pytest.raises(ValueError, match=rf"context must hold 1, 5, 9 frames \(1 \+ 4\*m.*got {n}"):
            env.reset(options={"frames": ctx, "actions": acts})
    ctx, acts = _context(square_store, 5)
    with pytest.raises(ValueError, match=r"context actions must have shape \(4, 3\)"):
        env.reset(options={"frames": ctx, "actions": acts[:3]})
    env.reset(seed=0, options={"frames": ctx, "actions": acts})
    with pytest.raises(ValueError, match=r"action must have shape \(4, 3\)"):
        env.step(np.zeros((3, 3), np.float32))
    with pytest.raises(ValueError, match="obs_frames must be one of"):
        ImaginedEnv(model=str(k4_model_dir), obs_frames="first")


def test_base_layout_at_reduced_width_steps_on_cpu():
    """The `base` preset's layout (8x temporal, 16x spatial, FSQ [8,8,8,5,5,5], 6 cameras) at test
    width, depth and frame size: a 9-frame context in, one step = 8 actions and 8 frames per camera."""
    from dataclasses import replace

    cams = ("CAM_FRONT", "CAM_FRONT_LEFT", "CAM_FRONT_RIGHT", "CAM_BACK", "CAM_BACK_LEFT", "CAM_BACK_RIGHT")
    cfg = preset("base", cameras=cams)
    tok = replace(cfg.tokenizer, image_size=64, base_channels=8, num_res_blocks=1)
    cfg = replace(cfg, tokenizer=tok,
                  backbone=replace(cfg.backbone, dim=32, depth=1, heads=4, kv_heads=2, grid=tok.grid, mlp_ratio=2.0),
                  decoder=replace(cfg.decoder, image_size=64, grid=tok.grid, base_channels=8, channel_mult=(1, 2)))
    assert (cfg.frames_per_step, tok.spatial_downsample, tok.levels, len(cfg.cameras)) == (8, 16, (8, 8, 8, 5, 5, 5), 6)
    torch.manual_seed(0)
    model = WorldModel(cfg)
    torch.nn.init.constant_(model.backbone.head_done[-1].bias, -8.0)
    env = ImaginedVectorEnv(2, model, parallel_steps=2, obs_frames="all", device="cpu", precision="fp32")
    rng = np.random.default_rng(0)
    frames = {c: rng.integers(0, 255, (9, 64, 64, 3), dtype=np.uint8) for c in cams}
    acts = rng.uniform(0, 1, (8, 3)).astype(np.float32)
    env.reset(seed=0, options={"frames": frames, "actions": acts})
    obs, reward, *_ = env.step(np.stack([env.single_action_space.sample() for _ in range(2)]))
    assert set(obs) == set(cams) and obs["CAM_BACK"].shape == (2, 8, 64, 64, 3) and reward.shape == (2,)


def test_open_loop_evaluation_scores_every_frame_of_every_step(k4_model_dir, square_store):
    from wfm_sim.evaluation.fidelity import EvalConfig, evaluate

    model = WorldModel.from_pretrained(str(k4_model_dir), "cpu", "fp32")
    cfg = EvalConfig(horizon=1, windows=3, split="all", modes=("parallel",), decoders=("token",), parallel_steps=2)
    report, videos = evaluate(model, str(square_store), cfg)
    assert report["horizon"] == 1 and report["horizon_frames"] == K and report["context_frames"] == 5
    for res in report["results"].values():
        assert len(res["psnr_mean"]) == K  # one score per predicted frame, not per latent step
    assert videos["parallel/token"].shape == videos["real"].shape == (3, K, 1, 16, 16, 3)
    # Repeat-last is scored against the frames that follow the 5-frame context, frame for frame.
    assert report["results"]["baseline/repeat_last"]["psnr_mean"] != report["results"]["parallel/token"]["psnr_mean"]
