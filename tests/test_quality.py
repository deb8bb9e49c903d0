"""Dataset quality: neighbouring cameras agree in real data, broken episodes rank low, filtering keeps the rest."""

import json
from dataclasses import replace

import numpy as np
import pytest

from wfm_sim.cli import main
from wfm_sim.datasets import EpisodeReader, EpisodeWriter, StoreError, filter_store
from wfm_sim.rollout import record
from wfm_sim.synthetic.quality import Seam, score_dataset, seam_error, seams, wasserstein_1d

pytest.importorskip("Box2D")
CAMS = ("CAM_FRONT", "CAM_BACK", "CAM_LEFT", "CAM_RIGHT")


@pytest.fixture(scope="module")
def real_store(tmp_path_factory):
    out = tmp_path_factory.mktemp("q") / "real.zarr"
    record("carracing-4cam", out, episodes=3, policy="driver", max_steps=24, seed=70, progress=False)
    return out


def test_the_four_camera_rig_shares_columns_58_and_5_of_each_neighbouring_pair():
    pairs = seams(CAMS, 64)
    assert {(p.left, p.left_col, p.right, p.right_col) for p in pairs} == {
        ("CAM_LEFT", 58, "CAM_FRONT", 5), ("CAM_FRONT", 58, "CAM_RIGHT", 5),
        ("CAM_BACK", 58, "CAM_LEFT", 5), ("CAM_RIGHT", 58, "CAM_BACK", 5)}
    assert seams(("CAM_FRONT", "wrist"), 64) == []  # an unknown rig has no seams (the measure is skipped)


def test_neighbouring_cameras_agree_in_real_carracing_and_not_across_the_car(real_store):
    ep = EpisodeReader(real_store).episode(0)
    good = seam_error(ep.obs, seams(CAMS, 64))
    wrong = seam_error(ep.obs, [Seam("CAM_RIGHT", 58, "CAM_FRONT", 5), Seam("CAM_LEFT", 58, "CAM_BACK", 5)])
    assert good.mean() < 2.0 < 4.0 < wrong.mean()  # grey levels


def _imagined_copy(real_store, out, corrupt: set[int]):
    """The real episodes as a 'generated' store (frame 0 real), with ``corrupt`` episodes' left camera
    shifted and recoloured after frame 0: what a model that imagines each camera on its own produces."""
    r = EpisodeReader(real_store)
    extras = {"real_frame": ((), "bool"), "entropy": ((), "float32")}
    with EpisodeWriter(out, r.cameras, r.image_size, r.action_space, r.fps, "CarRacing-v3", extras=extras) as w:
        for i in range(r.num_episodes):
            ep = r.episode(i)
            obs = dict(ep.obs)
            if i in corrupt:
                left = obs["CAM_LEFT"].copy()
                left[1:] = np.roll(left[1:], 9, axis=2)[..., ::-1]  # shifted, channels swapped
                obs["CAM_LEFT"] = left
            n = len(ep)
            w.write_episode(replace(ep, obs=obs, key=f"fake/{i}", extras={
                "real_frame": np.arange(n) == 0, "entropy": np.full(n, 1.0 + i, np.float32)}))


def test_a_corrupted_episode_ranks_last_and_filtering_keeps_the_rest(real_store, tmp_path):
    gen = tmp_path / "gen.zarr"
    _imagined_copy(real_store, gen, corrupt={1})
    res = score_dataset(gen, reference=real_store, progress=False)
    q = {r["episode"]: r["quality"] for r in res["episodes"]}
    assert q[0] > 0.8 and q[2] > 0.8 and q[1] < 0.5 * min(q[0], q[2])
    assert res["episodes"][1]["seam"] > 5 * res["episodes"][0]["seam"]
    assert [r["entropy"] for r in res["episodes"]] == [1.0, 2.0, 3.0]  # over imagined frames, from the store
    assert res["reference"]["quality"] > 0.8 and res["dataset"]["curvature_wasserstein"] < 0.05  # the same drives

    kept = tmp_path / "kept.zarr"
    assert filter_store(gen, kept, [0, 2], {"min_quality": 0.5}) == 2
    assert filter_store(gen, kept, [0, 2], {"min_quality": 0.5}) == 0  # a rerun completes, never duplicates
    k = EpisodeReader(kept)
    assert k.episode_keys == ["fake/0", "fake/2"] and k.attrs["filtered_from"]["episodes"] == [0, 2]
    assert np.array_equal(k.episode(1).obs["CAM_LEFT"], EpisodeReader(gen).episode(2).obs["CAM_LEFT"])
    with pytest.raises(StoreError, match="other settings"):
        filter_store(gen, kept, [0], {"min_quality": 0.9})
    with pytest.raises(StoreError, match="into itself"):
        filter_store(gen, gen, [0])
    with pytest.raises(StoreError, match="cannot keep \\[7\\]"):
        filter_store(gen, tmp_path / "x.zarr", [7])


def test_the_quality_command_writes_a_report_a_sheet_and_the_kept_store(real_store, tmp_path, capsys):
    gen = tmp_path / "gen.zarr"
    _imagined_copy(real_store, gen, corrupt={0})
    out, kept = tmp_path / "q", tmp_path / "kept.zarr"
    assert main(["quality", str(gen), "--reference", str(real_store), "--out", str(out), "--min-quality", "0.6",
                 "--keep", str(kept), "--quiet"]) == 0
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert line["kept"] == 2 and EpisodeReader(kept).episode_keys == ["fake/1", "fake/2"]
    report = json.loads((out / "quality.json").read_text())
    assert min(report["episodes"], key=lambda r: r["quality"])["episode"] == 0
    assert (out / "quality_sheet.png").read_bytes()[:4] == b"\x89PNG"
    assert main(["quality", str(gen), "--min-quality", "0.5"]) == 2
    assert "--min-quality and --keep go together" in capsys.readouterr().err
    assert main(["quality", str(gen), "--reference", str(tmp_path / "none.zarr")]) == 2


def test_wasserstein_of_shifted_samples_is_the_shift():
    a = np.random.default_rng(0).normal(size=2000)
    assert abs(wasserstein_1d(a, a + 0.3) - 0.3) < 1e-6 and wasserstein_1d(a, a) == 0.0
