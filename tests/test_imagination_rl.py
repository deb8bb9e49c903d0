"""The imagination trainer finds a known optimum, resumes exactly, and refuses bad input."""

import json

import numpy as np
import pytest
import torch

from wfm_sim.policies import ActorCritic, make_policy
from wfm_sim.rl import ImaginationRLConfig, ImaginationTrainer, gae, train_policy


def _cfg(model, out, **kw):
    base = dict(iterations=12, num_envs=8, horizon=4, minibatches=2, epochs=4, lr=3e-3, gamma=0.9, width=8,
                parallel_steps=1, device="cpu", precision="fp32", save_every=2, progress=False, entropy_coef=0.0)
    base.update(kw)
    return ImaginationRLConfig(str(model), str(out), **base)


def test_gae_matches_a_hand_computed_case():
    r = torch.tensor([[1.0], [0.0], [2.0]])
    v = torch.tensor([[0.5], [0.2], [0.1]])
    term = torch.tensor([[False], [True], [False]])
    adv, ret = gae(r, v, term, torch.tensor([1.0]), gamma=0.9, lam=0.5)
    d2 = 2.0 + 0.9 * 1.0 - 0.1
    d1 = 0.0 - 0.2  # terminated after step 1: no bootstrap, no carry
    d0 = 1.0 + 0.9 * 0.2 - 0.5
    want = torch.tensor([[d0 + 0.45 * d1], [d1], [d2]])
    assert torch.allclose(adv, want) and torch.allclose(ret, want + v)


def test_the_trainer_finds_the_optimal_action_of_a_known_world(steer_world, tmp_path):
    log = train_policy(_cfg(steer_world, tmp_path / "run", iterations=16))
    policy = make_policy(str(tmp_path / "run" / "policy"))  # loads as every --policy flag does
    assert isinstance(policy, ActorCritic)
    obs = np.random.default_rng(0).integers(0, 256, (4, 16, 16, 3), dtype=np.uint8)
    steer = policy(obs)[:, 0]
    assert (steer > 0.8).all(), steer  # the optimum is +1; a random-init policy acts at the centre (0)
    lines = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [x["iteration"] for x in lines] == list(range(1, 17))
    assert lines[-1]["imagined_reward_per_step"] > lines[0]["imagined_reward_per_step"]
    assert log["iteration"] == 16


def test_a_run_resumes_exactly_and_drops_unsaved_work(steer_world, tmp_path):
    full = train_policy(_cfg(steer_world, tmp_path / "a", iterations=4))
    train_policy(_cfg(steer_world, tmp_path / "b", iterations=3, save_every=2))  # saved at 2, ran 3
    state = json.loads((tmp_path / "b" / "train_state" / "state.json").read_text())
    assert state["step"] == 3  # the last iteration is always saved
    # A run killed after iteration 3 but before its save: simulate by resuming from 2's state.
    train_policy(_cfg(steer_world, tmp_path / "c", iterations=2, save_every=2))
    with open(tmp_path / "c" / "metrics.jsonl", "a") as f:
        f.write(json.dumps({"iteration": 3, "lost": True}) + "\n")  # logged, never saved
    resumed = train_policy(_cfg(steer_world, tmp_path / "c", iterations=4, save_every=2), resume=True)
    its = [json.loads(x)["iteration"] for x in (tmp_path / "c" / "metrics.jsonl").read_text().splitlines()]
    assert its == [1, 2, 3, 4]  # iteration 3 redone once, not twice
    assert resumed["pg_loss"] == full["pg_loss"]
    a = ActorCritic.from_pretrained(tmp_path / "a" / "policy").state_dict()
    c = ActorCritic.from_pretrained(tmp_path / "c" / "policy").state_dict()
    assert all(torch.equal(a[k], c[k]) for k in a)


def test_bad_runs_are_refused_with_what_to_change(steer_world, tmp_path, square_store):
    train_policy(_cfg(steer_world, tmp_path / "r", iterations=1))
    with pytest.raises(ValueError, match="--resume with a different config: horizon: run has 4, given 5"):
        ImaginationTrainer(_cfg(steer_world, tmp_path / "r", horizon=5), resume=True)
    with pytest.raises(ValueError, match="holds a policy run already: pass --resume"):
        ImaginationTrainer(_cfg(steer_world, tmp_path / "r"))
    with pytest.raises(ValueError, match="holds no policy run; start without --resume"):
        ImaginationTrainer(_cfg(steer_world, tmp_path / "fresh"), resume=True)
    # Killed before its first save: run.json and a log line, no train state. --resume starts it
    # again at iteration 0 (nothing was saved, nothing is lost) instead of refusing both ways.
    early = tmp_path / "early"
    ImaginationTrainer(_cfg(steer_world, early, iterations=2))
    (early / "metrics.jsonl").write_text(json.dumps({"iteration": 1}) + "\n")
    again = ImaginationTrainer(_cfg(steer_world, early, iterations=2), resume=True)
    assert again.iteration == 0 and not (early / "metrics.jsonl").exists()
    again.train()
    assert [json.loads(x)["iteration"] for x in (early / "metrics.jsonl").read_text().splitlines()] == [1, 2]
    from wfm_sim.training.loop import TrainConfig, train

    tok_only = tmp_path / "tok_only"
    train(TrainConfig("tokenizer", str(square_store), str(tok_only), preset="tiny", steps=1, batch_size=2,
                      eval_every=100, save_every=100, progress=False, num_workers=0))
    with pytest.raises(ValueError, match="no trained reward or termination heads"):
        ImaginationTrainer(_cfg(tok_only, tmp_path / "x", data=str(square_store)))


def test_a_run_can_start_from_a_saved_policy_of_the_same_rig(steer_world, tmp_path):
    train_policy(_cfg(steer_world, tmp_path / "a", iterations=2))
    saved = ActorCritic.from_pretrained(tmp_path / "a" / "policy").state_dict()
    t = ImaginationTrainer(_cfg(steer_world, tmp_path / "b", init_policy=str(tmp_path / "a" / "policy")))
    assert all(torch.equal(saved[k], v) for k, v in t.policy.state_dict().items())  # starts where "a" ended
    with pytest.raises(ValueError, match="width 8; this run needs .* width 16"):
        ImaginationTrainer(_cfg(steer_world, tmp_path / "c", width=16, init_policy=str(tmp_path / "a" / "policy")))


def test_a_policy_for_another_rig_is_refused_by_name(steer_world, tmp_path, square_store):
    from wfm_sim.envs import ImaginedVectorEnv
    from wfm_sim.policies import ActorCriticConfig
    from wfm_sim.rollout import play

    env = ImaginedVectorEnv(1, steer_world, device="cpu", precision="fp32")
    other = ActorCritic(ActorCriticConfig(("CAM_BACK", "CAM_FRONT"), 16, "box", 3, (-1, 0, 0), (1, 1, 1), width=8))
    with pytest.raises(ValueError, match=r"this policy acts on cameras \['CAM_BACK', 'CAM_FRONT'\] at 16px.*the env "
                                         r"has cameras \['CAM_FRONT'\]"):
        play(env, other, [0], horizon=2)


def test_the_dyna_loop_runs_logs_both_worlds_and_resumes(tmp_path):
    """Two iterations on a tiny model of the one-camera CarRacing rig: real data grows, the
    world model is fine-tuned on it, each iteration's real and imagined returns are logged, and
    a rerun after the end redoes nothing."""
    from wfm_sim.datasets import EpisodeReader
    from wfm_sim.rl import dyna
    from wfm_sim.rl.dyna import DynaConfig, run_dyna
    from wfm_sim.rollout import record
    from wfm_sim.envs import sources
    from wfm_sim.policies import ActorCriticConfig
    from wfm_sim.training.loop import TrainConfig, train

    pytest.importorskip("Box2D")
    store = tmp_path / "car.zarr"
    record("carracing", store, episodes=3, max_steps=8, size=16, progress=False)
    model = tmp_path / "m"
    for c in ("tokenizer", "backbone"):
        train(TrainConfig(c, str(store), str(model), preset="tiny", steps=2, batch_size=2, eval_every=100,
                          save_every=100, progress=False, num_workers=0))
    start = ActorCritic(ActorCriticConfig(("CAM_TOP",), 16))  # iteration 0 starts from a saved policy
    start.save_pretrained(tmp_path / "start")
    cfg = DynaConfig(str(model), "carracing", str(store), str(tmp_path / "dyna"), iterations=2, collect_episodes=1,
                     wm_steps=1, wm_batch=2, policy_iterations=1, num_envs=2, horizon=2, score_starts=1,
                     test_starts=2, test_seed=2_000_000, init_policy=str(tmp_path / "start"), progress=False)
    limit = sources.SOURCES["carracing"]
    monkey = {"carracing": type(limit)(**{**limit.__dict__, "max_steps": 4})}  # short real episodes for the test
    old = dict(sources.SOURCES)
    sources.SOURCES.update(monkey)
    scored = []  # (first seed, starts, the choice on disk when that score was asked for)
    real_score = dyna.score_policies

    def spy(model, source, policies, sc, **kw):
        best = tmp_path / "dyna" / "best.json"
        scored.append((sc.start_seed, sc.starts, json.loads(best.read_text()) if best.is_file() else None))
        return real_score(model, source, policies, sc, **kw)

    dyna.score_policies = spy
    try:
        logs = run_dyna(cfg)
        assert [x["iteration"] for x in logs] == [0, 1]
        assert all(np.isfinite(x["real_return"]) and np.isfinite(x["imagined_return"]) for x in logs)
        assert logs[1]["data_episodes"] == 4 and EpisodeReader(store).num_episodes == 5  # 3 + 1 per iteration
        assert logs[1]["real_steps"] == EpisodeReader(store).num_steps - 4  # the data before iteration 1's collect
        runs = [json.loads((tmp_path / "dyna" / f"iter_{i}" / "policy_run" / "run.json").read_text())["config"]
                for i in (0, 1)]
        assert runs[0]["init_policy"] == str(tmp_path / "start") and runs[1]["init_policy"] is None  # then the last one
        # Selection never reads test seeds: every iteration is scored on the validation seed, the
        # choice is the best validation return, and the test seeds are played once, after it.
        assert [s[:2] for s in scored] == [(1_000_000, 1), (1_000_000, 1), (2_000_000, 2)]
        chosen = json.loads((tmp_path / "dyna" / "best.json").read_text())
        assert chosen["iteration"] == max(logs, key=lambda x: x["real_return"])["iteration"]
        assert scored[-1][2] == chosen  # already on disk when the test score was asked for
        test = json.loads((tmp_path / "dyna" / "test.json").read_text())
        assert test["iteration"] == chosen["iteration"] and test["test_seed"] == 2_000_000
        assert (tmp_path / "dyna" / "iter_1" / "model" / "model.safetensors").is_file()
        assert (tmp_path / "dyna" / "dyna.png").read_bytes()[:4] == b"\x89PNG"  # real vs imagined per iteration
        again = run_dyna(cfg)  # finished stages are not redone: no new data, no new log lines
        assert len(again) == 2 and EpisodeReader(store).num_episodes == 5
        # A kill right after iteration 1's score was recorded, before its log line was written (the
        # old append-then-mark order logged such an iteration twice on resume).
        log = tmp_path / "dyna" / "dyna.jsonl"
        log.write_text(log.read_text().splitlines()[0] + "\n")
        resumed = run_dyna(cfg)
        assert [x["iteration"] for x in resumed] == [0, 1] and len(log.read_text().splitlines()) == 2
        assert [json.loads(x) for x in log.read_text().splitlines()] == resumed == logs
        with pytest.raises(ValueError, match="other settings \\(horizon\\)"):
            run_dyna(DynaConfig(**{**cfg.__dict__, "horizon": 3}))
        assert len(scored) == 3  # nothing was rescored on any rerun
        with pytest.raises(ValueError, match=r"test seeds \[1000000, 1000002\) overlap the validation"):
            DynaConfig(**{**cfg.__dict__, "test_seed": 1_000_000})
        with pytest.raises(ValueError, match="overlap the collection seeds"):
            DynaConfig(**{**cfg.__dict__, "test_seed": 15_000})
        # A start policy for another rig is refused before the run folder exists.
        fresh = tmp_path / "dyna_init"
        with pytest.raises(ValueError, match=r"--init-policy carracing-dyna acts on cameras \['CAM_FRONT'\] at 64px.*"
                                             r"this run needs \['CAM_TOP'\] at 16px"):
            run_dyna(DynaConfig(**{**cfg.__dict__, "out": str(fresh), "init_policy": "carracing-dyna"}))
        assert not fresh.exists()
        # A latent (token) Dyna from the same pixel start: iteration 0 distils it on the store's frames.
        tok = run_dyna(DynaConfig(**{**cfg.__dict__, "out": str(tmp_path / "dyna_tok"), "obs": "tokens",
                                     "iterations": 1, "test_starts": 0}))
        run0 = tmp_path / "dyna_tok" / "iter_0" / "policy_run"
        assert len(tok) == 1 and json.loads((run0 / "distill.json").read_text())["teacher"] == str(tmp_path / "start")
        assert ActorCritic.from_pretrained(run0 / "policy").cfg.obs == "tokens"
    finally:
        dyna.score_policies = real_score
        sources.SOURCES.clear()
        sources.SOURCES.update(old)


def test_a_reward_ensemble_is_fitted_onto_a_model_and_penalises_imagined_rewards(steer_world, square_store, tmp_path):
    """``train heads --reward-ensemble`` adds members to a trained model (its weights kept), the
    imagined env reports their spread, and ``--uncertainty ensemble`` subtracts it from the reward."""
    import shutil

    from wfm_sim.envs import ImaginedVectorEnv
    from wfm_sim.models import WorldModel
    from wfm_sim.training.loop import TrainConfig, train, with_reward_ensemble

    base = WorldModel.from_pretrained(steer_world, device="cpu", precision="fp32")
    grown = with_reward_ensemble(base, 3)
    kept = base.state_dict()
    assert grown.cfg.backbone.reward_ensemble == 3 and len(grown.backbone.head_reward_ens) == 3
    assert all(torch.equal(v, kept[k]) for k, v in grown.state_dict().items() if k in kept)  # nothing else moved
    with pytest.raises(ValueError, match="--uncertainty ensemble needs a model with reward-ensemble heads"):
        ImaginationTrainer(_cfg(steer_world, tmp_path / "none", uncertainty="ensemble"))
    with pytest.raises(ValueError, match="uncertainty must be 'entropy' or 'ensemble'"):
        _cfg(steer_world, tmp_path / "x", uncertainty="dropout")

    model = tmp_path / "ens"
    shutil.copytree(steer_world, model)
    train(TrainConfig("heads", str(square_store), str(model), steps=2, batch_size=2, eval_every=100, save_every=100,
                      progress=False, num_workers=0, reward_ensemble=3))
    assert WorldModel.read_config(model).backbone.reward_ensemble == 3
    env = ImaginedVectorEnv(4, str(model), device="cpu", precision="fp32", max_episode_steps=None)
    env.reset(seed=0)
    _, _, _, _, info = env.step(np.tile(np.array([0.5, 0.5, 0.0], np.float32), (4, 1)))
    assert info["reward_std"].shape == (4,) and (info["reward_std"] > 0).all() and info["_reward_std"].all()

    trainer = ImaginationTrainer(_cfg(model, tmp_path / "run", uncertainty="ensemble", uncertainty_penalty=2.0,
                                      reward_scale=0.5))
    roll = trainer.collect()
    assert (roll["uncertainty"] > 0).all()
    assert torch.allclose(roll["reward"], (roll["raw_reward"] - 2.0 * roll["uncertainty"]) * 0.5)

    # MOReL's halt: a rollout ends (terminated, no bootstrap) exactly where the spread passes the limit.
    limit = float(roll["uncertainty"].median())
    halted = ImaginationTrainer(_cfg(model, tmp_path / "halt", uncertainty="ensemble", max_uncertainty=limit)).collect()
    torch.testing.assert_close(halted["uncertainty"], roll["uncertainty"])  # same seeds, same imagined steps
    assert torch.equal(halted["terminated"], roll["terminated"] | (roll["uncertainty"] > limit))
    assert halted["terminated"].any() and not halted["terminated"].all()
    with pytest.raises(ValueError, match="max-uncertainty must be a finite number > 0"):
        _cfg(model, tmp_path / "y", uncertainty="ensemble", max_uncertainty=0.0)


def test_init_policy_takes_a_shipped_name(steer_world, tmp_path):
    """``--init-policy carracing-dyna`` finds the shipped policy (then refuses it here by rig, not as a missing folder)."""
    with pytest.raises(ValueError, match=r"--init-policy carracing-dyna acts on cameras \['CAM_FRONT'\]"):
        ImaginationTrainer(_cfg(steer_world, tmp_path / "run", init_policy="carracing-dyna"))
    assert not (tmp_path / "run").exists()


def test_a_token_policy_learns_in_imagination_and_acts_on_real_frames_through_the_models_encoder(steer_world, tmp_path):
    """``--obs tokens``: the latent actor-critic trains on sampled ids (no pixel decoding), then
    acts on real frames by coding them with the model's own tokenizer encoder."""
    from wfm_sim.models import WorldModel

    log = train_policy(_cfg(steer_world, tmp_path / "run", iterations=16, obs="tokens"))
    assert log["iteration"] == 16
    policy = make_policy(str(tmp_path / "run" / "policy"))
    assert isinstance(policy, ActorCritic) and policy.cfg.obs == "tokens"
    assert all(not p.requires_grad for p in policy.token_encoder.parameters())
    frames = np.random.default_rng(0).integers(0, 256, (4, 16, 16, 3), dtype=np.uint8)
    assert (policy(frames)[:, 0] > 0.8).all()  # the optimum is +1 from real frames too
    model = WorldModel.from_pretrained(steer_world, device="cpu", precision="fp32")
    ids = model.encode(torch.as_tensor(frames)[:, None, None])[:, 0]  # (b, v, g, g): what imagination starts from
    assert torch.equal(policy.observe(frames), ids)  # real frames -> the model's own ids
    np.testing.assert_array_equal(policy(ids.numpy()), policy(frames))  # ids or frames: the same actions
    with pytest.raises(ValueError, match=r"takes \(n, 1, 4, 4\) token ids"):
        policy(np.zeros((2, 1, 3, 3), np.int64))


def test_a_token_run_resumes_exactly_and_refuses_a_pixel_start(steer_world, tmp_path):
    full = train_policy(_cfg(steer_world, tmp_path / "a", iterations=4, obs="tokens"))
    train_policy(_cfg(steer_world, tmp_path / "c", iterations=2, obs="tokens"))
    resumed = train_policy(_cfg(steer_world, tmp_path / "c", iterations=4, obs="tokens"), resume=True)
    assert resumed["pg_loss"] == full["pg_loss"]
    train_policy(_cfg(steer_world, tmp_path / "pix", iterations=1))
    with pytest.raises(ValueError, match="reads pixels and this run reads tokens: it is distilled on real frames, "
                                         "so pass --data STORE"):
        ImaginationTrainer(_cfg(steer_world, tmp_path / "d", obs="tokens", init_policy=str(tmp_path / "pix" / "policy")))
    assert not (tmp_path / "d").exists()
    with pytest.raises(ValueError, match="--resume with a different config: obs: run has 'tokens', given 'pixels'"):
        train_policy(_cfg(steer_world, tmp_path / "a", iterations=5), resume=True)
    t = ImaginationTrainer(_cfg(steer_world, tmp_path / "e", obs="tokens", init_policy=str(tmp_path / "a" / "policy")))
    saved = ActorCritic.from_pretrained(tmp_path / "a" / "policy").state_dict()
    assert all(torch.equal(saved[k], v) for k, v in t.policy.state_dict().items())


def test_a_token_policy_refuses_a_start_whose_encoder_codes_frames_otherwise(steer_world, tmp_path):
    train_policy(_cfg(steer_world, tmp_path / "a", iterations=1, obs="tokens"))
    other = ActorCritic.from_pretrained(tmp_path / "a" / "policy")
    with torch.no_grad():
        next(other.token_encoder.parameters()).add_(1.0)
    other.save_pretrained(tmp_path / "other")
    with pytest.raises(ValueError, match="tokenizer encoder differs from this world model's"):
        ImaginationTrainer(_cfg(steer_world, tmp_path / "b", obs="tokens", init_policy=str(tmp_path / "other")))
    assert not (tmp_path / "b").exists()


def test_a_run_written_before_a_setting_existed_resumes_with_its_default(steer_world, tmp_path):
    train_policy(_cfg(steer_world, tmp_path / "a", iterations=2))
    run = json.loads((tmp_path / "a" / "run.json").read_text())
    del run["config"]["obs"]  # as an older version wrote it
    (tmp_path / "a" / "run.json").write_text(json.dumps(run))
    assert train_policy(_cfg(steer_world, tmp_path / "a", iterations=3), resume=True)["iteration"] == 3


def test_a_pixel_policy_is_distilled_into_a_token_run(steer_world, square_store, tmp_path):
    """``--obs tokens --init-policy PIXELS --data STORE``: the start policy is carried over by
    distillation on the store's real frames, and the student acts as the teacher does."""
    train_policy(_cfg(steer_world, tmp_path / "pix", iterations=16))
    teacher = ActorCritic.from_pretrained(tmp_path / "pix" / "policy")
    t = ImaginationTrainer(_cfg(steer_world, tmp_path / "tok", obs="tokens", data=str(square_store),
                                init_policy=str(tmp_path / "pix" / "policy")))
    report = json.loads((tmp_path / "tok" / "distill.json").read_text())
    assert report["teacher"] == str(tmp_path / "pix" / "policy") and report["held_out_frames"] > 0
    assert report["held_out_action_mae"][0] < 0.1, report
    frames = np.random.default_rng(1).integers(0, 256, (8, 16, 16, 3), dtype=np.uint8)
    np.testing.assert_allclose(t.policy(frames)[:, 0], teacher(frames)[:, 0], atol=0.15)
    assert torch.equal(t.policy.log_std, teacher.log_std)
    start = ActorCritic.from_pretrained(tmp_path / "tok" / "distilled").state_dict()  # kept beside the run
    assert all(torch.equal(start[k], v) for k, v in t.policy.state_dict().items())


def test_real_validation_keeps_the_best_policy_and_counts_its_real_steps(steer_world, tmp_path):
    """``select_source``: every ``select_every`` iterations the policy drives the real twin on the
    validation seeds; ``best/`` holds the best by real return, and the real steps are logged."""
    from wfm_sim.envs import sources

    pytest.importorskip("Box2D")
    limit = sources.SOURCES["carracing-front"]
    old = dict(sources.SOURCES)
    sources.SOURCES["carracing-front"] = type(limit)(**{**limit.__dict__, "max_steps": 6})  # short real episodes
    try:
        train_policy(_cfg(steer_world, tmp_path / "run", iterations=4, obs="tokens", select_source="carracing-front",
                          select_every=2, select_starts=2, select_seed=1_000_000))
    finally:
        sources.SOURCES.clear()
        sources.SOURCES.update(old)
    lines = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    scored = {x["iteration"]: x for x in lines if "val_real_return" in x}
    assert sorted(scored) == [2, 4]
    best = json.loads((tmp_path / "run" / "best.json").read_text())
    want = max(scored.values(), key=lambda x: (x["val_real_return"], -x["iteration"]))
    assert best["iteration"] == want["iteration"] and best["val_seeds"] == [1_000_000, 1_000_001]
    assert best["validation_real_steps"] == scored[4]["validation_real_steps"] == 2 * scored[2]["validation_real_steps"] > 0
    assert ActorCritic.from_pretrained(tmp_path / "run" / "best").cfg.obs == "tokens"
