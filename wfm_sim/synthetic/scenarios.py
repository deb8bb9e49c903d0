"""Scenario control from real contexts, checked by a detector trained on real frames.

A scenario is a pixel policy that makes an event happen (``offroad``: a swerve off the road and
the recovery, :class:`~wfm_sim.policies.driving.OffRoadExcursion`). :func:`scenario_control`
asks whether imagination honours it, the way the issue's users ask: from contexts cut from their
own real episodes,

1. an **off-road detector** (a :class:`~wfm_sim.evaluation.probes.FrameProbe` on one frame of
   every camera) is trained on real frames labelled by the simulator's state (the ``caption``
   a ``<source>?captions`` recording stores: no wheel on a road tile is "off the road"); its
   accuracy on held-out real episodes is the ceiling of what it can say;
2. the scenario and a control (``road``: the follower alone) are imagined from the same real
   contexts with the same seeds (``wfm-sim generate``, full provenance);
3. per episode, the detector reads every imagined frame: the scenario **changed the property**
   when the detector finds the car off the road in the scenario episode more often than in its
   control; reported over all episodes and over those whose control stays on the road (a start
   already off the road has nothing to change);
4. the same scenario is played in the real twin from fresh seeds, so the real rate of the event
   under the scenario (by the simulator's own state) stands beside the imagined one.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from wfm_sim.checkpoint import atomic_write_json
from wfm_sim.datasets.store import EpisodeReader, StoreError
from wfm_sim.envs.captions import CAR_CAPTIONS
from wfm_sim.evaluation.probes import fit_probe, predict
from wfm_sim.models.world_model import WorldModel, resolve_pretrained
from wfm_sim.rollout.record import record
from wfm_sim.synthetic.downstream import camera_frames
from wfm_sim.synthetic.generate import GenerateConfig, generate

OFF_ROAD = CAR_CAPTIONS.index("off the road on grass")


@dataclass(frozen=True)
class ScenarioConfig:
    model: str = "driving"
    source: str = "carracing-4cam"
    starts: str | None = None
    """Real episodes to start from (default: recorded with the scripted driver from ``first_seed``, so the
    contexts are on the road and an off-road scenario has something to change)."""
    scenario: str = "offroad"
    control: str = "road"
    episodes: int = 40
    horizon: int = 24
    detector_episodes: int = 30
    """Real episodes (``mixed`` driver, captions) that train and test the detector (the last fifth test it)."""
    detector_steps: int = 600
    first_seed: int = 6_000_000
    envs: int = 8


def _windows(store: str | Path, episodes, cameras) -> np.ndarray:
    """``(N, 1, V, H, W, 3)``: every frame of ``episodes`` as a probe window of one frame."""
    return camera_frames(store, episodes, cameras)[:, None]


def _off_road(r: EpisodeReader, episodes) -> np.ndarray:
    """Per frame of ``episodes``: the simulator's state says off the road (from the stored captions)."""
    return np.concatenate([r.read("caption", *r.episode_bounds(e)) == OFF_ROAD for e in episodes])


def train_detector(store: str | Path, cameras, steps: int, seed: int = 0):
    """The off-road detector, trained on the first four fifths of ``store``'s episodes (a recording
    with captions) and tested on the rest; returns ``(probe, test figures)``."""
    r = EpisodeReader(store)
    if "caption" not in r.extras:
        raise StoreError(f"{store} has no caption per step: record it from '<source>?captions' so the simulator's "
                         "state labels every frame")
    n = r.num_episodes
    if n < 2:
        raise StoreError(f"{store} holds {n} episode; the detector needs >= 2 (train and held-out test)")
    split = max(1, int(round(n * 0.8))) if n > 2 else 1
    train_eps, test_eps = list(range(split)), list(range(split, n))
    x = _windows(store, train_eps, cameras)
    y = _off_road(r, train_eps)
    probe = fit_probe(x, y, "classify", steps=steps, seed=seed)
    xt = _windows(store, test_eps, cameras)
    yt = _off_road(r, test_eps)
    pt = predict(probe, xt)
    pos, neg = yt.sum(), (~yt).sum()
    return probe, {"train_frames": int(len(y)), "train_off_road_share": float(y.mean()), "test_frames": int(len(yt)),
                   "test_accuracy": float((pt == yt).mean()),
                   "test_recall": float(pt[yt].mean()) if pos else None,
                   "test_false_alarm": float(pt[~yt].mean()) if neg else None}


def _per_episode(probe, store: str | Path, cameras) -> list[float]:
    """Share of each episode's imagined frames (frame 0, the last real one, left out) the detector calls off road."""
    r = EpisodeReader(store)
    out = []
    for e in range(r.num_episodes):
        x = _windows(store, [e], cameras)
        out.append(float(predict(probe, x[1:]).mean()) if len(x) > 1 else 0.0)
    return out


def scenario_control(cfg: ScenarioConfig, out: str | Path, progress: bool = True) -> dict:
    """Run the check (every stage resumable: stores are completed, not redone) and write ``scenario.json``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    mc = WorldModel.read_config(resolve_pretrained(cfg.model))
    cams, size = tuple(mc.cameras), mc.tokenizer.image_size
    captioned = f"{cfg.source}?captions"
    starts = cfg.starts
    if starts is None:
        starts = str(out / "starts.zarr")
        record(cfg.source, starts, max(2, cfg.envs), policy="driver", size=size, seed=cfg.first_seed, progress=progress)
    det_store = out / "detector.zarr"
    record(captioned, det_store, cfg.detector_episodes, policy="mixed", size=size, seed=cfg.first_seed + 10_000,
           progress=progress)
    probe, det = train_detector(det_store, cams, cfg.detector_steps)

    rates = {}
    for name in (cfg.scenario, cfg.control):
        store = out / f"{name}.zarr"
        generate(GenerateConfig(model=cfg.model, episodes=cfg.episodes, horizon=cfg.horizon, starts=starts,
                                policy=name, seed=cfg.first_seed + 20_000, envs=cfg.envs), store, progress=progress)
        rates[name] = _per_episode(probe, store, cams)
    s, c = np.array(rates[cfg.scenario]), np.array(rates[cfg.control])
    changed = (s > c) & (s > 0)
    on_road = c == 0  # the control stays on the road: the starts where the property can change

    real_store = out / f"real_{cfg.scenario}.zarr"
    record(captioned, real_store, min(cfg.episodes, 20), policy=cfg.scenario, size=size,
           max_steps=cfg.horizon + 1, seed=cfg.first_seed + 30_000, progress=progress)
    rr = EpisodeReader(real_store)
    real_truth = [bool(_off_road(rr, [e])[1:].any()) for e in range(rr.num_episodes)]
    real_detected = [v > 0 for v in _per_episode(probe, real_store, cams)]

    report = {"config": asdict(cfg), "detector": det,
              "imagined": {"scenario_off_road_share": float(s.mean()), "control_off_road_share": float(c.mean()),
                           "episodes_changed": float(changed.mean()),
                           "control_on_road_episodes": int(on_road.sum()),
                           "changed_where_control_on_road": float((s[on_road] > 0).mean()) if on_road.any() else None,
                           "scenario_episodes_with_off_road": float((s > 0).mean()),
                           "control_episodes_with_off_road": float((c > 0).mean())},
              "real": {"episodes": len(real_truth), "with_off_road_by_state": float(np.mean(real_truth)),
                       "with_off_road_by_detector": float(np.mean(real_detected))},
              "per_episode": {cfg.scenario: rates[cfg.scenario], cfg.control: rates[cfg.control]}}
    atomic_write_json(out / "scenario.json", report)
    return report


__all__ = ["OFF_ROAD", "ScenarioConfig", "scenario_control", "train_detector"]
