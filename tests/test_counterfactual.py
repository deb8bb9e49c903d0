"""The counterfactual report: reality as its own model passes, a model that ignores actions fails,
the metrics on hand-built branches, probes, and bad input."""

import json

import numpy as np
import pytest
import torch

from wfm_sim.cli import main
from wfm_sim.cli_args import Parser, add_config
from wfm_sim.evaluation.counterfactual import (
    CounterfactualConfig,
    branch_metrics,
    counterfactual,
    reward_metrics,
    led_starts,
    play_branches,
    probe_metrics,
    twin_imagine,
    write_counterfactual,
)
from wfm_sim.evaluation.probes import fit_probe, predict, r2
from wfm_sim.models import WorldModel, preset

pytest.importorskip("Box2D")

CFG = CounterfactualConfig(starts=2, branches=3, horizon=5, lead=4, probe_starts=3, probe_steps=60, report_at=5)


def _car_model(ignore_actions: bool):
    torch.manual_seed(0)
    model = WorldModel(preset("tiny", cameras=("CAM_TOP",), name="tiny-car")).setup("cpu", "fp32").eval()
    if ignore_actions:  # the action embedding's output is zero whatever the action
        last = model.backbone.act_emb.mlp[-1]
        torch.nn.init.zeros_(last.weight)
        torch.nn.init.zeros_(last.bias)
    return model


def test_the_twin_replaying_itself_passes_and_writes_the_report(tmp_path):
    starts, _ = led_starts("carracing", [CFG.start_seed, CFG.start_seed + 1], 16, 2, CFG.lead, CFG.horizon)
    rep = counterfactual(None, "carracing", CFG, progress=False, imagine=twin_imagine("carracing", 16, starts), size=16)
    assert min(rep["pairs"]) > 0 and rep["discrimination"] == [1.0] * CFG.horizon
    assert rep["spread_imagined"] == pytest.approx(rep["spread_real"]) and rep["error"] == [0.0] * CFG.horizon
    assert rep["spread_real"][-1] > rep["spread_real"][0] > 0  # branches drift apart
    idm = rep["inverse_dynamics"]
    assert idm["imagined_r2"] == idm["real_r2"]  # the same frames, the same probe
    assert rep["summary"]["passed"]["discrimination"] and "off_road" in rep["events"]
    assert rep["branch_return_imagined"] == rep["branch_return_real"] and rep["return_pearson"] == pytest.approx(1.0)
    assert all(v == 1.0 for v, n in zip(rep["return_ranking"], rep["return_pairs"]) if n)  # reality orders itself
    paths = write_counterfactual(rep, tmp_path / "cf")
    body = json.loads(paths["json"].read_text())
    assert "arrays" not in body and body["summary"]["discrimination"] == 1.0
    assert all(paths[k].stat().st_size > 0 for k in ("plot", "sheet", "video"))


def test_a_model_that_ignores_actions_fails():
    rep = counterfactual(_car_model(ignore_actions=True), "carracing", CFG, progress=False)
    assert rep["spread_imagined"] == [0.0] * CFG.horizon  # every branch of a start imagined alike
    assert rep["discrimination"] == [0.5] * CFG.horizon and not rep["summary"]["passed"]["discrimination"]
    imagined = np.array(rep["branch_return_imagined"])
    assert np.allclose(imagined, imagined[0])  # the same predicted rewards for every branch
    assert all(v == 0.5 for v, n in zip(rep["return_ranking"], rep["return_pairs"]) if n)  # a coin, where counted
    assert rep["arrays"]["imagined"].shape == (2, 3, 1, 5, 1, 16, 16, 3)


def test_branch_metrics_on_hand_built_branches():
    rng = np.random.default_rng(0)
    real = rng.integers(0, 255, size=(2, 3, 4, 1, 4, 4, 3), dtype=np.uint8)
    same = branch_metrics(real, real[:, :, None], min_spread=0.0)
    assert same["discrimination"] == [1.0] * 4 and same["spread_ratio"] == pytest.approx([1.0] * 4)
    swapped = real[:, [1, 0]][:, :, None]  # imagination plays branch 1 when asked for 0, and 0 for 1
    assert branch_metrics(real[:, :2], swapped, 0.0)["discrimination"] == [0.0] * 4
    still = np.repeat(real[:, :1], 3, axis=1)  # every real branch alike: no pair can be told apart
    m = branch_metrics(still, real[:, :, None], min_spread=0.5)
    assert m["pairs"] == [0] * 4 and all(np.isnan(m["discrimination"]))


def test_reward_ranking_on_hand_built_returns():
    real = np.array([[[1.0, 1.0, 1.0], [0.0, 0.0, 0.0], [2.0, 2.0, 2.0]]])  # (o=1, x=3, s=3): returns 3, 0, 6
    right = reward_metrics(real, real[:, :, None] * 0.5, min_gap=0.5)  # half the scale, the same order
    assert right["return_ranking"] == [1.0] * 3 and right["return_pairs"] == [3, 3, 3]
    assert right["branch_return_real"] == [3.0, 0.0, 6.0] and right["branch_return_imagined"] == [1.5, 0.0, 3.0]
    wrong = reward_metrics(real, -real[:, :, None], min_gap=0.5)  # the reverse order
    assert wrong["return_ranking"] == [0.0] * 3 and wrong["return_pearson"] == pytest.approx(-1.0)
    close = reward_metrics(real, real[:, :, None], min_gap=10.0)  # no pair differs by more than the gap
    assert close["return_pairs"] == [0, 0, 0] and all(np.isnan(close["return_ranking"]))


def test_event_probe_reads_imagined_events_as_trained_on_real_ones():
    """Frames with a bright corner mark an event; imagined frames that show it agree, ones that
    never show it agree only where reality has no event."""
    rng = np.random.default_rng(1)

    def frames(events):
        f = rng.integers(0, 60, size=events.shape + (1, 8, 8, 3), dtype=np.uint8)
        f[events, :, :4, :4] = 250
        return f

    S, B, h = 4, 2, 3
    ev = rng.random((S, B, h)) < 0.5
    ev_train = rng.random((24, h)) < 0.5
    cfg = CounterfactualConfig(probe_steps=150)
    data = {"context": np.zeros((24, 2, 1, 8, 8, 3), np.uint8), "frames": frames(ev_train),
            "actions": rng.uniform(-1, 1, (24, h, 1)).astype(np.float32), "events": {"flag": ev_train}}
    real, start = frames(ev), np.zeros((S, 2, 1, 8, 8, 3), np.uint8)
    acts = rng.uniform(-1, 1, (S, B, h, 1)).astype(np.float32)
    good = probe_metrics(data, real, real[:, :, None], start, acts, {"flag": ev}, cfg)["events"]["flag"]
    assert good["agreement"] == [1.0] * h and good["probe_on_real_agreement"] == [1.0] * h
    blind = probe_metrics(data, real, frames(np.zeros_like(ev))[:, :, None], start, acts, {"flag": ev}, cfg)
    by_h = ev.reshape(S * B, h).cumsum(1) > 0
    assert blind["events"]["flag"]["agreement"] == pytest.approx((~by_h).mean(0).tolist())
    none = probe_metrics({**data, "events": {"flag": np.zeros_like(ev_train)}}, real, real[:, :, None], start, acts,
                         {"flag": ev}, cfg)
    assert "no probe can be trained" in none["events"]["flag"]["skipped"]


def test_inverse_dynamics_probe_and_r2():
    assert r2([[1.0], [2.0], [3.0]], [[1.0], [2.0], [3.0]]) == 1.0
    assert r2([[2.0], [2.0], [2.0]], [[1.0], [2.0], [3.0]]) == 0.0  # the mean: R2 0
    assert np.isnan(r2([[1.0]], [[1.0]]))
    rng = np.random.default_rng(0)
    a = rng.uniform(-1, 1, 256).astype(np.float32)
    pairs = np.zeros((256, 2, 1, 8, 8, 3), np.uint8)
    pairs[:, 0] = 128
    pairs[:, 1] = (128 + 100 * a)[:, None, None, None, None].astype(np.uint8)  # the action brightens frame t
    probe = fit_probe(pairs, a[:, None], "regress", steps=300, seed=0)
    assert r2(predict(probe, pairs), a[:, None]) > 0.9


def test_bad_input_is_refused_with_what_was_expected(tmp_path):
    with pytest.raises(ValueError, match="overlap the evaluated start seeds"):
        CounterfactualConfig(start_seed=10, probe_seed=12)
    with pytest.raises(ValueError, match=">= 2 branches"):
        CounterfactualConfig(branches=1)
    plan = tmp_path / "branches.npy"
    np.save(plan, np.zeros((3, 4, 3), np.float32))
    with pytest.raises(ValueError, match=r"expected \(3, 5, 3\) \(branches, horizon, action\)"):
        counterfactual(_car_model(False), "carracing", CounterfactualConfig(**{**vars(CFG), "branches_from": str(plan)}),
                       progress=False)
    with pytest.raises(ValueError, match="sees cameras"):
        counterfactual(_car_model(False), "carracing-4cam", CFG, progress=False)
    starts, _ = led_starts("carracing", [5], 16, 2, 0)
    acts = np.zeros((1, 2, 3), np.float32)
    starts.contexts[0].frames["CAM_TOP"][-1] ^= 1  # a twin whose seed does not bring it back
    with pytest.raises(ValueError, match="does not return to start seed=5"):
        play_branches("carracing", 16, starts, np.zeros(1, int), acts)
    starts.seeds[0] = None
    with pytest.raises(ValueError, match="has no reset seed"):
        play_branches("carracing", 16, starts, np.zeros(1, int), acts)


def test_evaluate_cli_needs_data_or_counterfactual_and_flags_shared_by_configs_agree(capsys):
    assert main(["evaluate", "driving"]) == 2
    assert "either --data STORE (open-loop fidelity) or --counterfactual" in capsys.readouterr().err
    from dataclasses import dataclass, field

    @dataclass(frozen=True)
    class A:
        horizon: int = 8

    @dataclass(frozen=True)
    class B:
        horizon: int = 16

    @dataclass(frozen=True)
    class Both:
        a: A = field(default_factory=A)
        b: B = field(default_factory=B)

    with pytest.raises(TypeError, match="B.horizon is a flag of another config"):
        add_config(Parser(), Both)


def test_shipped_cards_are_generated_from_their_stored_reports():
    """Each shipped model's card (Hub header, intended use, limitations, counterfactual section) is
    what its stored reports render to: a card cannot keep a figure a later report replaced."""
    from pathlib import Path

    from wfm_sim.card import put_section, read_header, render_card
    from wfm_sim.models.world_model import PRETRAINED_DIR

    folders = [f for f in Path(PRETRAINED_DIR).iterdir() if (f / "eval.json").is_file()]
    assert {f.name for f in folders} >= {"driving", "manipulation", "driving_text"}
    for folder in folders:
        card = (folder / "README.md").read_text()
        assert render_card(folder, card) == card, f"{folder.name}: the card is stale (wfm_sim.card.refresh_card)"
        header = read_header(card)
        assert header["license"] == "apache-2.0" and header["model-index"][0]["name"] == folder.name
        metrics = {m["name"]: m["value"] for r in header["model-index"][0]["results"] for m in r["metrics"]}
        ev = json.loads((folder / "eval.json").read_text())
        assert metrics["PSNR at horizon 1 (baseline/repeat_last)"] == round(ev["results"]["baseline/repeat_last"]["psnr_mean"][0], 2)
        if (folder / "counterfactual.json").is_file():
            cf = json.loads((folder / "counterfactual.json").read_text())["summary"]
            assert metrics["action discrimination at horizon 8"] == round(cf["discrimination"], 3)
            assert f"| action discrimination (0.5: actions ignored) | {cf['discrimination']:.2f} |" in card
    policies = [f for f in (Path(PRETRAINED_DIR) / "policies").iterdir() if f.is_dir()]
    assert policies, "no shipped policy to check"
    for folder in policies:  # a shipped policy's card: Hub header and score section from its score.json
        assert (folder / "score.json").is_file(), f"{folder.name} ships without its score report"
        card = (folder / "README.md").read_text()
        assert render_card(folder, card) == card, f"{folder.name}: the card is stale (wfm_sim.card.refresh_card)"
        header = read_header(card)
        assert header["model-index"][0]["name"] == folder.name and "reinforcement-learning" in header["tags"]
        metrics = {m["name"]: m["value"] for r in header["model-index"][0]["results"] for m in r["metrics"]}
        score = json.loads((folder / "score.json").read_text())
        row = next(r for r in score["policies"] if r["policy"] == folder.name)
        assert metrics["real return (mean +- std)"] == f"{row['real_return']:.2f} +/- {row['real_return_std']:.2f}"
        assert f"| **{folder.name}** (this policy) | {row['real_return']:.1f} +- {row['real_return_std']:.1f} |" in card
    once = put_section("# card\n", "x", "a")
    assert put_section(once, "x", "b") == once.replace("\na\n", "\nb\n")  # replaced, not appended twice
