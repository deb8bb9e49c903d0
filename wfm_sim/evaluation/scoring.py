"""Score a set of policies in imagination and in the real simulator, from the same start states.

Every policy starts from the same start states in both worlds (:mod:`wfm_sim.evaluation.starts`):
by default fresh real seeds, each reset in the real twin and played a few neutral *warm-up*
actions, so its context (last frames and the actions between them) starts imagination exactly
where reality is; or the first frames of recorded episodes, the twin reset at each episode's
seed and replaying its recorded first actions. Then every policy plays ``horizon`` steps from
there: ``samples`` times in the world model (it is stochastic), once in the real simulator. Per
policy: return and success, imagined and real, with confidence intervals over starts; across
policies: Pearson, Spearman, MMRV and the mean imagined-minus-real gap
(:mod:`wfm_sim.evaluation.agreement`).

With ``replay`` (the default), every real episode is also read by the model's heads with its
real frames forced in (:mod:`wfm_sim.evaluation.replay`): the *replayed* score is what
imagination would give with perfect frames, so the imagined-real gap splits into a dynamics
part (imagined - replayed) and a head part (replayed - real).

Dimension legend: :mod:`wfm_sim.dims`.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

import numpy as np

from wfm_sim.envs.contexts import Context
from wfm_sim.envs.imagined import ImaginedVectorEnv
from wfm_sim.envs.real import make_real_vec
from wfm_sim.envs.sources import get_source
from wfm_sim.evaluation.agreement import agreement, mean_ci, pearson
from wfm_sim.evaluation.replay import replay_heads
from wfm_sim.evaluation.starts import Starts, dataset_starts, seed_starts
from wfm_sim.policies.base import PlanPolicy
from wfm_sim.rollout.play import play
from wfm_sim.rollout.pool import RolloutPool, RolloutRequest
from wfm_sim.rollout.worker import PolicySpec

# Shipped model -> the recording source of its real twin.
SHIPPED_SOURCES = {"driving": "carracing-4cam", "manipulation": "metaworld-push"}


@dataclass(frozen=True)
class ScoreConfig:
    """Flags of ``wfm-sim score``."""

    starts: int = 20
    """Start states: real simulator seeds ``start_seed .. start_seed + starts - 1`` (or
    episodes ``start_episode ..`` of ``starts_from``)."""
    start_seed: int = 1_000_000
    """First start seed. Recorded training data uses small seeds (0, 1, ...), so the default
    starts are states no model was trained on."""
    starts_from: str | None = None
    """A recorded store: start from its episodes' first frames instead of fresh seeds."""
    start_episode: int = 0
    """With ``starts_from``: the first episode used."""
    samples: int = 2
    """Imagined rollouts per start and policy (K)."""
    horizon: int = 30
    """Steps each policy plays after the warm-up."""
    warmup: int | None = None
    """Neutral actions before the policy takes over (default: the model's context_frames - 1)."""
    batch: int = 32
    """Imagined envs stepped together."""
    real_batch: int = 4
    """Real twins stepped together."""
    real: bool = True
    """Also play every policy in the real simulator."""
    replay: bool = True
    """With ``real``: also read the model's heads along each real episode (teacher forcing), to
    split the imagined-real gap into dynamics error and head error (models that predict one
    frame per step; a model grouping frames skips it)."""
    decoder: str = "token"
    mode: str = "parallel"
    diffusion_steps: int | None = None
    seed: int = 0
    """Seeds the imagined samples (row seeds) and the policies' randomness."""
    videos: int = 2
    """Starts per policy kept for the side-by-side video (real | imagined)."""
    workers: int = 1
    """> 1: imagine on a Ray pool of this many model replicas (each stepping ``batch`` envs)."""

    def __post_init__(self):
        for name in ("starts", "samples", "horizon", "batch", "real_batch", "workers"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not (0 <= self.start_seed and self.start_seed + self.starts <= 2**32):
            raise ValueError(f"start seeds must lie in [0, 2**32): got {self.start_seed}..{self.start_seed + self.starts - 1}")
        if self.warmup is not None and self.warmup < 0:
            raise ValueError(f"warmup must be >= 0, got {self.warmup}")
        if self.start_episode < 0:
            raise ValueError(f"start_episode must be >= 0, got {self.start_episode}")
        if self.seed < 0:
            raise ValueError(f"seed must be >= 0, got {self.seed}")

    @property
    def start_seeds(self) -> list[int]:
        return list(range(self.start_seed, self.start_seed + self.starts))


@dataclass
class PolicyResult:
    """One policy's episodes' outcomes. Arrays are per start (real) or per start and sample (imagined)."""

    name: str
    imagined_return: np.ndarray | None
    """``(i, u)``; None for a scripted reference policy, which runs only in the real simulator."""
    imagined_success: np.ndarray | None
    real_return: np.ndarray | None = None
    """``(i,)``."""
    real_success: np.ndarray | None = None
    replayed_return: np.ndarray | None = None
    """``(i,)``: the heads read along the real episodes (see :mod:`wfm_sim.evaluation.replay`)."""
    replayed_success: np.ndarray | None = None
    imagined_seconds: float = 0.0
    real_seconds: float = 0.0
    clips: dict = field(default_factory=dict)
    """start index -> (real episode, imagined episode), for videos."""

    def by_start(self):
        """``(world, returns (i,), success rates (i,) or None)`` for each world played; imagined
        outcomes are averaged over the K samples of each start."""
        for world, ret, succ in (("imagined", self.imagined_return, self.imagined_success),
                                 ("real", self.real_return, self.real_success),
                                 ("replayed", self.replayed_return, self.replayed_success)):
            if ret is not None:
                yield (world, ret.mean(axis=1) if ret.ndim == 2 else ret,
                       None if succ is None else succ.mean(axis=1) if succ.ndim == 2 else succ.astype(float))

    def summary(self) -> dict:
        out = {"policy": self.name}
        for world, ret, rate in self.by_start():
            out[f"{world}_return"], out[f"{world}_return_ci"] = mean_ci(ret)
            out[f"{world}_return_std"] = float(np.std(ret, ddof=1)) if len(ret) > 1 else 0.0
            if rate is not None:
                out[f"{world}_success"], out[f"{world}_success_ci"] = mean_ci(rate)
        return out

    def per_start(self) -> dict:
        """Outcomes start by start, and how well imagination tells this policy's easy starts from
        its hard ones: the Pearson r of imagined and real return across starts (NaN when either is
        constant)."""
        out = {}
        for world, ret, rate in self.by_start():
            out[f"{world}_return"] = [float(v) for v in ret]
            if rate is not None:
                out[f"{world}_success"] = [float(v) for v in rate]
        if "imagined_return" in out and "real_return" in out and len(out["real_return"]) >= 2:
            out["return_pearson_over_starts"] = pearson(out["imagined_return"], out["real_return"])
        return out


def make_starts(model, source: str, cfg: ScoreConfig) -> Starts:
    """``cfg``'s start states for ``model``: fresh seeds, or episodes of ``cfg.starts_from``."""
    warmup = model.cfg.context_frames - 1 if cfg.warmup is None else cfg.warmup
    size = model.cfg.tokenizer.image_size
    if cfg.starts_from is None:
        return seed_starts(source, cfg.start_seeds, size, warmup)
    return dataset_starts(cfg.starts_from, source, tuple(model.cfg.cameras), size, warmup, cfg.starts,
                          first=cfg.start_episode, check_real=cfg.real)


def twin_source(model, name: str, source: str | None = None) -> str:
    """The recording source of a model's real twin: ``source``, or the shipped model's own."""
    source = source or SHIPPED_SOURCES.get(str(name)) or SHIPPED_SOURCES.get(model.cfg.name)
    if source is None:
        raise ValueError(f"--source is needed: which simulator did {name} learn? (wfm-sim collect --help lists them)")
    return source


def check_rig(model, source: str, steps: int) -> None:
    """The model and the source must share a camera rig and action size, and an episode must hold ``steps``."""
    src = get_source(source)
    if tuple(src.cameras) != tuple(model.cfg.cameras):
        raise ValueError(f"the model sees cameras {list(model.cfg.cameras)} but source {source!r} renders "
                         f"{list(src.cameras)}: score a model against the real twin of the simulator it learned")
    if src.action_space["type"] == "box" and src.action_space["shape"][0] != model.cfg.action.dim:
        raise ValueError(f"source {source!r} takes {src.action_space['shape'][0]}-d actions, the model {model.cfg.action.dim}-d")
    if steps > src.max_steps:
        raise ValueError(f"horizon {steps} (with the warm-up) exceeds the {src.max_steps} steps of a {source} episode")


def check_setup(model, source: str, policies: dict, cfg: ScoreConfig) -> None:
    """Clear errors before anything runs: rigs that differ, plans shorter than the horizon."""
    check_rig(model, source, cfg.horizon + (cfg.warmup or 0))
    if not policies:
        raise ValueError("score needs at least one policy")
    if cfg.real is False and any(getattr(p, "privileged", False) for p in policies.values()):
        scripted = [n for n, p in policies.items() if getattr(p, "privileged", False)]
        raise ValueError(f"{scripted} read the real simulator's state: they run only with --real (drop --no-real)")
    for name, pol in policies.items():
        if isinstance(pol, PlanPolicy):
            if len(pol) < cfg.horizon:
                raise ValueError(f"plan {name!r} has {len(pol)} steps, fewer than the horizon {cfg.horizon}")
            if pol.plan.ndim == 3 and len(pol.plan) < cfg.starts:
                raise ValueError(f"plan {name!r} holds {len(pol.plan)} per-start plans for {cfg.starts} starts")


def _success(ep) -> bool | None:
    s = ep.extras.get("success")
    return None if s is None else bool(np.asarray(s).any())


def play_rows(env, policy, starts: list[int], seeds: list[int], horizon: int, options) -> list:
    """One episode per row (its start index, its seed), ``env.num_envs`` rows at a time;
    ``options(chunk)`` gives a chunk's reset options from its start indices."""
    eps, n = [], env.num_envs
    for c in range(0, len(starts), n):
        chunk = starts[c : c + n]
        eps += play(env, policy, seeds[c : c + n], horizon, options=options(chunk), episodes=chunk)
    return eps


def _outcomes(eps) -> tuple[np.ndarray, np.ndarray | None]:
    """Returns, and success (None when the env reports none) of each episode."""
    succ = [_success(ep) for ep in eps]
    return (np.array([ep.total_reward() for ep in eps]),
            None if any(s is None for s in succ) else np.array(succ, dtype=bool))


def play_imagined(env, policy, contexts: list[Context], cfg: ScoreConfig) -> tuple[np.ndarray, np.ndarray | None, dict]:
    """Every start ``samples`` times in the imagined vector env ``env``."""
    S, K, n = len(contexts), cfg.samples, env.num_envs
    starts = [i for i in range(S) for _ in range(K)]
    seeds = [cfg.seed * 1_000_003 + j + 1 for j in range(S * K)]

    def options(chunk):  # rows past the chunk replay its first start, unrecorded
        ctx = [contexts[i] for i in chunk]
        return {"context": ctx + [ctx[0]] * (n - len(ctx))}

    eps = play_rows(env, policy, starts, seeds, cfg.horizon, options)
    ret, succ = _outcomes(eps)
    clips = {i: eps[i * K] for i in range(min(cfg.videos, S))}
    return ret.reshape(S, K), (None if succ is None else succ.reshape(S, K)), clips


def play_imagined_pool(pool, policy, contexts: list[Context], cfg: ScoreConfig):
    """:func:`play_imagined` on a Ray :class:`~wfm_sim.rollout.RolloutPool`: the same seeds,
    starts and per-start plan rows, split over the pool's replicas."""
    S, K = len(contexts), cfg.samples
    starts = [i for i in range(S) for _ in range(K)]
    req = RolloutRequest(S * K, cfg.horizon, seed=cfg.seed * 1_000_003 + 1, policy=PolicySpec("callable", obj=policy),
                         contexts=tuple(contexts[i] for i in starts), labels=tuple(starts))
    eps = pool.run(req)
    ret, succ = _outcomes(eps)
    clips = {i: eps[i * K] for i in range(min(cfg.videos, S))}
    return ret.reshape(S, K), (None if succ is None else succ.reshape(S, K)), clips


def play_real(env, policy, starts: Starts, horizon: int) -> list:
    """Every start once in the real twins ``env`` (a vector env): reset at its seed, its warm-up
    played; starts that share a warm-up share a reset."""
    eps = []
    for chunk in starts.chunks(env.num_envs):
        eps += play(env, policy, [starts.seeds[i] for i in chunk], horizon, options=starts.real_options(chunk),
                    episodes=chunk)
    return eps


def score_policies(model, source: str, policies: dict, cfg: ScoreConfig = ScoreConfig(), progress: bool = True,
                   model_ref: str | None = None, starts: Starts | None = None) -> dict:
    """Play every policy in both worlds from the same starts. Returns the report (JSON-ready) and
    the results (``report["results"]``: :class:`PolicyResult` per policy, not JSON).

    ``model_ref`` (a shipped name or folder) is what Ray replicas load when ``cfg.workers > 1``;
    ``starts`` are :func:`make_starts` ``(model, source, cfg)`` unless given (graded plans are
    recorded from them first)."""
    from tqdm.auto import tqdm

    check_setup(model, source, policies, cfg)
    warmup = model.cfg.context_frames - 1 if cfg.warmup is None else cfg.warmup
    starts = make_starts(model, source, cfg) if starts is None else starts
    if len(starts) != cfg.starts:
        raise ValueError(f"{len(starts)} start states given for --starts {cfg.starts}")
    if cfg.real:
        starts.check_real()
    contexts = starts.contexts
    rows = cfg.starts * cfg.samples
    chunks = -(-rows // cfg.batch)
    imagined = ImaginedVectorEnv(-(-rows // chunks), model, decoder=cfg.decoder, mode=cfg.mode,  # equal chunks: no padding
                                 diffusion_steps=cfg.diffusion_steps, max_episode_steps=cfg.horizon)
    real = make_real_vec(source, min(cfg.real_batch, cfg.starts), model.cfg.tokenizer.image_size,
                         context_frames=warmup + 1) if cfg.real else None
    pool = None
    if cfg.workers > 1:
        if model_ref is None:
            raise ValueError("scoring on Ray workers needs model_ref= (a shipped name or folder the replicas load)")
        pool = RolloutPool(model_ref, cfg.workers, imagined.num_envs,
                           env_kwargs={"decoder": cfg.decoder, "mode": cfg.mode, "diffusion_steps": cfg.diffusion_steps,
                                       "max_episode_steps": cfg.horizon, "precision": model.precision})
    results = {}
    try:
        for name, policy in tqdm(policies.items(), desc="score", unit="policy", disable=not progress):
            t0 = time.perf_counter()
            if getattr(policy, "privileged", False):  # a scripted reference: real simulator only
                ret, succ, clips = None, None, {}
            elif pool is not None:
                ret, succ, clips = play_imagined_pool(pool, policy, contexts, cfg)
            else:
                ret, succ, clips = play_imagined(imagined, policy, contexts, cfg)
            res = PolicyResult(name, ret, succ, imagined_seconds=time.perf_counter() - t0)
            if real is not None:
                t0 = time.perf_counter()
                eps = play_real(real, policy, starts, cfg.horizon)
                res.real_return, res.real_success = _outcomes(eps)
                res.real_seconds = time.perf_counter() - t0
                res.clips = {i: (eps[i], clips[i]) for i in clips}
                if cfg.replay and ret is not None and model.cfg.frames_per_step == 1:  # grouped-time models: no replay
                    replayed = replay_heads(model, contexts, eps, mode=cfg.mode)
                    res.replayed_return, res.replayed_success = replayed["return"], replayed.get("success")
            results[name] = res
    finally:
        if real is not None:
            real.close()
        if pool is not None:
            pool.shutdown()
    return {**report(results, cfg, source, model, starts), "results": results}


def report(results: dict[str, PolicyResult], cfg: ScoreConfig, source: str, model, starts: Starts) -> dict:
    """The JSON-ready report: per-policy summaries, agreement across policies, and speeds."""
    rows = [r.summary() for r in results.values()]
    out = {"model": model.cfg.name, "source": source, "config": asdict(cfg), "starts": starts.summary(),
           "policies": rows}
    agree = {}
    both = [r for r in rows if "imagined_return" in r]  # scripted references have no imagined score
    for metric in ("return", "success"):
        if len(both) >= 2 and all(f"real_{metric}" in r and f"imagined_{metric}" in r for r in both):
            agree[metric] = agreement([r[f"imagined_{metric}"] for r in both], [r[f"real_{metric}"] for r in both])
    out["agreement"] = agree
    out["per_start"] = {name: r.per_start() for name, r in results.items()}
    heads = {}
    for metric in ("return", "success"):
        if len(both) >= 2 and all(f"replayed_{metric}" in r and f"real_{metric}" in r for r in both):
            im, rp, rl = (np.array([r[f"{w}_{metric}"] for r in both]) for w in ("imagined", "replayed", "real"))
            a = agreement(rp, rl)
            heads[metric] = {"pearson": a["pearson"], "spearman": a["spearman"], "mmrv": a["mmrv"],
                             "dynamics_gap": float((im - rp).mean()), "head_gap": a["mean_gap"]}
    if heads:
        out["replayed"] = heads
    n_imag = len(both) * cfg.starts * cfg.samples
    t_imag = sum(r.imagined_seconds for r in results.values())
    speed = {"imagined_episodes_per_s": n_imag / max(t_imag, 1e-9),
             "imagined_steps_per_s": n_imag * cfg.horizon / max(t_imag, 1e-9)}
    if cfg.real:
        t_real = sum(r.real_seconds for r in results.values())
        speed.update({"real_episodes_per_s": len(results) * cfg.starts / max(t_real, 1e-9),
                      "real_steps_per_s": len(results) * cfg.starts * cfg.horizon / max(t_real, 1e-9)})
    out["speed"] = speed
    key = "real_return" if cfg.real else "imagined_return"
    out["ranking"] = [r["policy"] for r in sorted(rows, key=lambda r: -r[key])]
    return out
