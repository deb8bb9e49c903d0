"""A rollout worker: one world-model replica and one :class:`ImaginedVectorEnv` batch.

Plain Python class; :class:`~wfm_sim.rollout.pool.RolloutPool` turns it into a Ray actor
(whole or fractional GPU, or CPU). Each episode is driven by its own seed (env row seed and a
per-episode policy RNG) through :func:`~wfm_sim.rollout.play.play`, so an episode's content
does not depend on which worker ran it or on the other episodes beside it; it does depend on
the batch layout (``envs`` per worker), since kernels sum in another order for another batch
size (see :class:`~wfm_sim.envs.imagined.ImaginedVectorEnv`, Determinism).

Dimension legend: :mod:`wfm_sim.dims`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from wfm_sim.datasets.episode import Episode
from wfm_sim.envs.imagined import ImaginedVectorEnv
from wfm_sim.envs.spaces import model_action_space
from wfm_sim.models.world_model import WorldModel
from wfm_sim.policies.base import ConvPolicy, ConvPolicyConfig, PlanPolicy, RandomPolicy
from wfm_sim.policies.registry import make_policy
from wfm_sim.rollout.play import play


@dataclass(frozen=True)
class PolicySpec:
    """How a worker gets its policy (see :mod:`wfm_sim.policies`).

    kind: 'random'; 'plan' (``plan`` holds a ``(s, a)`` or ``(episodes, s, a)`` array);
    'named' (``name`` is anything :func:`~wfm_sim.policies.make_policy` accepts, built on the
    worker); 'callable' (``obj`` is a picklable policy object, e.g. ``RoadCentroidDriver()``);
    'conv' (``state`` holds a ConvPolicy config dict and state dict, put in Ray's object store
    once by the pool and fetched by each worker once).
    """

    kind: str = "random"
    plan: np.ndarray | None = None
    obj: object = None
    state: object = None
    name: str | None = None

    def __post_init__(self):
        if self.kind not in ("random", "plan", "named", "callable", "conv"):
            raise ValueError(f"policy kind must be random, plan, named, callable or conv; got {self.kind!r}")
        if self.kind == "plan" and (self.plan is None or np.ndim(self.plan) not in (2, 3)):
            raise ValueError("a plan policy needs plan=(T, A) or (episodes, T, A) actions")
        if self.kind == "named" and not self.name:
            raise ValueError("a named policy needs name=")
        if self.kind == "callable" and not callable(self.obj):
            raise ValueError(f"a callable policy needs obj= a policy object, got {type(self.obj).__name__}")


@dataclass(frozen=True)
class Chunk:
    """A slice of a request: episode ids (positions in the request) and their seeds."""

    index: int
    episode_ids: tuple[int, ...]
    seeds: tuple[int, ...]
    horizon: int
    reset_options: dict = field(default_factory=dict)
    contexts: tuple | None = None
    """One start context per episode, or None (the env draws its own)."""
    labels: tuple[int, ...] | None = None
    """The id each episode has for its policy (default: its episode id)."""


class RolloutWorker:
    """Runs chunks of episodes on one model replica.

    Args:
        model: shipped model name or folder.
        envs: sub-envs in the batch (episodes run together).
        env_kwargs: more :class:`ImaginedVectorEnv` arguments (decoder, mode, dataset, ...).
    """

    def __init__(self, model: str, envs: int = 8, env_kwargs: dict | None = None, device: str = "auto"):
        torch.set_num_threads(1)

        env_kwargs = dict(env_kwargs or {})
        if WorldModel.read_config(model).frames_per_step > 1:
            env_kwargs["obs_frames"] = "all"  # grouped time: record every frame of every step (play unrolls them)
        self.env = ImaginedVectorEnv(envs, model, autoreset_mode="next_step", device=device, **env_kwargs)
        self._policies: dict = {}

    def ready(self) -> dict:
        """Model facts, and the bytes its parameters and KV cache take (for replica sizing)."""
        m = self.env.model
        params = sum(p.numel() * p.element_size() for p in m.parameters())
        return {"device": str(m.device), "param_bytes": params, "kv_cache_bytes": self.env.rollout.cache.nbytes(),
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
        if spec.kind == "random":
            return RandomPolicy(self.env.single_action_space)
        if spec.kind == "plan":
            return PlanPolicy(spec.plan)
        if spec.kind == "named":
            # a policy acts per frame; play holds its action for a grouped model's k frames
            return make_policy(spec.name, model_action_space(self.env.cfg, group=1), camera=self.env.cameras[0])
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
        n, policy = self.env.num_envs, self._policy(spec)
        for s in range(0, len(chunk.seeds), n):
            ids, seeds = chunk.episode_ids[s : s + n], chunk.seeds[s : s + n]
            labels = ids if chunk.labels is None else chunk.labels[s : s + n]
            options = dict(chunk.reset_options)
            if chunk.contexts is not None:  # rows past the episodes replay the first context, unrecorded
                ctx = list(chunk.contexts[s : s + n])
                options["context"] = ctx + [ctx[0]] * (n - len(ctx))
            out += play(self.env, policy, seeds, chunk.horizon, options or None, episodes=labels)
        return chunk.index, out
