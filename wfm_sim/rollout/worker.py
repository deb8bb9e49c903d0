"""A rollout worker: one world-model replica and one :class:`ImaginedVectorEnv` batch.

Plain Python class; :class:`~wfm_sim.rollout.pool.RolloutPool` turns it into a Ray actor
(whole or fractional GPU, or CPU). Each episode is driven by its own seed (env row seed and a
per-episode policy RNG), so an episode's content does not depend on the worker, the batch or
the other episodes it ran beside.

Dimension legend: ``n`` episodes in a batch, ``T`` steps, ``V`` cameras, ``A`` action dim.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from wfm_sim.datasets.episode import Episode


@dataclass(frozen=True)
class PolicySpec:
    """How a worker gets its policy.

    kind: 'random'; 'plan' (``plan`` holds a ``(T, A)`` or ``(episodes, T, A)`` array);
    'callable' (``obj`` is a picklable ``policy(obs, rngs, t)``, e.g. RoadCentroidDriver);
    'conv' (``state`` holds a ConvPolicy config dict and state dict, put in Ray's object store
    once by the pool and fetched by each worker once).
    """

    kind: str = "random"
    plan: np.ndarray | None = None
    obj: object = None
    state: object = None

    def __post_init__(self):
        if self.kind not in ("random", "plan", "callable", "conv"):
            raise ValueError(f"policy kind must be random, plan, callable or conv; got {self.kind!r}")
        if self.kind == "plan" and self.plan is None:
            raise ValueError("a plan policy needs plan=(T, A) actions")


@dataclass(frozen=True)
class Chunk:
    """A slice of a request: episode ids (positions in the request) and their seeds."""

    index: int
    episode_ids: tuple[int, ...]
    seeds: tuple[int, ...]
    horizon: int
    reset_options: dict = field(default_factory=dict)


class RolloutWorker:
    """Runs chunks of episodes on one model replica.

    Args:
        model: shipped model name or folder.
        envs: sub-envs in the batch (episodes run together).
        env_kwargs: more :class:`ImaginedVectorEnv` arguments (decoder, mode, dataset, ...).
    """

    def __init__(self, model: str, envs: int = 8, env_kwargs: dict | None = None, device: str = "auto"):
        from wfm_sim.envs.imagined import ImaginedVectorEnv

        torch.set_num_threads(1)
        self.env = ImaginedVectorEnv(envs, model, autoreset_mode="next_step", device=device, **(env_kwargs or {}))
        self._policies: dict = {}

    def ready(self) -> dict:
        """Model facts, and the bytes its parameters and KV cache take (for replica sizing)."""
        m = self.env.model
        params = sum(p.numel() * p.element_size() for p in m.parameters())
        return {"device": str(m.device), "param_bytes": params, "kv_cache_bytes": self.env._im.cache.nbytes(),
                "envs": self.env.num_envs}

    def spec(self) -> dict:
        """What an episode store of this worker's rollouts needs to know."""
        c = self.env.cfg
        a = c.action
        space = ({"type": "box", "shape": [a.dim], "low": list(a.low), "high": list(a.high)} if a.kind == "box"
                 else {"type": "discrete", "n": a.n})
        return {"cameras": list(c.cameras), "image_size": c.tokenizer.image_size, "action_space": space,
                "fps": c.fps, "success": c.backbone.success_head}

    def _policy(self, spec: PolicySpec):
        from wfm_sim.policies.base import ConvPolicy, ConvPolicyConfig, PlanPolicy, RandomPolicy

        if spec.kind == "random":
            return RandomPolicy(self.env.single_action_space)
        if spec.kind == "plan":
            return PlanPolicy(spec.plan)
        if spec.kind == "callable":
            return spec.obj
        state = spec.state
        key = state.hex() if hasattr(state, "hex") and not isinstance(state, tuple) else id(state)
        if key not in self._policies:  # build once per weights object
            if not isinstance(state, tuple):
                import ray

                state = ray.get(state)  # the weights were put in the object store once, by the pool
            cfg_dict, sd = state
            policy = ConvPolicy(ConvPolicyConfig(**cfg_dict))
            policy.load_state_dict(sd)
            self._policies = {key: policy.eval().to(self.env.model.device)}
        return self._policies[key]

    def run(self, chunk: Chunk, spec: PolicySpec) -> tuple[int, list[Episode]]:
        """Run the chunk's episodes (at most ``envs`` at once) to their end or the horizon."""
        out: list[Episode] = []
        n = self.env.num_envs
        for s in range(0, len(chunk.seeds), n):
            ids, seeds = chunk.episode_ids[s : s + n], chunk.seeds[s : s + n]
            out += self._batch(ids, seeds, chunk, self._policy(spec), spec)
        return chunk.index, out

    def _batch(self, ids, seeds, chunk: Chunk, policy, spec: PolicySpec) -> list[Episode]:
        env, k = self.env, len(seeds)
        # Unused rows get throwaway seeds; only the first k rows are recorded.
        all_seeds = list(seeds) + [int(2**31 - 1 - i) for i in range(env.num_envs - k)]
        obs, _ = env.reset(seed=all_seeds, options=dict(chunk.reset_options))
        rngs = [np.random.default_rng([sd, 7]) for sd in all_seeds]
        rec = {"obs": [], "action": [], "reward": [], "terminated": [], "truncated": [], "success": []}
        alive = np.ones(env.num_envs, dtype=bool)
        alive[k:] = False
        length = np.zeros(env.num_envs, dtype=np.int64)
        for t in range(chunk.horizon):
            if spec.kind == "plan" and np.ndim(spec.plan) == 3:
                action = policy(obs, rngs, t, rows=np.asarray(ids + tuple(ids[:1]) * (env.num_envs - k)))
            else:
                action = policy(obs, rngs, t)
            action = np.asarray(action, dtype=env.single_action_space.dtype)
            nxt, reward, term, trunc, info = env.step(action)
            trunc = trunc | (t == chunk.horizon - 1)
            rec["obs"].append(obs)
            rec["action"].append(action)
            rec["reward"].append(reward)
            rec["terminated"].append(term)
            rec["truncated"].append(trunc)
            rec["success"].append(info.get("success", np.zeros(env.num_envs, bool)))
            length[alive] += 1
            alive &= ~(term | trunc)
            obs = nxt
            if not alive.any():
                break
        return [self._episode(rec, i, int(length[i]), seeds[i]) for i in range(k)]

    def _episode(self, rec: dict, row: int, length: int, seed: int) -> Episode:
        cams = self.env.cameras

        def col(key):
            return np.stack([step[row] for step in rec[key][:length]])

        frames = rec["obs"][:length]
        if isinstance(frames[0], dict):
            obs = {c: np.stack([f[c][row] for f in frames]) for c in cams}
        else:
            obs = {cams[0]: np.stack([f[row] for f in frames])}
        extras = {"success": col("success")} if self.env.cfg.backbone.success_head else {}
        return Episode(obs=obs, action=col("action"), reward=col("reward").astype(np.float32),
                       terminated=col("terminated"), truncated=col("truncated"), extras=extras, seed=seed)
