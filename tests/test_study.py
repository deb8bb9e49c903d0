"""The downstream study (``wfm-sim downstream``): matched arms, paired intervals, provenance back to
the real contexts, resumption without recomputation, and refusals before anything is recorded."""

import json
import math

import numpy as np
import pytest

from wfm_sim.datasets import EpisodeReader, StoreError
from wfm_sim.synthetic.study import StudyConfig, run_study, t_interval

TINY = dict(source="carracing-front", budgets=(2, 3), synthetic=3, horizon=5, seeds=2, bc_steps=3, idm_steps=3,
            batch_size=8, real_steps=6, eval_episodes=2, eval_steps=5, test_episodes=2, envs=2, gate=-1.0,
            teacher="road")  # the default teacher, pixel-driver, reads the 4-camera rig at 64 px


@pytest.fixture(scope="module")
def front_model(tmp_path_factory):
    """A tiny model of the front-camera CarRacing rig (16 px): the twin of source 'carracing-front'."""
    import torch

    from wfm_sim.models import WorldModel, preset

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("models") / "tiny-front"
    model = WorldModel(preset("tiny", cameras=("CAM_FRONT",), name="tiny-front"))
    torch.nn.init.constant_(model.backbone.head_done[-1].bias, -8.0)  # imagined episodes run to the horizon
    model.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def study(front_model, tmp_path_factory):
    out = tmp_path_factory.mktemp("study") / "s"
    cfg = StudyConfig(model=str(front_model), **TINY)
    return cfg, out, run_study(cfg, out, progress=False)


def test_t_interval_is_students():
    from scipy import stats

    v = [1.0, 2.5, 2.0, 4.0]
    mean, half = t_interval(v)
    assert mean == pytest.approx(np.mean(v))
    assert half == pytest.approx(stats.t.ppf(0.975, 3) * np.std(v, ddof=1) / 2, rel=1e-3)
    assert math.isnan(t_interval([3.0])[1])


def test_arms_are_matched_and_differences_paired(study):
    cfg, out, rep = study
    for task in ("policy", "perception"):
        for budget in ("2", "3"):
            arms = rep["summary"][task][budget]
            assert list(arms) == ["real only", "+50% synthetic", "+100% synthetic", "+synthetic, gated (corr >= -1)"]
            assert arms["real only"]["synthetic_share"] == 0
            assert 0 < arms["+50% synthetic"]["synthetic_share"] < arms["+100% synthetic"]["synthetic_share"] < 1
            runs = rep["runs"][task][budget]
            for arm, row in arms.items():
                assert row["seeds"] == cfg.seeds
                scores = [runs[arm][s]["score"] for s in range(cfg.seeds)]
                assert row["mean"] == pytest.approx(np.mean(scores))
                if arm != "real only":
                    paired = [runs[arm][s]["score"] - runs["real only"][s]["score"] for s in range(cfg.seeds)]
                    assert row["difference"] == pytest.approx(np.mean(paired))
                    assert row["difference_ci95"] == pytest.approx(t_interval(paired)[1])
    # the policy arms train on the real frames plus exactly the synthetic episodes they name
    real = EpisodeReader(out / "real2.zarr").num_steps
    syn = EpisodeReader(out / "synthetic2.zarr")
    pol = rep["runs"]["policy"]["2"]
    assert pol["real only"][0]["train_frames"] == real
    assert pol["+100% synthetic"][0]["train_frames"] == real + syn.num_steps
    assert pol["+50% synthetic"][0]["train_frames"] == real + sum(syn.episode_lengths()[:2])  # round(0.5 * 3) = 2
    assert all(len(pol[a][0]["returns"]) == cfg.eval_episodes for a in pol)
    # with gate -1 every episode whose correlation exists is kept
    g = json.loads((out / "gate2.json").read_text())
    assert g["kept"] == [e for e, c in enumerate(g["correlations"]) if c is not None]


def test_synthetic_episodes_start_from_the_budgets_own_real_contexts(study):
    _, out, rep = study
    for budget in (2, 3):
        r = EpisodeReader(out / f"synthetic{budget}.zarr")
        prov = r.attrs["provenance"]
        assert prov["settings"]["starts"] == str(out / f"real{budget}.zarr")
        for e in range(r.num_episodes):
            a, _ = r.episode_bounds(e)
            origin = prov["start_contexts"][int(r.read("start_context", a, a + 1)[0])]
            assert origin.startswith(f"{out / f'real{budget}.zarr'}#episode=")
            assert int(origin.split("episode=")[1].split(",")[0]) < budget
    assert (out / "study.png").stat().st_size > 0 and (out / "contact.png").stat().st_size > 0
    assert json.loads((out / "study.json").read_text())["summary"] == json.loads(json.dumps(rep["summary"]))


def test_a_rerun_reuses_finished_runs_and_recomputes_a_lost_one_identically(study):
    cfg, out, rep = study
    lost = out / "runs" / "policy" / "real3" / "100-synthetic" / "seed1.json"
    before = json.loads(lost.read_text())
    kept = out / "runs" / "perception" / "real2" / "real-only" / "seed0.json"
    stamp = kept.stat().st_mtime_ns
    lost.unlink()
    for f in (lost.with_suffix("") / "bc.json", lost.with_suffix("") / "model.safetensors"):
        f.unlink()  # killed before the policy was saved: it is trained again
    again = run_study(cfg, out, progress=False)
    assert kept.stat().st_mtime_ns == stamp  # finished runs are read, not redone
    assert json.loads(lost.read_text()) == before  # the lost run comes back the same: seeded training and scoring
    assert again["summary"] == rep["summary"]
    assert EpisodeReader(out / "synthetic3.zarr").num_episodes == cfg.synthetic  # nothing imagined twice


def test_bad_inputs_are_refused_before_anything_is_recorded(front_model, study, tmp_path):
    cfg, out, _ = study
    fresh = tmp_path / "new"
    cases = [
        (dict(source="carracing"), ValueError, "has cameras \\['CAM_FRONT'\\]; source carracing records \\['CAM_TOP'\\]"),
        (dict(prompt="a sharp left bend"), ValueError, "needs a text-conditioned model"),
        (dict(policy="driver"), ValueError, "reads the real simulator's state"),
        (dict(teacher="pixel-driver"), ValueError, "'pixel-driver' reads 4 camera\\(s\\) at 64px; the model .* imagines 1 at 16px"),
        (dict(real=str(out / "real2.zarr"), budgets=(2, 5)), StoreError, "holds 2 episodes; the largest budget asks for 5"),
    ]
    for change, error, message in cases:
        with pytest.raises(error, match=message):
            run_study(StudyConfig(model=str(front_model), **{**TINY, **change}), fresh, progress=False)
        assert not fresh.exists()
    with pytest.raises(StoreError, match="holds a study run with other settings \\(horizon\\)"):
        run_study(StudyConfig(model=str(front_model), **{**TINY, "horizon": 6}), out, progress=False)
    for bad, message in ((dict(budgets=()), "budgets"), (dict(fractions=(0.0,)), "fractions"),
                         (dict(tasks=("segmentation",)), "tasks are policy, perception"), (dict(gate=2.0), "gate")):
        with pytest.raises(ValueError, match=message):
            StudyConfig(**{**TINY, **bad})


def test_road_explorer_holds_random_actions_and_repeats_per_seed():
    from wfm_sim.policies import make_policy
    from wfm_sim.policies.driving import RoadCentroidDriver

    frames = np.zeros((2, 16, 16, 3), np.uint8)
    frames[:, 8:, 6:10] = 110  # a grey road ahead, slightly left of centre
    obs = {"CAM_FRONT": frames}

    def run(seed):
        p = make_policy("road-explore")
        assert not getattr(p, "privileged", False)  # pixels only: it drives imagined envs too
        p.reset([seed, seed + 1])
        return np.stack([p(obs) for _ in range(300)])

    a = run(3)
    assert np.array_equal(a, run(3)) and not np.array_equal(a, run(4))
    assert (a[..., 0] >= -1).all() and (a[..., 0] <= 1).all() and (a[..., 1:] >= 0).all()
    follow = RoadCentroidDriver()(obs)
    held = (np.abs(a[..., 1] - follow[None, :, 1]) > 1e-6)  # gas differs from the follower's only when held
    assert 0.1 < held.mean() < 0.9
    runs = np.diff(np.flatnonzero(np.diff(np.r_[0, held[:, 0].astype(int), 0])))[::2]
    runs = runs[:-1] if held[-1, 0] else runs  # the last hold may be cut by the end of the test
    assert runs.min() >= 4 and runs.max() <= 24  # held 4-12 steps (two holds can touch)
    with pytest.raises(ValueError, match="interrupt"):
        type(make_policy("road-explore"))(interrupt=1.5)


def test_scenario_control_is_checked_from_real_contexts_by_a_real_trained_detector(front_model, tmp_path):
    from wfm_sim.synthetic.scenarios import ScenarioConfig, scenario_control

    cfg = ScenarioConfig(model=str(front_model), source="carracing-front", episodes=4, horizon=12,
                         detector_episodes=3, detector_steps=5, envs=2, first_seed=70)
    rep = scenario_control(cfg, tmp_path / "sc", progress=False)
    s, c = (EpisodeReader(tmp_path / "sc" / f"{n}.zarr") for n in ("offroad", "road"))
    # scenario and control start from the same real contexts, episode by episode
    for e in range(cfg.episodes):
        a, _ = s.episode_bounds(e)
        b, _ = c.episode_bounds(e)
        assert s.read("start_context", a, a + 1)[0] == c.read("start_context", b, b + 1)[0]
        assert (s.read("action", a, a + 12)[:, 1] == 0.5).sum() >= 6  # the swerve (from step 2-6): gas 0.5 (the follower gives 0.3)
    assert s.attrs["provenance"]["settings"]["starts"] == str(tmp_path / "sc" / "starts.zarr")
    assert rep["detector"]["train_frames"] > 0 and 0 <= rep["detector"]["test_accuracy"] <= 1
    per = rep["per_episode"]
    changed = np.mean([(x > y) and x > 0 for x, y in zip(per["offroad"], per["road"])])
    assert rep["imagined"]["episodes_changed"] == pytest.approx(changed)
    assert rep["real"]["episodes"] == 4
    assert json.loads((tmp_path / "sc" / "scenario.json").read_text())["imagined"] == rep["imagined"]


def test_the_command_completes_a_finished_study_and_prints_its_table(study, capsys):
    from wfm_sim.cli import main

    cfg, out, rep = study
    flags = ["--model", cfg.model, "--source", cfg.source, "--budgets", "2", "3", "--synthetic", "3", "--horizon", "5",
             "--seeds", "2", "--bc-steps", "3", "--idm-steps", "3", "--batch-size", "8", "--real-steps", "6",
             "--eval-episodes", "2", "--eval-steps", "5", "--test-episodes", "2", "--envs", "2", "--gate", "-1", "--teacher", "road",
             "--quiet"]
    assert main(["downstream", "--out", str(out), *flags]) == 0
    printed = capsys.readouterr().out
    assert "| 2 | +100% synthetic |" in printed and "steering R^2 on held-out real frames" in printed
    assert json.loads(printed.strip().splitlines()[-1])["plot"] == str(out / "study.png")
    assert main(["downstream", "--out", str(out), *flags[:-1], "--horizon", "6", "--quiet"]) == 2  # other settings
    assert "holds a study run with other settings (horizon)" in capsys.readouterr().err
