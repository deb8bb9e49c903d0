"""A pool of rollout workers on Ray: requests in, complete episodes out, in request order.

The pool splits a request into chunks of episodes (episode i always has seed ``seed + i``),
hands chunks to idle workers, and collects each chunk's episodes exactly once. A worker that
dies mid-chunk is replaced and its chunk rerun; after ``max_retries`` reruns of one chunk the
caller gets a :class:`RolloutError`. Policy weights go into Ray's object store once per request.
Works the same on a laptop (``ray.init(num_cpus=2)``) and a cluster (``ray.init(address="auto")``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
from tqdm.auto import tqdm

from wfm_sim.datasets.episode import Episode
from wfm_sim.datasets.store import EpisodeWriter
from wfm_sim.rollout.worker import Chunk, PolicySpec, RolloutWorker


class RolloutError(RuntimeError):
    """Rollouts could not be completed (a chunk failed more than ``max_retries`` times)."""


@dataclass(frozen=True)
class RolloutRequest:
    """What to imagine."""

    episodes: int
    horizon: int
    seed: int = 0
    """Episode i is seeded ``seed + i``: the same seeds give the same episodes on any number of workers."""
    policy: PolicySpec = field(default_factory=PolicySpec)
    reset_options: dict = field(default_factory=dict)
    """Passed to every env reset (e.g. ``{"episode": 3}`` to start from one dataset context)."""
    only: tuple[int, ...] | None = None
    """Run only these episode indices of the request (the rest are held already)."""
    contexts: tuple | None = None
    """One start :class:`~wfm_sim.envs.Context` per episode (e.g. real start states for scoring)."""
    labels: tuple[int, ...] | None = None
    """The id each episode has for its policy (per-episode plans); default its index."""

    def __post_init__(self):
        for name in ("episodes", "horizon"):
            v = getattr(self, name)
            if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {v!r}")
        if not isinstance(self.seed, (int, np.integer)) or self.seed < 0:
            raise ValueError(f"seed must be an integer >= 0, got {self.seed!r}")
        if not isinstance(self.policy, PolicySpec):
            raise ValueError(f"policy must be a PolicySpec, got {type(self.policy).__name__}")
        if self.only is not None and any(not 0 <= i < self.episodes for i in self.only):
            raise ValueError(f"only= must hold episode indices in [0, {self.episodes})")
        for name in ("contexts", "labels"):
            if getattr(self, name) is not None and len(getattr(self, name)) != self.episodes:
                raise ValueError(f"{name}= must hold one entry per episode ({self.episodes}), got {len(getattr(self, name))}")

    @property
    def episode_ids(self) -> list[int]:
        return list(range(self.episodes)) if self.only is None else sorted(set(self.only))


def policy_id(spec: PolicySpec) -> str:
    """A stable name of the policy a spec describes (part of imagined episodes' keys)."""
    import hashlib

    if spec.kind == "random":
        return "random"
    if spec.kind == "named":
        return str(spec.name)
    if spec.kind == "plan":
        return "plan-" + hashlib.sha1(np.ascontiguousarray(spec.plan).tobytes()).hexdigest()[:12]
    if spec.kind == "conv" and isinstance(spec.state, tuple):
        h = hashlib.sha1(repr(sorted(spec.state[0].items())).encode())
        for k, v in sorted(spec.state[1].items()):
            h.update(k.encode() + v.detach().cpu().numpy().tobytes())
        return "conv-" + h.hexdigest()[:12]
    return f"{spec.kind}-{type(spec.obj).__name__ if spec.obj is not None else 'ref'}"


def split_chunks(req: RolloutRequest, size: int) -> list[Chunk]:
    """The request's episodes, ``size`` at a time, in order."""
    ids = np.asarray(req.episode_ids, dtype=np.int64)
    out = []
    for i, s in enumerate(range(0, len(ids), size)):
        part = [int(x) for x in ids[s : s + size]]
        out.append(Chunk(i, tuple(part), tuple(int(req.seed + x) for x in part), req.horizon, dict(req.reset_options),
                         None if req.contexts is None else tuple(req.contexts[x] for x in part),
                         None if req.labels is None else tuple(int(req.labels[x]) for x in part)))
    return out


class RolloutPool:
    """N Ray actors, each a :class:`RolloutWorker`.

    Args:
        model: shipped model name or model folder (visible to every node).
        workers: number of actors (model replicas).
        envs_per_worker: imagined envs batched inside each actor.
        num_gpus: GPUs per actor (0 = CPU; 0.25 puts four replicas on one GPU).
        num_cpus: CPUs per actor.
        max_retries: reruns of a chunk whose worker died, before giving up.
        env_kwargs: more :class:`ImaginedVectorEnv` arguments for every worker.
        start_timeout: seconds to wait for the actors to load their model before giving up.
        address: the Ray cluster to join when no Ray session is running ('auto' on a cluster;
            None starts a local one). A session the pool starts, it also ends.

    Raises ``ValueError`` for bad arguments and :class:`RolloutError` when the cluster cannot
    place the actors (with the numbers), before anything waits.
    """

    def __init__(self, model: str = "driving", workers: int = 2, envs_per_worker: int = 8, num_gpus: float = 0.0,
                 num_cpus: float = 1.0, max_retries: int = 3, env_kwargs: dict | None = None,
                 start_timeout: float = 300.0, address: str | None = None):
        import ray

        _check_pool_args(workers, envs_per_worker, num_gpus, num_cpus, max_retries)
        self._owns_ray = not ray.is_initialized()  # a Ray session this pool started, it also ends
        if self._owns_ray:
            ray.init(address=address, include_dashboard=False, log_to_driver=False)
        self.ray = ray
        self.model, self.envs, self.max_retries = str(model), envs_per_worker, max_retries
        self.env_kwargs = dict(env_kwargs or {})
        _check_resources(ray, workers, num_cpus, num_gpus)
        device = "cuda" if num_gpus > 0 else "cpu"
        self._actor_cls = ray.remote(num_cpus=num_cpus, num_gpus=num_gpus, max_restarts=0)(RolloutWorker)
        self._device = device
        self.workers = [self._spawn() for _ in range(workers)]
        self.replacements = 0
        try:
            self.ray.get([w.ready.remote() for w in self.workers], timeout=start_timeout)
        except ray.exceptions.GetTimeoutError:
            self.shutdown()
            raise RolloutError(f"{workers} rollout workers did not start within {start_timeout:.0f} s "
                               f"(loading {self.model}); raise start_timeout or check `ray status`") from None
        except ray.exceptions.RayActorError as e:
            self.shutdown()
            raise RolloutError(f"a rollout worker failed to start: {e}") from e

    def _spawn(self):
        return self._actor_cls.remote(self.model, self.envs, self.env_kwargs, self._device)

    def info(self) -> list[dict]:
        return self.ray.get([w.ready.remote() for w in self.workers])

    def _chunks(self, req: RolloutRequest) -> list[Chunk]:
        return split_chunks(req, self.envs)

    def iter_chunks(self, req: RolloutRequest, on_result: Callable[[int], None] | None = None) -> Iterator[list[Episode]]:
        """Yield each chunk's episodes in request order as soon as that order allows."""
        ray = self.ray
        spec = req.policy
        if spec.kind == "conv" and not isinstance(spec.state, ray.ObjectRef):
            spec = PolicySpec("conv", state=ray.put(spec.state))  # weights enter the object store once
        pending = list(self._chunks(req))[::-1]
        attempts: dict[int, int] = {}
        in_flight: dict = {}  # ObjectRef -> (worker index, chunk)
        done: dict[int, list[Episode]] = {}
        nxt = 0
        idle = list(range(len(self.workers)))
        total = len(pending)
        while nxt < total:
            while idle and pending:
                w, c = idle.pop(), pending.pop()
                ref = self.workers[w].run.remote(c, spec)
                in_flight[ref] = (w, c)
            ready, _ = ray.wait(list(in_flight), num_returns=1)
            ref = ready[0]
            w, c = in_flight.pop(ref)
            try:
                index, episodes = ray.get(ref)
            except (ray.exceptions.RayActorError, ray.exceptions.WorkerCrashedError) as e:
                attempts[c.index] = attempts.get(c.index, 0) + 1
                if attempts[c.index] > self.max_retries:
                    raise RolloutError(f"chunk {c.index} (episodes {c.episode_ids[0]}..{c.episode_ids[-1]}) failed "
                                       f"{attempts[c.index]} times; last error: {e}") from e
                self.workers[w] = self._spawn()  # replace the dead replica, rerun its chunk
                self.replacements += 1
                pending.append(c)
                idle.append(w)
                continue
            idle.append(w)
            if index not in done:  # a chunk's episodes are kept exactly once
                done[index] = episodes
            if on_result is not None:
                on_result(index)
            while nxt in done:
                yield done.pop(nxt)
                nxt += 1

    def run(self, req: RolloutRequest, progress: bool = False, on_result=None) -> list[Episode]:
        """All episodes of ``req``, in request order."""
        out: list[Episode] = []
        with tqdm(total=len(req.episode_ids), desc="imagine", unit="ep", disable=not progress) as bar:
            for eps in self.iter_chunks(req, on_result):
                out += eps
                bar.update(len(eps))
        return out

    def run_to_store(self, req: RolloutRequest, path: str | Path, progress: bool = True, fps: float | None = None) -> int:
        """Stream episodes into a zarr store (request order) instead of holding them all in memory.

        Idempotent: each episode is stored under a key (model, policy, horizon, seed) and the
        episodes the store holds already are not imagined again, so re-running a killed job
        completes it. Returns the episodes written now.
        """
        from dataclasses import replace

        info = self.ray.get(self.workers[0].spec.remote())
        pid = policy_id(req.policy)
        keys = {i: f"wfm_sim.rollout/{self.model}/{pid}/h{req.horizon}/seed={req.seed + i}" for i in req.episode_ids}
        written = 0
        with EpisodeWriter(path, tuple(info["cameras"]), info["image_size"], info["action_space"], fps or info["fps"],
                           f"wfm_sim imagined: {self.model}",
                           extras={"success": ((), "bool")} if info["success"] else None,
                           metadata={"generator": "wfm_sim.rollout", "model": self.model}) as writer:
            todo = tuple(i for i in req.episode_ids if not writer.has(keys[i]))
            if not todo:
                return 0
            with tqdm(total=len(todo), desc="imagine -> zarr", unit="ep", disable=not progress) as bar:
                for eps in self.iter_chunks(replace(req, only=todo)):
                    for ep in eps:
                        ep.key = keys[ep.seed - req.seed]
                        writer.write_episode(ep)
                        written += 1
                    bar.update(len(eps))
        return written

    def shutdown(self) -> None:
        for w in self.workers:
            self.ray.kill(w)
        self.workers = []
        if self._owns_ray and self.ray.is_initialized():
            self.ray.shutdown()
            self._owns_ray = False


def _check_pool_args(workers, envs_per_worker, num_gpus, num_cpus, max_retries) -> None:
    for name, v, lo in (("workers", workers, 1), ("envs_per_worker", envs_per_worker, 1), ("max_retries", max_retries, 0)):
        if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < lo:
            raise ValueError(f"{name} must be an integer >= {lo}, got {v!r}")
    if not num_cpus > 0:
        raise ValueError(f"num_cpus per worker must be > 0, got {num_cpus!r}")
    if not num_gpus >= 0:
        raise ValueError(f"num_gpus per worker must be >= 0, got {num_gpus!r}")


def _check_resources(ray, workers: int, num_cpus: float, num_gpus: float) -> None:
    """Fail at once, with the numbers, when the cluster cannot place every actor (Ray would wait forever)."""
    have = ray.cluster_resources()
    need = {"CPU": workers * num_cpus, "GPU": workers * num_gpus}
    short = [f"{need[r]:g} {r}s ({workers} workers x {per:g}) but the cluster has {have.get(r, 0):g}"
             for r, per in (("CPU", num_cpus), ("GPU", num_gpus)) if need[r] > have.get(r, 0) + 1e-9]
    if short:
        raise RolloutError("cannot place the rollout workers: they need " + "; ".join(short)
                           + ". Use fewer workers, fewer CPUs/GPUs per worker, or a bigger cluster")
