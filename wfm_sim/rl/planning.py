"""Plans ranked and chosen in imagination, executed in reality.

* :func:`rank_plans`: N candidate action sequences from one start state, each imagined K times
  from the real context; their mean imagined return.
* :func:`cem_plan`: the cross-entropy method over action sequences in imagination (sample a
  population around a Gaussian, keep the elites, refit, repeat); returns the best plan found.
* :func:`plan_and_execute`: from each real start, plan in imagination, then play the chosen
  plan open-loop in the real twin, beside a random candidate of the first population and the
  scripted expert, from the same start.

Dimension legend: :mod:`wfm_sim.dims`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from wfm_sim.envs.contexts import Context
from wfm_sim.envs.imagined import ImaginedVectorEnv
from wfm_sim.envs.real import make_real_vec
from wfm_sim.evaluation.policy_sets import expert_for
from wfm_sim.evaluation.scoring import play_rows
from wfm_sim.evaluation.starts import neutral_action, seed_starts
from wfm_sim.models.limits import check_numbers
from wfm_sim.policies.base import PlanPolicy
from wfm_sim.rollout.play import play


@dataclass(frozen=True)
class PlanConfig:
    """Flags of ``wfm-sim plan``."""

    horizon: int = 20
    population: int = 32
    """Candidate plans per CEM iteration."""
    elites: int = 6
    iterations: int = 2
    samples: int = 1
    """Imagined rollouts per candidate (K)."""
    init_std: float = 0.6
    """Initial std of the action distribution, in units of half the action range."""
    seed: int = 0

    def __post_init__(self):
        for name in ("horizon", "population", "elites", "iterations", "samples"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.seed < 0:
            raise ValueError(f"seed must be >= 0, got {self.seed}")
        check_numbers(self, positive=("init_std",))
        if self.elites > self.population:
            raise ValueError(f"elites ({self.elites}) must not exceed the population ({self.population})")


def rank_plans(env, context: Context, plans: np.ndarray, samples: int = 1, seed: int = 0) -> np.ndarray:
    """Mean imagined return of each plan ``(b, s, a)`` from ``context``; ``env`` an ImaginedVectorEnv."""
    plans = np.asarray(plans, np.float32)
    N, T = plans.shape[:2]
    rows = [p for p in range(N) for _ in range(samples)]
    seeds = [seed * 1_000_003 + j + 1 for j in range(len(rows))]
    eps = play_rows(env, PlanPolicy(plans), rows, seeds, T, lambda chunk: {"context": [context] * env.num_envs})
    return np.bincount(rows, weights=[ep.total_reward() for ep in eps], minlength=N) / samples


def cem_plan(env, context: Context, low, high, cfg: PlanConfig = PlanConfig()) -> tuple[np.ndarray, dict]:
    """The cross-entropy method in imagination. Returns the best plan ``(s, a)`` and a log with
    each iteration's best and mean imagined return and the first population with its imagined
    returns (for baselines)."""
    rng = np.random.default_rng(cfg.seed)
    low, high = np.asarray(low, np.float32), np.asarray(high, np.float32)
    A = low.shape[0]
    mean = np.broadcast_to((low + high) / 2, (cfg.horizon, A)).copy()
    std = np.broadcast_to(cfg.init_std * (high - low) / 2, (cfg.horizon, A)).copy()
    best, best_score, log = None, -np.inf, {"iterations": []}
    for it in range(cfg.iterations):
        pop = np.clip(mean + std * rng.standard_normal((cfg.population, cfg.horizon, A)), low, high).astype(np.float32)
        scores = rank_plans(env, context, pop, cfg.samples, seed=cfg.seed + it)
        if it == 0:
            log["first_population"], log["first_scores"] = pop, scores
        elite = pop[np.argsort(-scores)[: cfg.elites]]
        mean, std = elite.mean(0), elite.std(0) + 1e-3
        if scores.max() > best_score:
            best, best_score = pop[int(np.argmax(scores))], float(scores.max())
        log["iterations"].append({"best": float(scores.max()), "mean": float(scores.mean())})
    log["best_imagined_return"] = best_score
    return best, log


def plan_and_execute(model, source: str, seeds: list[int], cfg: PlanConfig = PlanConfig(), batch: int = 32,
                     progress: bool = True) -> dict:
    """Plan with CEM in imagination from each real start; play the chosen plan, a random candidate
    and the scripted expert in the real twin from the same start. Returns per-start outcomes and means."""
    from tqdm.auto import tqdm

    warmup = model.cfg.context_frames - 1
    size = model.cfg.tokenizer.image_size
    starts = seed_starts(source, seeds, size, warmup)
    env = ImaginedVectorEnv(min(batch, cfg.population * cfg.samples), model, max_episode_steps=cfg.horizon)
    real = make_real_vec(source, 1, size, context_frames=warmup + 1)
    space = real.single_action_space
    rows = []
    try:
        for i in tqdm(range(len(starts)), desc="plan", unit="start", disable=not progress):
            seed, ctx, options = seeds[i], starts.contexts[i], starts.real_options([i])
            plan, log = cem_plan(env, ctx, space.low, space.high, cfg)
            rand = log["first_population"][0]
            out = {"seed": seed, "imagined_return": log["best_imagined_return"], "cem": log["iterations"]}
            for name, policy in (("chosen", PlanPolicy(plan)), ("random_candidate", PlanPolicy(rand)),
                                 ("expert", expert_for(source))):
                [ep] = play(real, policy, [seed], cfg.horizon, options=options)
                out[f"{name}_real_return"] = ep.total_reward()
                s = ep.extras.get("success")
                if s is not None:
                    out[f"{name}_real_success"] = bool(np.asarray(s).any())
            out["random_candidate_imagined_return"] = float(log["first_scores"][0])
            rows.append(out)
    finally:
        real.close()
    summary = {k: float(np.mean([r[k] for r in rows])) for k in rows[0] if k not in ("seed", "cem")}
    return {"config": asdict(cfg), "source": source, "starts": rows, "mean": summary,
            "neutral": neutral_action(space).tolist()}
