"""Metrics, pictures, camera clipping and simple policies."""

import numpy as np
import pytest
import torch

from wfm_sim.envs.car_cameras import _clip_near
from wfm_sim.metrics import psnr, ssim
from wfm_sim.policies import PlanPolicy, RandomPolicy, RoadCentroidDriver
from wfm_sim.viz import contact_sheet, mosaic, read_mp4, write_mp4


def test_psnr_and_ssim_identities():
    rng = np.random.default_rng(0)
    a = torch.from_numpy(rng.integers(0, 256, (3, 32, 32, 3), dtype=np.uint8))
    assert torch.allclose(psnr(a, a), torch.full((3,), 100.0))
    assert torch.allclose(ssim(a, a), torch.ones(3), atol=1e-5)
    noisy = (a.int() + torch.from_numpy(rng.integers(-20, 21, a.shape))).clamp(0, 255).to(torch.uint8)
    very = (a.int() + torch.from_numpy(rng.integers(-80, 81, a.shape))).clamp(0, 255).to(torch.uint8)
    assert (psnr(a, noisy) > psnr(a, very)).all() and (ssim(a, noisy) > ssim(a, very)).all()
    # PSNR of a constant offset of 16 levels: 20 log10(255 / 16).
    off = (a.int().clamp(0, 239) + 16).to(torch.uint8)
    base = a.clamp(0, 239)
    assert float(psnr(base, off)[0]) == pytest.approx(20 * np.log10(255 / 16), abs=1e-3)


def test_mp4_round_trip_and_mosaic(tmp_path):
    frames = [np.full((16, 24, 3), 10 * i, np.uint8) for i in range(5)]
    write_mp4(tmp_path / "v.mp4", frames, fps=5)
    back = read_mp4(tmp_path / "v.mp4")
    assert len(back) == 5 and back[0].shape == (16, 24, 3)
    assert abs(int(back[3].mean()) - 30) <= 3
    import av

    with av.open(str(tmp_path / "v.mp4")) as c:  # H.264 in yuv420p: what browsers play
        assert c.streams.video[0].codec_context.name == "h264" and c.streams.video[0].format.name == "yuv420p"
    assert not list(tmp_path.glob("*.partial*"))
    m = mosaic({"A": frames[1], "B": frames[2], "C": frames[3], "D": frames[4]})
    assert m.shape == (2 * (12 + 16) + 1, 2 * 24 + 1, 3)  # a 12-pixel label strip above each tile
    assert (m[:12, :24] < 128).any() and (m[12:28, :24] == 10).all()  # the label is drawn in the strip, not on the frame
    assert mosaic([frames[1]] * 2, scale=3).shape == (48, 2 * 72 + 1, 3)
    sheet = contact_sheet([[frames[0]] * 30, [frames[2], frames[3]]], ["row 0", "row 1"], scale=2, max_width=400)
    assert sheet.shape[1] <= 400  # 30 frames of 52 pixels wrap onto several lines


def test_near_plane_clipping():
    square = np.array([[-1.0, -1.0], [3.0, -1.0], [3.0, 1.0], [-1.0, 1.0]])  # forward, left
    clipped = _clip_near(square, 0.5)
    assert clipped[:, 0].min() == pytest.approx(0.5) and clipped[:, 0].max() == pytest.approx(3.0)
    assert len(_clip_near(square - [10, 0], 0.5)) == 0


def test_road_driver_steers_toward_the_road():
    img = np.zeros((64, 64, 3), np.uint8)
    img[..., 1] = 200  # grass
    img[32:, 44:60] = 105  # grey road, lower right
    steer, gas, brake = RoadCentroidDriver()({"CAM_FRONT": img[None]})[0]
    assert steer > 0.5 and gas > 0
    steer_left = RoadCentroidDriver()({"CAM_FRONT": img[None, :, ::-1]})[0, 0]
    assert steer_left < -0.5
    batch = RoadCentroidDriver()({"CAM_FRONT": np.stack([img, img[:, ::-1]])})
    assert batch.shape == (2, 3) and batch[0, 0] > 0 > batch[1, 0]


def test_random_policy_draws_per_episode_whatever_the_batch():
    import gymnasium as gym

    space = gym.spaces.Box(np.array([-1, 0, 0], np.float32), np.array([1, 1, 1], np.float32))
    pol = RandomPolicy(space)
    with pytest.raises(RuntimeError, match="reset"):
        pol(np.zeros((2, 4)))
    pol.reset([1, 2])
    a = pol(np.zeros((2, 4)))
    alone = RandomPolicy(space)
    alone.reset([2])  # episode seeded 2, alone in its batch
    assert a.shape == (2, 3) and np.array_equal(a[1], alone(np.zeros((1, 4)))[0])
    assert all(space.contains(x) for x in a) and not np.array_equal(a[0], a[1])


def test_plan_policy_keeps_a_step_per_row_and_plays_per_episode_plans():
    plan = PlanPolicy(np.arange(6, dtype=np.float32).reshape(2, 3))
    plan.reset([0, 0])
    assert np.array_equal(plan(np.zeros((2, 1))), [[0, 1, 2], [0, 1, 2]])
    plan.reset([5], rows=[1])  # row 1 starts a new episode; row 0 goes on
    assert np.array_equal(plan(np.zeros((2, 1))), [[3, 4, 5], [0, 1, 2]])
    with pytest.raises(IndexError, match="2 steps"):
        plan(np.zeros((2, 1)))
    per_episode = PlanPolicy(np.arange(12, dtype=np.float32).reshape(2, 2, 3))
    per_episode.reset([7, 8], episodes=[1, 0])
    assert np.array_equal(per_episode(np.zeros((2, 1))), [[6, 7, 8], [0, 1, 2]])


def test_a_precision_the_machine_cannot_run_is_refused_by_name(monkeypatch):
    import torch

    from wfm_sim import device

    cpu = torch.device("cpu")
    with pytest.raises(ValueError, match=r"'fp16' is unusable on this CPU \(.*\).*use "):
        device.autocast_dtype(cpu, "fp16")
    monkeypatch.setattr(device, "cpu_has_native_bf16", lambda: False)
    with pytest.raises(ValueError, match=r"'bf16' was requested but this CPU \(.*\) has no native bf16.*use 'fp32'"):
        device.autocast_dtype(cpu, "bf16")
    assert device.autocast_dtype(cpu, "auto") is None  # auto never picks what the CPU cannot run
    monkeypatch.setattr(device, "cpu_has_native_bf16", lambda: True)
    assert device.autocast_dtype(cpu, "bf16") is torch.bfloat16
