"""Policy scoring: agreement metrics, both worlds from one start state, reports, bad input."""

import json

import numpy as np
import pytest
import torch

from wfm_sim.commands import policy_label
from wfm_sim.datasets import EpisodeReader, EpisodeWriter, StoreError
from wfm_sim.envs import Context, ImaginedVectorEnv
from wfm_sim.envs.real import RealEnv, make_real_vec
from wfm_sim.envs.spaces import action_space
from wfm_sim.evaluation.agreement import agreement, mmrv, pearson, ranks, spearman
from wfm_sim.evaluation.policy_sets import expert_for, expert_plans
from wfm_sim.evaluation.replay import replay_heads
from wfm_sim.evaluation.score_report import ranking_table, write_score_report
from wfm_sim.evaluation.scoring import ScoreConfig, score_policies
from wfm_sim.evaluation.starts import dataset_starts, seed_starts
from wfm_sim.models import WorldModel, preset
from wfm_sim.policies import ConstantPolicy, PlanPolicy, RandomPolicy, RoadCentroidDriver, TrackFollower, make_policy
from wfm_sim.policies.base import ConstantPolicy, ConvPolicy, ConvPolicyConfig, SpatialSoftmax
from wfm_sim.policies.bc import BCConfig, ExpertLabels, random_shift, train_bc, train_dagger
from wfm_sim.rl.planning import PlanConfig, cem_plan, plan_and_execute, rank_plans
from wfm_sim.rollout import record
from wfm_sim.rollout.play import play
from wfm_sim.rollout.record import record
from wfm_sim.testing import steer_reward_model

pytest.importorskip("Box2D")


def test_agreement_metrics_on_hand_computed_cases():
    assert pearson([1, 2, 3], [2, 4, 6]) == pytest.approx(1.0)
    assert spearman([1, 2, 3], [10, 100, 1000]) == pytest.approx(1.0)  # same order, not linear
    assert ranks([3, 1, 3]).tolist() == [2.5, 1.0, 2.5]
    assert mmrv([1, 2, 3], [0.1, 0.5, 0.9]) == 0.0  # never mis-ordered
    # Imagination swaps policies 0 and 1 (real gap 0.4) and ties 1 with 2 where reality does not (gap 0.4).
    assert mmrv([2, 1, 3], [0.1, 0.5, 0.9]) == pytest.approx((0.4 + 0.4 + 0.0) / 3)
    # Imagination ties what reality orders: each policy's largest gap to a worse-in-reality one.
    assert mmrv([1, 1, 1], [0.0, 0.5, 1.0]) == pytest.approx((0.0 + 0.5 + 1.0) / 3)
    assert np.isnan(pearson([1, 1, 1], [0, 1, 2]))
    a = agreement([0.9, 0.5, 0.1], [0.7, 0.4, 0.0])
    assert a["spearman"] == pytest.approx(1.0) and a["mean_gap"] == pytest.approx(0.1333, abs=1e-3)
    with pytest.raises(ValueError, match="at least 2 policies"):
        pearson([1], [1])


@pytest.fixture(scope="module")
def top_model():
    """A tiny model of the one-camera CarRacing rig (CAM_TOP, 16 px): the twin of source 'carracing'."""
    import torch

    torch.manual_seed(0)
    model = WorldModel(preset("tiny", cameras=("CAM_TOP",), name="tiny-car")).setup("cpu", "fp32").eval()
    torch.nn.init.constant_(model.backbone.head_done[-1].bias, -8.0)  # episodes run to the horizon
    return model


def test_score_plays_both_worlds_from_the_same_start_state(top_model, tmp_path):
    space = action_space({"type": "box", "low": [-1, 0, 0], "high": [1, 1, 1]})
    plan = np.tile(np.array([0.0, 0.6, 0.0], np.float32), (4, 1))
    cfg = ScoreConfig(starts=3, samples=2, horizon=4, batch=4, real_batch=2, videos=1, start_seed=1234)
    policies = {"gas": PlanPolicy(plan), "random": RandomPolicy(space), "road": RoadCentroidDriver(camera="CAM_TOP")}
    report = score_policies(top_model, "carracing", policies, cfg, progress=False)
    res = report["results"]["gas"]
    assert res.imagined_return.shape == (3, 2) and res.real_return.shape == (3,) and res.real_success is None
    real_ep, dream_ep = res.clips[0]
    assert np.array_equal(dream_ep.obs["CAM_TOP"][0], real_ep.obs["CAM_TOP"][0])  # the same start frame
    assert np.array_equal(dream_ep.action, real_ep.action) and dream_ep.action.shape == (4, 3)
    assert set(report["agreement"]) == {"return"} and report["speed"]["imagined_steps_per_s"] > 0
    assert res.replayed_return.shape == (3,) and np.isfinite(res.replayed_return).all()
    heads = report["replayed"]["return"]  # the imagined-real gap splits into dynamics and heads
    gap = report["agreement"]["return"]["mean_gap"]
    assert heads["dynamics_gap"] + heads["head_gap"] == pytest.approx(gap, abs=1e-5)
    starts = report["per_start"]["gas"]  # start by start, imagined averaged over the K samples
    assert starts["imagined_return"] == pytest.approx(res.imagined_return.mean(axis=1).tolist())
    assert starts["real_return"] == pytest.approx(res.real_return.tolist()) and len(starts["replayed_return"]) == 3
    summary = next(p for p in report["policies"] if p["policy"] == "gas")
    assert np.mean(starts["real_return"]) == pytest.approx(summary["real_return"])
    assert starts["return_pearson_over_starts"] == pytest.approx(
        np.corrcoef(starts["imagined_return"], starts["real_return"])[0, 1], nan_ok=True)
    again = score_policies(top_model, "carracing", policies, cfg, progress=False)  # deterministic by its seeds
    assert np.array_equal(again["results"]["random"].imagined_return, report["results"]["random"].imagined_return)
    assert np.array_equal(again["results"]["random"].real_return, report["results"]["random"].real_return)
    paths = write_score_report(report, tmp_path / "r")
    saved = json.loads(paths["json"].read_text())
    assert [p["policy"] for p in saved["policies"]] == ["gas", "random", "road"] and "results" not in saved
    assert paths["video"].stat().st_size > 1000 and "| gas |" in paths["table"].read_text()
    import cv2

    sheet = cv2.imread(str(paths["sheet"]))  # 3 policies x (real, imagined) rows of the 5 recorded frames
    assert sheet is not None and sheet.shape[1] >= 5 * 2 * 16 and sheet.shape[0] >= 6 * 2 * 16
    assert "replayed return" in paths["table"].read_text() and "dynamics" in paths["table"].read_text()


def test_recorded_episodes_start_both_worlds_where_they_were_recorded(top_model, tmp_path):
    store = tmp_path / "r.zarr"
    record("carracing", store, episodes=3, max_steps=7, seed=40, policy="random", size=16, progress=False)
    reader, T = EpisodeReader(store), 4
    eps = [reader.episode(e) for e in (1, 2)]
    starts = dataset_starts(store, "carracing", ("CAM_TOP",), 16, warmup=1, count=2, first=1)
    assert starts.seeds == [41, 42] and starts.context_max_diff == [0, 0]  # the twin is exactly there
    assert np.array_equal(starts.contexts[0].frames["CAM_TOP"], eps[0].obs["CAM_TOP"][:2])
    assert np.array_equal(starts.warmups[1], eps[1].action[:1])  # recorded warm-ups differ per start
    # Replaying each episode's own next actions from its start earns in reality what it earned when recorded.
    replay = PlanPolicy(np.stack([ep.action[1 : 1 + T] for ep in eps]))
    cfg = ScoreConfig(starts=2, samples=1, horizon=T, batch=2, real_batch=2, videos=1, starts_from=str(store),
                      start_episode=1)
    report = score_policies(top_model, "carracing", {"replay": replay}, cfg, progress=False)
    res = report["results"]["replay"]
    np.testing.assert_allclose(res.real_return, [ep.reward[1 : 1 + T].sum() for ep in eps], atol=1e-4)
    real_ep, dream_ep = res.clips[0]
    assert np.array_equal(real_ep.obs["CAM_TOP"][0], eps[0].obs["CAM_TOP"][1])
    assert np.array_equal(dream_ep.obs["CAM_TOP"][0], eps[0].obs["CAM_TOP"][1])
    assert report["starts"]["from"] == str(store) and report["starts"]["seeds"] == [41, 42]
    assert "starts: 2 recorded episodes of" in ranking_table(report) and "within 0/255" in ranking_table(report)
    with pytest.raises(ValueError, match="recorded from source 'carracing', not 'carracing-4cam'"):
        dataset_starts(store, "carracing-4cam", ("CAM_TOP",), 16, warmup=1, count=1)
    with pytest.raises(ValueError, match=r"starts 2\.\.3 asked of .* which holds episodes 0\.\.2"):
        dataset_starts(store, "carracing", ("CAM_TOP",), 16, warmup=1, count=2, first=2)
    with pytest.raises(ValueError, match="holds 16px frames, the model takes 64px"):
        dataset_starts(store, "carracing", ("CAM_TOP",), 64, warmup=1, count=1)
    unseeded = tmp_path / "imported.zarr"  # e.g. imported logs: frames and actions, no reset seed
    with EpisodeWriter(unseeded, ("CAM_TOP",), 16, reader.action_space, fps=50, source_env="CarRacing-v3") as w:
        for t in range(3):
            w.add_step({"CAM_TOP": eps[0].obs["CAM_TOP"][t]}, eps[0].action[t], 0.0, False, t == 2)
        w.end_episode()
    with pytest.raises(ValueError, match=r"1 start\(s\) have no recorded reset seed .* score them with --no-real"):
        dataset_starts(unseeded, "carracing", ("CAM_TOP",), 16, warmup=1, count=1)
    imagined_only = dataset_starts(unseeded, "carracing", ("CAM_TOP",), 16, warmup=1, count=1, check_real=False)
    assert imagined_only.seeds == [None] and imagined_only.context_max_diff is None
    dream = score_policies(top_model, "carracing", {"gas": PlanPolicy(np.tile([0, 0.5, 0], (2, 1)).astype(np.float32))},
                           ScoreConfig(starts=1, samples=2, horizon=2, batch=2, real=False), progress=False,
                           starts=imagined_only)
    assert dream["results"]["gas"].imagined_return.shape == (1, 2) and dream["results"]["gas"].real_return is None
    with pytest.raises(ValueError, match="no recorded reset seed"):  # and never played for real
        score_policies(top_model, "carracing", {"gas": PlanPolicy(np.zeros((2, 3), np.float32))},
                       ScoreConfig(starts=1, samples=1, horizon=2), progress=False, starts=imagined_only)


@pytest.mark.parametrize("mode", ["sequential", "parallel"])
def test_replayed_heads_equal_a_fresh_teacher_forced_pass(top_model, mode):
    """The replayed reward of step j is the reward head on the action token of the real frames up to
    j, computed here without the KV cache; a termination stops the sum."""
    import copy

    import torch

    m, T = copy.deepcopy(top_model), 3
    starts = seed_starts("carracing", [5, 6], 16, 1)
    contexts, warm = starts.contexts, starts.warmups[0]
    env = make_real_vec("carracing", 2, 16, context_frames=2)
    plan = np.random.default_rng(1).uniform([-1, 0, 0], [1, 1, 1], (T, 3)).astype(np.float32)
    eps = play(env, PlanPolicy(plan), [5, 6], T, options={"warmup": warm})
    env.close()
    torch.nn.init.normal_(m.backbone.head_reward[2].weight, std=1.0)  # let the head read the frames
    got = replay_heads(m, contexts, eps, mode=mode)["return"]
    net, W = m.backbone, m.cfg.backbone.max_frames
    steps = []  # per episode, the reward of each step from a fresh pass over its window
    for ctx, ep in zip(contexts, eps):
        frames = np.concatenate((ctx.frames["CAM_TOP"], ep.obs["CAM_TOP"][1:]))[:, None]
        tokens = m.encode(torch.from_numpy(frames)[None])
        acts = torch.from_numpy(np.concatenate((ctx.actions, ep.action)))[None, :, None]
        rewards = []
        for j in range(T):
            end = len(ctx) + j  # frames up to the one step j acts on; the window keeps W - 1 of them
            lo = max(0, end - (W - 1))
            ids, a = net.sequence(tokens[:, lo:end], acts[:, lo:end])
            with torch.no_grad():
                h = net.forward_chunk(ids, a, torch.arange(ids.shape[1])[None], mode)
                rewards.append(float(net.heads(h[:, -1])["reward"][0]))
        steps.append(rewards)
    steps = np.array(steps)
    assert len(contexts[0]) + T > W - 1  # the window slides within the episode
    np.testing.assert_allclose(got, steps.sum(1), atol=1e-4)
    torch.nn.init.constant_(m.backbone.head_done[-1].bias, 8.0)  # every step terminates
    first = replay_heads(m, contexts, eps, mode=mode)["return"]
    np.testing.assert_allclose(first, steps[:, 0], atol=1e-4)  # only step 0 counted
    with pytest.raises(ValueError, match="one context per episode"):
        replay_heads(m, contexts[:1], eps)


def test_ray_workers_score_like_one_process_and_scripted_experts_are_real_only(top_model, tmp_path):
    folder = top_model.save_pretrained(tmp_path / "tiny-car")
    plans = np.random.default_rng(0).uniform([-1, 0, 0], [1, 1, 1], (3, 3, 3)).astype(np.float32)  # one per start
    policies = {"plans": PlanPolicy(plans), "driver": TrackFollower()}
    cfg = ScoreConfig(starts=3, samples=2, horizon=3, batch=4, real_batch=3, videos=1, start_seed=77)
    one = score_policies(top_model, "carracing", policies, cfg, progress=False)
    two = score_policies(top_model, "carracing", policies, ScoreConfig(**{**cfg.__dict__, "workers": 2}),
                         progress=False, model_ref=str(folder))
    assert np.array_equal(one["results"]["plans"].imagined_return, two["results"]["plans"].imagined_return)
    drv = two["results"]["driver"]
    assert drv.imagined_return is None and drv.real_return.shape == (3,)  # a scripted reference: real only
    rows = {r["policy"]: r for r in two["policies"]}
    assert "imagined_return" not in rows["driver"] and "real_return_std" in rows["driver"]
    assert "| driver | - |" in ranking_table(two)
    with pytest.raises(ValueError, match="run only with --real"):
        score_policies(top_model, "carracing", policies, ScoreConfig(**{**cfg.__dict__, "real": False}), progress=False)


def test_bad_scoring_input_is_refused_before_anything_runs(top_model, tiny_model):
    cfg = ScoreConfig(starts=2, samples=1, horizon=5)
    with pytest.raises(ValueError, match="plan 'short' has 3 steps, fewer than the horizon 5"):
        score_policies(top_model, "carracing", {"short": PlanPolicy(np.zeros((3, 3), np.float32))}, cfg)
    with pytest.raises(ValueError, match=r"sees cameras \['CAM_FRONT'\] but source 'carracing' renders \['CAM_TOP'\]"):
        score_policies(tiny_model, "carracing", {"p": PlanPolicy(np.zeros((5, 3), np.float32))}, cfg)
    with pytest.raises(ValueError, match=r"start seeds must lie in \[0, 2\*\*32\)"):
        ScoreConfig(start_seed=2**32 - 1, starts=5)
    with pytest.raises(ValueError, match="PlanPolicy actions must have shape"):
        score_policies(top_model, "carracing", {"wide": PlanPolicy(np.zeros((5, 4), np.float32))},
                       ScoreConfig(starts=1, samples=1, horizon=5, real=False), progress=False)


def test_a_killed_scoring_run_leaves_no_report_json(tmp_path):
    out = tmp_path / "r"
    out.mkdir()
    (out / "report.json").write_text("{}")  # a finished report of an earlier run
    report = {"policies": [{"policy": "a", "imagined_return": 1.0, "imagined_return_ci": 0.1}], "ranking": ["a"],
              "agreement": {}, "model": "m", "source": "s", "config": {"starts": 1, "samples": 1},
              "results": {"a": None}}
    with pytest.raises(AttributeError):  # dies while writing (a broken result stands in for a kill)
        write_score_report(report, out)
    assert not (out / "report.json").exists()


def test_a_rerun_killed_before_it_writes_leaves_no_stale_report(tmp_path, monkeypatch, capsys):
    """The previous report is set aside when a rerun starts, so a rerun killed while scoring
    cannot leave an older report.json looking like its own."""
    from wfm_sim import commands
    from wfm_sim.cli import main

    out = tmp_path / "r"
    out.mkdir()
    (out / "report.json").write_text('{"old": true}')

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(commands, "score_policies", killed)
    assert main(["score", "--model", "driving", "--policies", "random", "--starts", "1", "--horizon", "2",
                 "--out", str(out), "--quiet"]) == 130
    assert not (out / "report.json").exists() and json.loads((out / "report.previous.json").read_text()) == {"old": True}
    capsys.readouterr()


def test_plans_are_ranked_and_cem_finds_the_best_in_imagination():
    model = steer_reward_model(preset("tiny")).setup("cpu", "fp32")  # reward rises with steer: optimum +1
    env = ImaginedVectorEnv(8, model, obs_mode="tokens", parallel_steps=1, max_episode_steps=4)
    ctx = Context({"CAM_FRONT": np.zeros((2, 16, 16, 3), np.uint8)}, np.zeros((1, 3), np.float32))
    steers = np.array([-1.0, 0.0, 0.5, 1.0], np.float32)
    plans = np.stack([np.tile([s, 0.5, 0.0], (4, 1)) for s in steers]).astype(np.float32)
    scores = rank_plans(env, ctx, plans)
    assert np.all(np.diff(scores) > 0), scores  # ranked by steer, as the model rewards
    plan, log = cem_plan(env, ctx, [-1, 0, 0], [1, 1, 1], PlanConfig(horizon=4, population=16, elites=4, iterations=3))
    assert plan.shape == (4, 3) and plan[:, 0].mean() > 0.5
    assert log["iterations"][-1]["mean"] > log["iterations"][0]["mean"]


def test_a_plan_chosen_in_imagination_is_played_in_the_real_twin_from_the_same_start(top_model):
    cfg = PlanConfig(horizon=3, population=4, elites=2, iterations=2)
    out = plan_and_execute(top_model, "carracing", [5, 6], cfg, batch=4, progress=False)
    assert [r["seed"] for r in out["starts"]] == [5, 6]
    for row in out["starts"]:  # CEM keeps the best plan it imagined, first population included
        assert row["imagined_return"] >= row["random_candidate_imagined_return"]
        assert len(row["cem"]) == 2
    # The scripted expert's real return is what the same seed and warm-up give when played by hand.
    env = RealEnv("carracing", 16, context_frames=2)
    plan = expert_plans("carracing", seed_starts("carracing", [5], 16, 1), 3, 16)[0]
    env.reset(seed=5, options={"warmup": np.zeros((1, 3), np.float32)})
    assert sum(env.step(a)[1] for a in plan) == pytest.approx(out["starts"][0]["expert_real_return"], abs=1e-4)
    env.close()
    assert out == plan_and_execute(top_model, "carracing", [5, 6], cfg, batch=4, progress=False)  # seeded


def test_behaviour_cloning_learns_a_frame_to_action_map_and_repeats(tmp_path):
    rng = np.random.default_rng(0)
    store = tmp_path / "teach.zarr"
    with EpisodeWriter(store, ("CAM_FRONT",), 16, {"type": "box", "shape": [2], "low": [-1, -1], "high": [1, 1]},
                       fps=10, source_env="Teach") as w:
        for e in range(6):
            for t in range(10):
                a = rng.uniform(-1, 1, 2).astype(np.float32)
                frame = np.zeros((16, 16, 3), np.uint8)
                frame[:, :8] = int((a[0] + 1) * 127)  # the action is written in the frame: learnable
                frame[:, 8:] = int((a[1] + 1) * 127)
                w.add_step({"CAM_FRONT": frame}, a, 0.0, False, t == 9)
            w.end_episode(seed=e)
    rec = train_bc(store, tmp_path / "bc", BCConfig(episodes=6, steps=300, batch_size=32, lr=3e-3, width=8),
                   progress=False)
    assert rec["final_mse"] < 0.05  # random actions in [-1, 1] have variance 1/3
    again = train_bc(store, tmp_path / "bc2", BCConfig(episodes=6, steps=300, batch_size=32, lr=3e-3, width=8),
                     progress=False)
    assert again["final_mse"] == rec["final_mse"]  # one seed, one policy
    policy = make_policy(str(tmp_path / "bc"))
    frame = np.zeros((1, 16, 16, 3), np.uint8)
    frame[:, :, :8], frame[:, :, 8:] = 200, 30
    np.testing.assert_allclose(policy(frame)[0], [200 / 127 - 1, 30 / 127 - 1], atol=0.15)

    with pytest.raises(StoreError, match="holds 6 episodes; asked to clone from 7"):
        train_bc(store, tmp_path / "x", BCConfig(episodes=7, steps=1), progress=False)


def test_policy_labels_keep_folder_names_whole(tmp_path):
    """A folder like bc-noise0.5 keeps its whole name (a stem would cut it to bc-noise0 and make
    bc-noise0.5 and bc-noise0.8 collide); plan files lose their suffix; RUN/policy takes RUN's name."""
    (tmp_path / "bc-noise0.5").mkdir()
    (tmp_path / "run7" / "policy").mkdir(parents=True)
    (tmp_path / "left.npy").write_bytes(b"")
    assert policy_label(str(tmp_path / "bc-noise0.5")) == "bc-noise0.5"
    assert policy_label(str(tmp_path / "run7" / "policy")) == "run7"
    assert policy_label(str(tmp_path / "left.npy")) == "left"
    assert policy_label("random") == "random"


def test_a_constant_policy_plays_like_the_constant_plan_and_refuses_bad_actions():
    space = action_space({"type": "box", "low": [-1, 0, 0], "high": [1, 1, 1]})
    left = make_policy("const:-1,0.5,0", space)
    assert isinstance(left, ConstantPolicy) and left({"CAM_TOP": np.zeros((3, 16, 16, 3), np.uint8)}).tolist() == [[-1, 0.5, 0]] * 3
    env = make_real_vec("carracing", 2, 16)
    a = play(env, left, [3, 4], 5)
    b = play(env, PlanPolicy(np.tile(np.float32([-1, 0.5, 0]), (5, 1))), [3, 4], 5)
    env.close()
    assert [e.total_reward() for e in a] == [e.total_reward() for e in b]
    assert np.array_equal(a[1].obs["CAM_TOP"], b[1].obs["CAM_TOP"])
    with pytest.raises(ValueError, match="gives 2 action values; this env takes 3"):
        make_policy("const:0,1", space)
    with pytest.raises(ValueError, match=r"lies outside the action space"):
        make_policy("const:0,2,0", space)
    with pytest.raises(ValueError, match="comma-separated numbers, e.g. const:-1,0.5,0"):
        make_policy("const:left", space)


def test_spatial_softmax_finds_the_hot_pixel_and_keypoint_policy_round_trips(tmp_path):
    """The keypoint head reads *where* a feature is: one hot pixel's softmax mean is its (x, y)
    in [-1, 1]. A keypoint ConvPolicy saves and loads exactly; a config without ``head`` (written
    before keypoints existed) loads as the pooling head; a bad head or bound count is refused."""
    maps = torch.full((1, 2, 8, 8), -1e4)
    maps[0, 0, 2, 7] = 0.0  # row 2, column 7
    maps[0, 1, 0, 0] = 0.0
    lin = torch.linspace(-1, 1, 8)
    np.testing.assert_allclose(SpatialSoftmax(8)(maps)[0].numpy(), [lin[7], lin[2], -1, -1], atol=1e-6)

    cfg = ConvPolicyConfig(image_size=16, action_dim=4, low=(-1,) * 4, high=(1,) * 4, width=8, head="keypoints",
                           keypoints=4)
    policy = ConvPolicy(cfg).eval()
    frames = np.random.default_rng(0).integers(0, 256, (3, 16, 16, 3), dtype=np.uint8)
    policy.save_pretrained(tmp_path / "kp")
    loaded = ConvPolicy.from_pretrained(tmp_path / "kp")
    assert loaded.cfg == cfg
    np.testing.assert_array_equal(loaded(frames), policy(frames))
    assert np.all(np.abs(policy(frames)) <= 1)

    ConvPolicy(ConvPolicyConfig(image_size=16, width=8)).save_pretrained(tmp_path / "old")
    meta = json.loads((tmp_path / "old" / "config.json").read_text())
    del meta["config"]["head"], meta["config"]["keypoints"]
    (tmp_path / "old" / "config.json").write_text(json.dumps(meta))
    assert ConvPolicy.from_pretrained(tmp_path / "old").cfg.head == "pool"
    with pytest.raises(ValueError, match="head must be 'pool' or 'keypoints', got 'spatial'"):
        ConvPolicyConfig(head="spatial")
    with pytest.raises(ValueError, match="need action_dim=4 entries, got 3 and 3"):
        ConvPolicyConfig(action_dim=4)
    # A config.json asking for a terabyte-sized policy is refused before anything is built.
    meta["config"]["width"] = 10**6
    (tmp_path / "old" / "config.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=r"ConvPolicyConfig.width = 1000000 is outside the sane range \[1, 4096\]"):
        ConvPolicy.from_pretrained(tmp_path / "old")
    from wfm_sim.policies.actor_critic import ActorCriticConfig

    with pytest.raises(ValueError, match=r"ActorCriticConfig.hidden = 1000000000 is outside"):
        ActorCriticConfig(hidden=10**9)


def test_random_shift_translates_all_cameras_alike():
    rng = np.random.default_rng(0)
    frames = torch.from_numpy(rng.integers(0, 256, (5, 2, 12, 12, 3), dtype=np.uint8))
    assert random_shift(frames, 0, rng) is frames
    out = random_shift(frames, 2, np.random.default_rng(1))
    assert out.shape == frames.shape and out.dtype == torch.uint8
    dy, dx = np.random.default_rng(1).integers(0, 5, (2, 5))
    for i in range(5):  # the interior is the frame moved by (dy - 2, dx - 2), both cameras
        oy, ox = dy[i] - 2, dx[i] - 2
        src = frames[i, :, max(oy, 0):12 + min(oy, 0), max(ox, 0):12 + min(ox, 0)]
        dst = out[i, :, max(-oy, 0):12 + min(-oy, 0), max(-ox, 0):12 + min(-ox, 0)]
        assert torch.equal(src, dst)


def test_dagger_labels_the_learners_states_with_the_experts_actions(tmp_path):
    """ExpertLabels plays the learner's actions and records, for each frame the learner saw, the
    expert's action in that state: the first label is the expert's first action from the same
    reset, the executed actions are the learner's. train_dagger grows the data by exactly the
    frames of its rounds and records each round's real outcome."""
    pytest.importorskip("metaworld")

    env = make_real_vec("metaworld-push", 2)
    still = ConstantPolicy(np.zeros(4, np.float32))
    labeller = ExpertLabels(still, expert_for("metaworld-push"), ("corner2",))
    eps = play(env, labeller, [11, 12], 5)
    first = play(env, expert_for("metaworld-push"), [11, 12], 1)
    env.close()
    assert len(labeller.frames) == 5 and labeller.frames[0].shape == (2, 1, 64, 64, 3)
    np.testing.assert_array_equal(labeller.frames[0][:, 0], np.stack([e.obs["corner2"][0] for e in eps]))
    np.testing.assert_allclose(labeller.labels[0], np.stack([e.action[0] for e in first]))
    assert all(np.all(e.action == 0) for e in eps)
    assert np.abs(labeller.labels[3]).max() > 0.1  # the expert would have moved

    store = tmp_path / "push.zarr"
    record("metaworld-push", store, episodes=2, max_steps=10, seed=0, progress=False)
    rec = train_dagger(store, tmp_path / "dagger", "metaworld-push", expert_for("metaworld-push"),
                       BCConfig(episodes=2, steps=2, batch_size=4, width=4, head="keypoints"), rounds=1,
                       episodes_per_round=2, steps_per_round=2, num_envs=2, progress=False)
    assert rec["frames"] == 20 + 2 * 50 and [r["round"] for r in rec["rounds"]] == [0]
    assert 0.0 <= rec["rounds"][0]["success"] <= 1.0
    with pytest.raises(ValueError, match="recorded from source 'metaworld-push'; DAgger rounds would run in 'pusher'"):
        train_dagger(store, tmp_path / "x", "pusher", expert_for("metaworld-push"), BCConfig(episodes=2, steps=1))


def test_expert_clean_is_the_noise_free_scripted_expert():
    """``expert-clean`` records the scripted expert's own actions (behaviour-cloning labels), while
    ``expert`` adds per-episode exploration noise; both refuse a source that is not Meta-World."""
    pytest.importorskip("metaworld")

    env = make_real_vec("metaworld-push", 2)
    clean = [play(env, make_policy("expert-clean", source="metaworld-push"), [3, 4], 6) for _ in range(2)]
    noisy = play(env, make_policy("expert", source="metaworld-push"), [3, 4], 6)
    env.close()
    np.testing.assert_array_equal(clean[0][0].action, clean[1][0].action)
    assert make_policy("expert-clean", source="metaworld-push").fixed_noise == 0.0
    assert not np.allclose(noisy[0].action, clean[0][0].action)
    with pytest.raises(ValueError, match="'expert-clean' is Meta-World's scripted expert; source 'carracing'"):
        make_policy("expert-clean", source="carracing")
