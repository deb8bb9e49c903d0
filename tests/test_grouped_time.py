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
    assert cfg.frames_per_step == K and cfg.geometry.frames_per_token == K
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
                  backbone=replace(cfg.backbone, dim=32, depth=1, heads=4, kv_heads=2, mlp_ratio=2.0),
                  decoder=replace(cfg.decoder, base_channels=8, channel_mult=(1, 2)))
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


# ------------------------------------------------------------------ the decoder over latent frames
def _grouped_decoder(seed=0):
    from wfm_sim.models.diffusion import DiffusionDecoder

    torch.manual_seed(seed)
    dec = DiffusionDecoder(preset("tiny-k4").decoder, preset("tiny-k4").geometry).eval()
    for mix in dec.unet.temporal:  # zero-initialised; give the temporal mixing weights to test it
        torch.nn.init.normal_(mix.conv.weight, std=0.3)
    torch.nn.init.normal_(dec.frame_emb.weight, std=0.3)
    return dec


def _grouped_inputs(b=2, t=K, seed=1):
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, 64, (b, 4, 4), generator=g)
    video = torch.rand(b, 3, t, 16, 16, generator=g) * 2 - 1
    return tokens, video, torch.rand(b, 3, 16, 16, generator=g) * 2 - 1


def test_grouped_decoder_is_causal_over_the_group_and_mixes_time():
    dec = _grouped_decoder()
    assert dec.geo.frames_per_token == K and len(dec.unet.temporal) > 0
    tokens, video, prev = _grouped_inputs()
    sigma = torch.full((2,), 0.7)

    def denoise(x, td):
        return dec.denoise(x, sigma, dec.cond(tokens, td, prev, K))[0]

    x = torch.randn_like(video)
    base = denoise(x, video)
    later_x, later_td = x.clone(), video.clone()
    later_x[:, :, 2:] += 1.0
    later_td[:, :, 2:] = -later_td[:, :, 2:]
    changed = denoise(later_x, later_td)
    torch.testing.assert_close(changed[:, :, :2], base[:, :, :2])  # frames 0-1 never see frames 2-3
    assert (changed[:, :, 2:] - base[:, :, 2:]).abs().max() > 1e-3
    earlier = x.clone()
    earlier[:, :, 0] += 1.0
    assert (denoise(earlier, video)[:, :, 1] - base[:, :, 1]).abs().max() > 1e-4  # frame 1 sees frame 0
    # The first t frames of a group decode as a shorter group would: causal all the way through.
    short = dec.denoise(x[:, :, :2], sigma, dec.cond(tokens, video[:, :, :2], prev, 2))[0]
    torch.testing.assert_close(short, base[:, :, :2], atol=1e-5, rtol=1e-5)


def test_grouped_decoder_samples_a_latent_frame_and_refuses_bad_groups():
    dec = _grouped_decoder()
    tokens, video, prev = _grouped_inputs()
    out = dec.sample(tokens, video, prev, steps=2, generator=[torch.Generator().manual_seed(i) for i in range(2)])
    assert out.shape == (2, 3, K, 16, 16) and out.abs().max() <= 1
    one = dec.sample(tokens[1:], video[1:], prev[1:], steps=2, generator=[torch.Generator().manual_seed(1)])
    torch.testing.assert_close(one, out[1:], atol=1e-5, rtol=1e-5)  # a row's sample does not depend on the batch
    with pytest.raises(ValueError, match="1..4 frames per latent frame, got 5"):
        dec.sample(tokens, torch.cat((video, video[:, :, :1]), dim=2), prev)
    with pytest.raises(ValueError, match="must match frames"):
        dec(video, tokens, video[:, :, :2], prev)
    loss = dec.train()(video, tokens, video * 0.9, prev, generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(loss.loss) and loss.logs["edm_mse"] > 0


def test_the_decoder_takes_its_group_size_from_the_tokenizer():
    """No copy to disagree: a k=4 tokenizer gives a decoder of 4-frame groups, with temporal mixing."""
    model = WorldModel(preset("tiny-k4"))
    assert model.decoder.geo.frames_per_token == 4 == model.backbone.dims.action_group
    assert model.decoder.frame_emb.num_embeddings == 4 and len(model.decoder.unet.temporal) > 0


def test_decoder_training_and_diffusion_steps_with_k4(tmp_path, square_store):
    """`train decoder` on a k=4 model, then the imagined env decoding each step's 4 frames with it."""
    from wfm_sim.training.loop import TrainConfig, train

    out = tmp_path / "k4"
    common = dict(preset="tiny-k4", batch_size=2, eval_every=2, save_every=2, progress=False, num_workers=0)
    train(TrainConfig("tokenizer", str(square_store), str(out), steps=2, **common))
    logs = train(TrainConfig("decoder", str(square_store), str(out), steps=2, **common))
    assert {"edm_mse", "val/psnr_token_decode", "val/psnr_diffusion_1step", "val/psnr_diffusion_2step"} <= set(logs)
    env = ImaginedVectorEnv(2, str(out), dataset=square_store, decoder="diffusion", obs_frames="all",
                            max_episode_steps=2, device="cpu", precision="fp32")
    obs, _ = env.reset(seed=3)
    first, *_ = env.step(np.zeros((2, K, 3), np.float32))
    assert first.shape == (2, K, 16, 16, 3)
    env.reset(seed=3)
    again, *_ = env.step(np.zeros((2, K, 3), np.float32))
    np.testing.assert_array_equal(first, again)  # seeded: the diffusion noise replays


# ------------------------------------------------------------------ rollouts, frame by frame
def test_play_records_every_frame_of_every_step(k4_model_dir, square_store):
    from wfm_sim.policies import PlanPolicy
    from wfm_sim.rollout import play

    env = ImaginedVectorEnv(2, str(k4_model_dir), dataset=square_store, obs_frames="all", max_episode_steps=3,
                            autoreset_mode="next_step")
    plan = np.random.default_rng(0).uniform([-1, 0, 0], [1, 1, 1], (10, 3)).astype(np.float32)  # 2.5 steps of 4
    eps = play(env, PlanPolicy(plan), [5, 6], horizon=3)
    ep = eps[0]
    assert len(ep) == 3 * K and ep.obs["CAM_FRONT"].shape == (3 * K, 16, 16, 3)
    np.testing.assert_array_equal(ep.action[:10], plan)  # the plan played action for action
    np.testing.assert_array_equal(ep.action[10:], plan[[-1, -1]])  # its last action held to the end of the group
    assert ep.truncated.tolist() == [False] * (3 * K - 1) + [True] and not ep.terminated.any()
    # Rows are frames in time: the frame before action j; the step's frames follow one another.
    env.reset(seed=[5, 6])
    obs0 = env._obs_all()
    np.testing.assert_array_equal(ep.obs["CAM_FRONT"][0], obs0[0, -1])  # the context's last frame
    step1, reward, *_ = env.step(np.stack([plan[:4]] * 2))
    np.testing.assert_array_equal(ep.obs["CAM_FRONT"][1:K + 1], step1[0])
    np.testing.assert_allclose(ep.reward[:K].sum(), reward[0], rtol=1e-5)  # the step's reward spread over its frames
    with pytest.raises(ValueError, match="obs_frames='all'"):
        play(ImaginedVectorEnv(1, str(k4_model_dir), dataset=square_store), PlanPolicy(plan), [0], horizon=1)


def test_ray_rollouts_of_a_k4_model_stream_frames_a_k4_model_can_train_on(k4_model_dir, square_store, tmp_path):
    ray = pytest.importorskip("ray")
    from wfm_sim.datasets import EpisodeReader
    from wfm_sim.rollout import PolicySpec, RolloutPool, RolloutRequest
    from wfm_sim.training.loop import TrainConfig, train

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True)
    try:
        pool = RolloutPool(str(k4_model_dir), workers=1, envs_per_worker=2, num_cpus=1,
                           env_kwargs={"dataset": str(square_store)})
        n = pool.run_to_store(RolloutRequest(episodes=3, horizon=5, seed=7, policy=PolicySpec("random")),
                              tmp_path / "imagined.zarr", progress=False)
        pool.shutdown()
    finally:
        ray.shutdown()
    r = EpisodeReader(tmp_path / "imagined.zarr")
    assert n == 3 and r.num_episodes == 3
    ep = r.episode(0)
    assert len(ep) == 5 * K and ep.action.shape == (5 * K, 3)
    # The imagined store feeds training like a recorded one: windows of 1 + k*T frames.
    logs = train(TrainConfig("backbone", str(tmp_path / "imagined.zarr"), str(tmp_path / "m"), preset="tiny-k4",
                             steps=1, batch_size=2, eval_every=100, progress=False, num_workers=0))
    assert np.isfinite(logs["loss"])
