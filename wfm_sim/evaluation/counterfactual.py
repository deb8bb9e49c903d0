"""Counterfactual truth: does imagination change the way reality does when the action changes?

From real start states (the twin reset at a seed, driven ``lead`` steps by the source's scripted
policy), the real twin is *branched*: reset again at the same seed, the same lead replayed
(the twins are seeded and deterministic, and this is checked, not assumed), then each of
``branches`` action sequences played for ``horizon`` steps. The same branches are imagined from
the same context, ``samples`` times, every branch of a start with the same sampling seed, so
imagined branches differ only by their actions. Per horizon step:

* **action discrimination**: for every pair of branches (A, B) whose real frames differ, how
  often the imagined branch for A is closer (mean absolute pixel difference) to the real branch
  for A than to the real branch for B. 1.0: imagination tells actions apart as reality does;
  0.5: it ignores them.
* **spread**: the mean difference between branches, real and imagined: does imagination move
  as much as reality?
* **inverse dynamics**: a probe trained on real frames (:mod:`wfm_sim.evaluation.probes`)
  recovers the commanded action from (frame t-1, frame t); its R2 on imagined frames beside its
  R2 on real ones.
* **reward ranking**: each branch's return (its rewards summed up to the step), real against
  imagined by the model's reward head: for every pair of branches of a start whose real
  returns differ by more than ``min_return_gap``, does imagination order them as reality does?
  This is what RL and plan scoring read from a model; 0.5 is a coin.
* **events**: what the simulator's state says happened (driving: ``off_road``, no wheel on a
  road tile; Meta-World: ``puck_moved`` from where it was at the start, ``success``), read
  from imagined frames by a probe trained on real ones, compared branch by branch with reality.

Probes learn from their own starts (``probe_seed``...), never the evaluated ones.

Dimension legend: :mod:`wfm_sim.dims`.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from wfm_sim.config import arg
from wfm_sim.envs.real import RealEnv, make_real_vec
from wfm_sim.envs.sources import ArmState, CarState, get_source
from wfm_sim.evaluation.probes import fit_probe, predict, r2
from wfm_sim.evaluation.starts import Starts
from wfm_sim.models.rollout import Rollout
from wfm_sim.models.sampling import SamplingConfig

PUCK_MOVED = 0.02
"""Metres the Meta-World object must move from its start position to count as moved."""
TARGETS = {"discrimination": 0.95, "inverse_dynamics_kept": 0.80, "event_agreement": 0.90}
"""The report's pass marks (at ``report_at``)."""

Imagine = Callable[[np.ndarray, np.ndarray, np.ndarray], "np.ndarray | tuple[np.ndarray, np.ndarray]"]
"""``imagine(start_index (r,), actions (r, s, a), seeds (r,)) -> frames (r, s, v, H, W, 3)``, or
``(frames, rewards (r, s))`` for an imagination that predicts rewards too."""


@dataclass(frozen=True)
class CounterfactualConfig:
    """Flags of ``wfm-sim evaluate --counterfactual``."""

    starts: int = 8
    """Start states evaluated: real seeds ``start_seed ..``."""
    start_seed: int = 2_000_000
    """First evaluated start seed (recorded training data uses small seeds)."""
    branches: int = 4
    """Action sequences played from every start, in both worlds."""
    horizon: int = 8
    hold: int = 4
    """Steps each random branch action is held (piecewise-constant branches move the world
    more than white noise)."""
    lead: int = 10
    """Steps the source's default policy (the scripted driver / expert) plays after the reset
    before the branches split (0: the model's context of neutral actions)."""
    policy_branches: int = 1
    """Branches (the first ones) in which the lead policy goes on driving (its real actions,
    replayed open loop in imagination); the others are random."""
    samples: int = 1
    """Imagined samples per branch (K)."""
    probes: bool = True
    """Train the inverse-dynamics and event probes (--no-probes: discrimination and spread only,
    minutes faster)."""
    probe_starts: int = 32
    """Starts whose real branches train the probes (seeds ``probe_seed ..``)."""
    probe_seed: int = 3_000_000
    probe_steps: int = 800
    min_spread: float = 0.5
    """Pairs of real branches closer than this (mean absolute difference, 0..255) cannot be told
    apart by anyone and are left out of discrimination."""
    report_at: int = 8
    """The horizon step the summary and the pass marks read (clipped to ``horizon``)."""
    min_return_gap: float = 1.0
    """Pairs of branches whose real returns differ by less than this (reward units) are left out
    of the reward ranking: reality does not order them either."""
    branches_from: str | None = arg(default=None, metavar="NPY")
    """A ``.npy`` of branch actions, ``(branches, horizon, a)`` or ``(starts, branches, horizon, a)``,
    instead of random ones."""
    mode: str = arg(default="parallel", choices=("sequential", "parallel"))
    decoder: str = arg(default="token", choices=("token", "diffusion"))
    parallel_steps: int = 8
    diffusion_steps: int | None = None
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    batch: int = 32
    seed: int = 0

    def __post_init__(self):
        for name in ("starts", "branches", "horizon", "hold", "samples", "probe_starts", "probe_steps", "batch",
                     "report_at"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.branches < 2:
            raise ValueError(f"a counterfactual needs >= 2 branches to compare, got {self.branches}")
        if not math.isfinite(self.min_return_gap) or self.min_return_gap < 0:
            raise ValueError(f"min_return_gap must be a finite number >= 0, got {self.min_return_gap}")
        if self.lead < 0 or not math.isfinite(self.min_spread) or self.min_spread < 0:
            raise ValueError(f"lead must be >= 0 and min_spread a finite number >= 0, got {self.lead} and {self.min_spread}")
        if not 0 <= self.policy_branches <= self.branches:
            raise ValueError(f"policy_branches must lie in [0, branches={self.branches}], got {self.policy_branches}")
        for name in ("start_seed", "probe_seed"):
            lo, n = getattr(self, name), self.starts if name == "start_seed" else self.probe_starts
            if not 0 <= lo <= 2**32 - n:
                raise ValueError(f"{name} must leave room for {n} seeds in [0, 2**32), got {lo}")
        lo, hi = sorted([(self.start_seed, self.starts), (self.probe_seed, self.probe_starts)])
        if lo[0] + lo[1] > hi[0]:
            raise ValueError(f"probe seeds {self.probe_seed}.. overlap the evaluated start seeds {self.start_seed}..: "
                             "probes must never see the evaluated starts")


# --------------------------------------------------------------------- starts and branches

def _neutral(space, n: int) -> np.ndarray:
    """``n`` actions that do nothing: zero clipped into a Box (the car stands), action 0 of a Discrete."""
    if hasattr(space, "n"):
        return np.zeros(n, np.int64)
    return np.tile(np.clip(np.zeros(space.shape, np.float32), space.low, space.high), (n, 1))


def led_starts(source: str, seeds: list[int], size: int, context: int, lead: int, follow: int = 0,
               progress: bool = False) -> tuple[Starts, np.ndarray]:
    """Start states: each seed reset, ``context - 1`` neutral actions, then ``lead`` steps of the
    source's default policy (the scripted driver or expert; ``random`` for ``gym:`` sources).
    Returns the starts and ``(starts, follow, ...)``: the actions that policy takes in the
    ``follow`` steps after the start (the branch "the policy goes on")."""
    from tqdm.auto import tqdm

    from wfm_sim.policies.registry import make_policy
    from wfm_sim.rollout.play import play

    src = get_source(source)
    vec = make_real_vec(source, 1, size, context_frames=context, max_episode_steps=src.max_steps)
    twin = RealEnv(src, size, context_frames=context)
    try:
        space = vec.single_action_space
        neutral = _neutral(space, context - 1)
        options = {"warmup": neutral} if len(neutral) else None
        policy = make_policy(src.default_policy, space, source=source, camera=src.cameras[0]) if lead + follow else None
        contexts, warmups, goes_on = [], [], []
        for s in tqdm(seeds, desc="starts", unit="start", disable=not progress):
            acts = neutral[:0]
            if policy is not None:
                ep = play(vec, policy, [s], lead + follow, options=options)[0]
                acts = ep.action
                if len(acts) < lead + follow or ep.terminated[: lead + follow - 1].any():
                    raise ValueError(f"{src.default_policy} ended the episode of seed {s} within {lead + follow} steps "
                                     "(lead + horizon): use a shorter --lead or --horizon")
            warm = np.concatenate((neutral, acts[:lead]))
            twin.reset(seed=s, options={"warmup": warm} if len(warm) else None)
            contexts.append(twin.context())
            warmups.append(warm)
            goes_on.append(acts[lead:])
    finally:
        vec.close()
        twin.close()
    starts = Starts(contexts, list(seeds), np.stack(warmups), [f"seed={s}" + (f"+lead={lead}" if lead else "")
                                                                  for s in seeds])
    return starts, np.stack(goes_on)


def random_branches(source: str, space, starts: int, branches: int, horizon: int, hold: int,
                    seed: int) -> np.ndarray:
    """``(starts, branches, horizon, a)`` piecewise-constant random actions (``(..., )`` int for
    Discrete). On CarRacing the brake is mostly off and the gas on: a random brake stops the car,
    and a car that stands has no counterfactual."""
    rng = np.random.default_rng(seed)
    blocks = -(-horizon // hold)
    if hasattr(space, "n"):
        a = rng.integers(0, space.n, size=(starts, branches, blocks))
        return np.repeat(a, hold, axis=2)[:, :, :horizon].astype(np.int64)
    lo, hi = space.low.astype(np.float64), space.high.astype(np.float64)
    a = rng.uniform(lo, hi, size=(starts, branches, blocks, len(lo)))
    if get_source(source).name.startswith("carracing"):
        a[..., 1] = rng.uniform(0.2, 1.0, size=a.shape[:-1])
        a[..., 2] = np.where(rng.random(a.shape[:-1]) < 0.8, 0.0, rng.uniform(0.0, 0.5, size=a.shape[:-1]))
    return np.repeat(a, hold, axis=2)[:, :, :horizon].astype(np.float32)


def load_branches(path: str, starts: int, branches: int, horizon: int, space) -> np.ndarray:
    """A ``.npy`` of branch actions, checked against the action space, as ``(starts, branches, horizon, a)``."""
    from wfm_sim.envs.spaces import check_actions

    a = np.load(path, allow_pickle=False)
    shape = (branches, horizon) + space.shape
    if a.shape == shape:
        a = np.broadcast_to(a, (starts,) + shape)
    if a.shape != (starts,) + shape:
        raise ValueError(f"{path} holds branch actions of shape {a.shape}; expected {shape} (branches, horizon, "
                         f"action) or {(starts,) + shape} (starts, branches, horizon, action)")
    flat = a.reshape((-1,) + space.shape)
    return check_actions(space, flat, (len(flat),), who=f"branch actions of {path}").reshape(a.shape)


# --------------------------------------------------------------------- the two worlds

def _events(src, first, states: list, success: list[bool]) -> dict[str, np.ndarray]:
    """Per step, the events the simulator's state says happened (see the module docstring)."""
    out = {}
    if isinstance(first, CarState):
        out["off_road"] = np.array([not s.on_road for s in states])
    if isinstance(first, ArmState) and src.name.startswith("metaworld"):
        out["puck_moved"] = np.array([np.linalg.norm(s.state[4:7] - first.state[4:7]) > PUCK_MOVED for s in states])
    if src.has_success:
        out["success"] = np.array(success, dtype=bool)
    return out


def play_branches(source: str, size: int, starts: Starts, index: np.ndarray, actions: np.ndarray,
                  progress: bool = False) -> tuple[np.ndarray, dict[str, np.ndarray], np.ndarray]:
    """Play ``actions (r, s, a)`` in the real twin, row j from start ``index[j]``. Returns frames
    ``(r, s, v, H, W, 3)``, events ``{name: (r, s) bool}`` and rewards ``(r, s)`` (0 after the
    episode ends). Refuses a twin that does not return to a start's context from its seed and
    warm-up."""
    from tqdm.auto import tqdm

    src = get_source(source)
    env = RealEnv(src, size, context_frames=len(starts.contexts[0]))
    cams = src.cameras
    n, h = actions.shape[:2]
    frames = np.zeros((n, h, len(cams), size, size, 3), np.uint8)
    rewards = np.zeros((n, h), np.float32)
    events: dict[str, np.ndarray] = {}
    try:
        for j in tqdm(range(n), desc="real branches", unit="branch", disable=not progress):
            i = int(index[j])
            seed, warm = starts.seeds[i], starts.warmups[i]
            if seed is None:
                raise ValueError(f"start {starts.labels[i]} has no reset seed: the real twin cannot branch from it")
            _, info = env.reset(seed=seed, options={"warmup": warm} if len(warm) else None)
            ctx, want = env.context(), starts.contexts[i]
            diff = max(int(np.abs(ctx.frames[c].astype(np.int16) - want.frames[c]).max()) for c in want.frames)
            if diff:
                raise ValueError(f"the real twin of {source!r} does not return to start {starts.labels[i]} from its seed "
                                 f"and warm-up (frames differ by up to {diff}/255): a counterfactual needs a simulator "
                                 "whose reset(seed=...) decides its state")
            first, states, success = info["privileged"], [], []
            for t in range(h):
                obs, reward, terminated, truncated, info = env.step(actions[j, t])
                rewards[j, t] = reward
                frames[j, t] = np.stack([obs[c] for c in cams]) if isinstance(obs, dict) else obs[None]
                states.append(info["privileged"])
                success.append(bool(info.get("success", False)))
                if terminated or truncated:  # the world stops here: its last frame stays
                    frames[j, t + 1 :] = frames[j, t]
                    states += [states[-1]] * (h - t - 1)
                    success += [success[-1]] * (h - t - 1)
                    break
            for name, v in _events(src, first, states, success).items():
                events.setdefault(name, np.zeros((n, h), bool))[j] = v
    finally:
        env.close()
    return frames, events, rewards


def twin_imagine(source: str, size: int, starts: Starts) -> Imagine:
    """The real twin standing in for imagination (a world model that is reality): the report's
    upper bound, and its test."""

    def imagine(index, actions, seeds):
        frames, _, rewards = play_branches(source, size, starts, index, actions)
        return frames, rewards

    return imagine


def model_imagine(model, starts: Starts, cfg: CounterfactualConfig, progress: bool = False) -> Imagine:
    """Imagine branches with ``model`` through :class:`~wfm_sim.models.rollout.Rollout`, from each
    start's context, ``cfg.batch`` rows at a time."""
    from tqdm.auto import tqdm

    if model.cfg.frames_per_step != 1:
        raise ValueError(f"counterfactual branches take one action per frame; this model predicts "
                         f"{model.cfg.frames_per_step} frames per step (grouped time)")
    C, cams, dev = model.cfg.context_frames, model.cfg.cameras, model.device

    @torch.inference_mode()
    def imagine(index, actions, seeds):
        n, h = actions.shape[:2]
        s = model.cfg.tokenizer.image_size
        out = np.zeros((n, h, len(cams), s, s, 3), np.uint8)
        rewards = np.zeros((n, h), np.float32)
        for lo in tqdm(range(0, n, cfg.batch), desc="imagined branches", unit="batch", disable=not progress):
            rows = np.arange(lo, min(n, lo + cfg.batch))
            ctx = [starts.contexts[int(index[j])].last(C) for j in rows]
            frames = torch.as_tensor(np.stack([np.stack([c.frames[cam] for cam in cams], 1) for c in ctx]), device=dev)
            acts = torch.as_tensor(np.stack([c.actions for c in ctx]), device=dev) if C > 1 else None
            ro = Rollout(model, len(rows), cfg.mode, cfg.sampling, cfg.parallel_steps, cfg.decoder, cfg.diffusion_steps)
            ro.reset(None, frames, acts, [int(seeds[j]) for j in rows])
            for t in range(h):
                a = model.check_action(torch.as_tensor(actions[rows, t], device=dev), (len(rows),))
                step = ro.step(a)
                out[rows, t] = step.frames[:, -1].cpu().numpy()
                rewards[rows, t] = step.reward.float().cpu().numpy()
        return out, rewards

    return imagine


# --------------------------------------------------------------------- metrics

def branch_metrics(real: np.ndarray, imagined: np.ndarray, min_spread: float) -> dict[str, list]:
    """Discrimination, spread and error per horizon step from real frames ``(o, x, s, ...)`` and
    imagined ``(o, x, u, s, ...)`` (see the module docstring)."""
    S, B, K, h = imagined.shape[:4]
    score, pairs = np.zeros(h), np.zeros(h)
    spread_real, spread_imag, error = np.zeros(h), np.zeros(h), np.zeros(h)
    off = ~np.eye(B, dtype=bool)
    for s in range(S):
        r = real[s].reshape(B, h, -1).astype(np.float32)
        real_d = np.stack([[np.abs(r[a] - r[b]).mean(-1) for b in range(B)] for a in range(B)])  # (x, x, s)
        spread_real += real_d[off].sum(0) / off.sum() / S
        for k in range(K):
            im = imagined[s, :, k].reshape(B, h, -1).astype(np.float32)
            cross = np.stack([[np.abs(im[a] - r[b]).mean(-1) for b in range(B)] for a in range(B)])  # imagined a vs real b
            im_d = np.stack([[np.abs(im[a] - im[b]).mean(-1) for b in range(B)] for a in range(B)])
            spread_imag += im_d[off].sum(0) / off.sum() / (S * K)
            error += np.diagonal(cross).T.mean(0) / (S * K)
            own = np.diagonal(cross).T[:, None, :]  # (x, 1, s): imagined a vs real a
            win = np.where(own < cross, 1.0, np.where(own == cross, 0.5, 0.0))
            usable = off[..., None] & (real_d > min_spread)
            score += (win * usable).sum((0, 1))
            pairs += usable.sum((0, 1))
    with np.errstate(invalid="ignore", divide="ignore"):
        disc = np.where(pairs > 0, score / np.maximum(pairs, 1), np.nan)
        ratio = np.where(spread_real > 0, spread_imag / spread_real, np.nan)
    return {"discrimination": disc.tolist(), "pairs": pairs.astype(int).tolist(), "spread_real": spread_real.tolist(),
            "spread_imagined": spread_imag.tolist(), "spread_ratio": ratio.tolist(), "error": error.tolist()}


def reward_metrics(real: np.ndarray, imagined: np.ndarray, min_gap: float) -> dict:
    """Reward ranking per horizon step from real rewards ``(o, x, s)`` and imagined ``(o, x, u, s)``
    (see the module docstring), and each branch's return over the whole horizon."""
    S, B, K, h = imagined.shape
    R, I = real.cumsum(-1), imagined.mean(2).cumsum(-1)  # (o, x, s) returns up to each step
    a, b = np.triu_indices(B, 1)
    dr, di = R[:, a] - R[:, b], I[:, a] - I[:, b]  # (o, pairs, s)
    usable = np.abs(dr) > min_gap
    tie = np.abs(di) < 1e-4  # float noise between batch rows is no ordering
    agree = np.where(tie, 0.5, np.where(np.sign(di) == np.sign(dr), 1.0, 0.0))
    pairs = usable.sum((0, 1))
    with np.errstate(invalid="ignore", divide="ignore"):
        ranking = np.where(pairs > 0, (agree * usable).sum((0, 1)) / np.maximum(pairs, 1), np.nan)
        full_r, full_i = R[..., -1].ravel(), I[..., -1].ravel()
        pearson = float(np.corrcoef(full_r, full_i)[0, 1]) if full_r.std() > 0 and full_i.std() > 0 else float("nan")
    return {"return_ranking": ranking.tolist(), "return_pairs": pairs.astype(int).tolist(),
            "return_error": np.abs(I - R).mean((0, 1)).tolist(), "return_pearson": pearson,
            "branch_return_real": R[..., -1].mean(0).tolist(), "branch_return_imagined": I[..., -1].mean(0).tolist()}


def _windows(context: np.ndarray, frames: np.ndarray, kind: str) -> np.ndarray:
    """Probe inputs for branches ``frames (r, s, ...)`` after ``context (r, 2, ...)`` (the context's
    last two frames): for 'dynamics', frames (t-2, t-1, t), enough to see a change of velocity;
    for 'event', (start, t). Returns ``(r, s, t, ...)``, ``t`` frames per window."""
    h = frames.shape[1]
    if kind == "event":
        return np.stack((np.broadcast_to(context[:, 1:2], frames.shape), frames), axis=2)
    seq = np.concatenate((context, frames), axis=1)
    return np.stack([seq[:, t : t + 3] for t in range(h)], axis=1)


def _flat(x: np.ndarray) -> np.ndarray:
    return x.reshape((-1,) + x.shape[2:])


def probe_metrics(probe_data: dict, real: np.ndarray, imagined: np.ndarray, context: np.ndarray,
                  actions: np.ndarray, events: dict, cfg: CounterfactualConfig, progress: bool = False) -> dict:
    """Inverse-dynamics R2 and event agreement per horizon step, real beside imagined.
    ``probe_data``: the probe starts' real ``context (r, 2, ...)``, branch ``frames (r, s, ...)``,
    ``actions (r, s, a)`` and ``events {name: (r, s)}``; ``context``: the evaluated starts' ``(o, 2, ...)``."""
    S, B, K, h = imagined.shape[:4]
    ctx_r = np.repeat(context, B, axis=0)  # (o*x, 2, ...)
    ctx_i = np.repeat(context, B * K, axis=0)
    real_f = real.reshape((S * B, h) + real.shape[3:])
    imag_f = imagined.reshape((S * B * K, h) + imagined.shape[4:])
    pc, pf = probe_data["context"], probe_data["frames"]
    out: dict = {}
    acts = actions.reshape(S * B, h, -1).astype(np.float32)
    if actions.dtype.kind == "f":
        probe = fit_probe(_flat(_windows(pc, pf, "dynamics")), _flat(probe_data["actions"].astype(np.float32)),
                          "regress", cfg.probe_steps, seed=cfg.seed,
                          desc="inverse-dynamics probe" if progress else None)
        pr = predict(probe, _flat(_windows(ctx_r, real_f, "dynamics"))).reshape(S * B, h, -1)
        pi = predict(probe, _flat(_windows(ctx_i, imag_f, "dynamics"))).reshape(S * B * K, h, -1)
        acts_i = np.repeat(acts, K, axis=0)
        out["inverse_dynamics"] = {
            "real_r2": [r2(pr[:, t], acts[:, t]) for t in range(h)],
            "imagined_r2": [r2(pi[:, t], acts_i[:, t]) for t in range(h)],
            "real_r2_upto": [r2(_flat(pr[:, : t + 1]), _flat(acts[:, : t + 1])) for t in range(h)],
            "imagined_r2_upto": [r2(_flat(pi[:, : t + 1]), _flat(acts_i[:, : t + 1])) for t in range(h)]}
    out["events"] = {}
    for name, truth in events.items():
        train_truth = probe_data["events"][name]
        entry = {"real_rate": truth.reshape(S * B, h).cumsum(1).astype(bool).mean(0).tolist()}
        if train_truth.all() or not train_truth.any():
            entry["skipped"] = (f"the probe starts' real branches are all {'positive' if train_truth.any() else 'negative'}"
                                f" for {name}: no probe can be trained (more --probe-starts or a longer --horizon)")
            out["events"][name] = entry
            continue
        probe = fit_probe(_flat(_windows(pc, pf, "event")), _flat(train_truth), "classify", cfg.probe_steps,
                          seed=cfg.seed, desc=f"{name} probe" if progress else None)
        by_real = truth.reshape(S * B, h).cumsum(1) > 0
        pr = predict(probe, _flat(_windows(ctx_r, real_f, "event"))).reshape(S * B, h).cumsum(1) > 0
        pi = predict(probe, _flat(_windows(ctx_i, imag_f, "event"))).reshape(S * B * K, h).cumsum(1) > 0
        entry.update({"imagined_rate": pi.mean(0).tolist(), "probe_on_real_rate": pr.mean(0).tolist(),
                      "agreement": (pi == np.repeat(by_real, K, axis=0)).mean(0).tolist(),
                      "probe_on_real_agreement": (pr == by_real).mean(0).tolist()})
        out["events"][name] = entry
    return out


def summarize(report: dict, at: int) -> dict:
    """The figures at horizon step ``at`` and whether each meets :data:`TARGETS`."""
    t = min(at, report["horizon"]) - 1
    out = {"at": t + 1, "discrimination": report["discrimination"][t], "spread_ratio": report["spread_ratio"][t]}
    if "return_ranking" in report:
        out["return_ranking"] = report["return_ranking"][t]
    idm = report.get("inverse_dynamics")
    if idm:
        real, imag = idm["real_r2_upto"][t], idm["imagined_r2_upto"][t]
        out.update({"inverse_dynamics_real_r2": real, "inverse_dynamics_imagined_r2": imag,
                    "inverse_dynamics_kept": imag / real if real > 0 else float("nan")})
    for name, e in report["events"].items():
        if "agreement" in e:
            out[f"{name}_agreement"] = e["agreement"][t]
    passed = {"discrimination": out["discrimination"] >= TARGETS["discrimination"]}
    if "inverse_dynamics_kept" in out:
        passed["inverse_dynamics_kept"] = out["inverse_dynamics_kept"] >= TARGETS["inverse_dynamics_kept"]
    for name in report["events"]:
        if f"{name}_agreement" in out:
            passed[f"{name}_agreement"] = out[f"{name}_agreement"] >= TARGETS["event_agreement"]
    out["passed"] = {k: bool(v) for k, v in passed.items()}
    return out


# --------------------------------------------------------------------- the report

def counterfactual(model, source: str, cfg: CounterfactualConfig = CounterfactualConfig(), progress: bool = True,
                   imagine: Imagine | None = None, size: int | None = None) -> dict:
    """Run the counterfactual report of ``model`` against its real twin ``source``.

    ``imagine`` replaces the model's imagination (e.g. :func:`twin_imagine`, reality as its own
    model); then ``model`` may be None and ``size`` gives the frame size. Returns the JSON-ready
    report; its ``"arrays"`` entry (real and imagined frames, actions) is for the sheet and video.
    """
    from wfm_sim.envs.spaces import action_space
    from wfm_sim.evaluation.scoring import check_rig

    t0 = time.perf_counter()
    src = get_source(source)
    if model is not None:
        size, context = model.cfg.tokenizer.image_size, model.cfg.context_frames
        check_rig(model, source, context - 1 + cfg.lead + cfg.horizon)
    else:
        if imagine is None or size is None:
            raise ValueError("without a model, pass imagine= and size=")
        context = 2
    if context - 1 + cfg.lead + cfg.horizon > src.max_steps:
        raise ValueError(f"context {context - 1} + lead {cfg.lead} + horizon {cfg.horizon} steps exceed the "
                         f"{src.max_steps} steps of a {source} episode")
    space = action_space(src.action_space)
    S, B, K, h, P = cfg.starts, cfg.branches, cfg.samples, cfg.horizon, cfg.policy_branches
    follow = h if P else 0
    starts, goes_on = led_starts(source, list(range(cfg.start_seed, cfg.start_seed + S)), size, context, cfg.lead,
                                 follow, progress)
    if cfg.probes:
        probe_starts, probe_goes_on = led_starts(source, list(range(cfg.probe_seed, cfg.probe_seed + cfg.probe_starts)),
                                                 size, context, cfg.lead, follow, progress)
    if cfg.branches_from:
        acts = load_branches(cfg.branches_from, S, B, h, space)
    else:
        acts = random_branches(source, space, S, B, h, cfg.hold, cfg.seed)
        acts[:, :P] = goes_on[:, None]
    flat = (S * B, h) + space.shape
    real, events, real_rewards = play_branches(source, size, starts, np.repeat(np.arange(S), B), acts.reshape(flat),
                                               progress)
    if cfg.probes:
        probe_acts = random_branches(source, space, cfg.probe_starts, B, h, cfg.hold, cfg.seed + 1)
        probe_acts[:, :P] = probe_goes_on[:, None]
        p_frames, p_events, _ = play_branches(source, size, probe_starts, np.repeat(np.arange(cfg.probe_starts), B),
                                           probe_acts.reshape((-1, h) + space.shape), progress)
    t_real = time.perf_counter() - t0
    imagine = imagine or model_imagine(model, starts, cfg, progress)
    # Row (s, b, k): every branch of a start shares the sampling seed of its (s, k).
    rows_seeds = np.array([cfg.seed * 1_000_003 + s * K + k + 1 for s in range(S) for _ in range(B) for k in range(K)])
    t1 = time.perf_counter()
    imagined = imagine(np.repeat(np.arange(S), B * K), np.repeat(acts.reshape(flat), K, axis=0), rows_seeds)
    t_imag = time.perf_counter() - t1
    imagined, imagined_rewards = imagined if isinstance(imagined, tuple) else (imagined, None)
    frame_shape = real.shape[2:]
    real = real.reshape((S, B, h) + frame_shape)
    imagined = imagined.reshape((S, B, K, h) + frame_shape)
    cams = src.cameras

    def last_two(st: Starts) -> np.ndarray:  # (starts, 2, v, H, W, 3): the context's last two frames
        return np.stack([np.stack([c.frames[cam][-2:] if len(c) > 1 else np.repeat(c.frames[cam], 2, 0)
                                   for cam in cams], 1) for c in st.contexts])

    report = {"model": None if model is None else model.cfg.name, "source": source, "cameras": list(cams),
              "config": asdict(cfg), "horizon": h, "starts": starts.summary(),
              **branch_metrics(real, imagined, cfg.min_spread)}
    if imagined_rewards is not None:
        report.update(reward_metrics(real_rewards.reshape(S, B, h), imagined_rewards.reshape(S, B, K, h),
                                     cfg.min_return_gap))
    if cfg.probes:
        vec = (-1, h) + (space.shape or (1,))
        probe_data = {"context": np.repeat(last_two(probe_starts), B, axis=0), "frames": p_frames,
                      "actions": probe_acts.reshape(vec), "events": p_events}
        report.update(probe_metrics(probe_data, real, imagined, last_two(starts), acts, events, cfg, progress))
    else:
        report["events"] = {name: {"real_rate": v.reshape(S * B, h).cumsum(1).astype(bool).mean(0).tolist(),
                                   "skipped": "--no-probes"} for name, v in events.items()}
    report["summary"] = summarize(report, cfg.report_at)
    report["seconds"] = {"real": t_real, "imagined": t_imag, "total": time.perf_counter() - t0}
    report["arrays"] = {"real": real, "imagined": imagined, "actions": acts}
    return report


def counterfactual_summary(report: dict) -> str:
    """A plain-text summary: the figures at ``report_at`` with their pass marks, then per horizon."""
    s = report["summary"]
    lines = [f"counterfactual report of {report['model'] or 'the twin'} on {report['source']} "
             f"({report['config']['starts']} starts x {report['config']['branches']} branches x "
             f"{report['config']['samples']} samples), at horizon {s['at']}:"]
    for key, value in s.items():
        if key in ("at", "passed"):
            continue
        mark = {True: "  pass", False: "  FAIL"}.get(s["passed"].get(key), "")
        lines.append(f"  {key:32s} {value:7.3f}{mark}")
    lines.append("per horizon step: discrimination " + " ".join(f"{v:.2f}" for v in report["discrimination"]))
    lines.append("                  spread real    " + " ".join(f"{v:.1f}" for v in report["spread_real"]))
    lines.append("                  spread imagined" + " ".join(f" {v:.1f}" for v in report["spread_imagined"]))
    if "return_ranking" in report:
        lines.append("                  return ranking " + " ".join(f"{v:.2f}" for v in report["return_ranking"]))
        lines.append("branch returns over the horizon, real / imagined: " + ", ".join(
            f"{r:.1f} / {i:.1f}" for r, i in zip(report["branch_return_real"], report["branch_return_imagined"])))
    return "\n".join(lines)


def write_counterfactual(report: dict, out: str | Path, fps: float = 4.0) -> dict[str, Path]:
    """report.json (written last), counterfactual.png (metrics over horizon), branches.png (contact
    sheet: each branch real over imagined) and branches.mp4 under ``out``."""
    import json

    from wfm_sim.evaluation.counterfactual_plots import (
        branch_sheet,
        branch_video,
        plot_counterfactual,
    )

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    arrays = report.get("arrays")
    paths = {"plot": plot_counterfactual(report, out / "counterfactual.png")}
    if arrays is not None:
        paths["sheet"] = branch_sheet(report, out / "branches.png")
        paths["video"] = branch_video(report, out / "branches.mp4", fps)
    body = {k: v for k, v in report.items() if k != "arrays"}
    tmp = out / "report.json.tmp"
    tmp.write_text(json.dumps(body, indent=2, default=float) + "\n")
    tmp.replace(out / "report.json")
    paths["json"] = out / "report.json"
    return paths
