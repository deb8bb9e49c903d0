"""Synthetic datasets from a world model: ``wfm-sim generate``, with provenance and exact regeneration.

``generate`` imagines N episodes of H steps, each started from a real context (a user's own
store of real episodes, or the contexts shipped with the model), the ego driven by a policy or
a plan, and streams them into an episode store. What makes the data trustworthy:

* **Provenance** in the store's attributes (``provenance``): model name and content hash,
  package, torch and simulator-independent settings (decoder and its steps, decoding mode and
  passes, sampling), the policy, horizon, base seed and batch layout, the start store; per step
  ``entropy`` (the model's mean token entropy of that frame, a confidence signal),
  ``real_frame`` (True for frame 0, the last real context frame; imagined after it) and
  ``start_context`` (index into ``provenance.start_contexts``, which names the source store,
  episode and step, or the shipped context).
* **Exact regeneration**: episode i always runs in batch ``i // envs`` at row ``i % envs``
  with the same companions, so :func:`regenerate` rebuilds it bit for bit on the same machine.
* **Resumable**: episodes are stored under keys; a run that was killed (or Ctrl-C'd) is
  completed by running the same command again: finished episodes are kept, none is written
  twice, and unfinished batches are imagined again whole (so every episode keeps its batch).
  A store generated with other settings is refused rather than mixed.
"""

from __future__ import annotations

import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from wfm_sim.checkpoint import content_hash
from wfm_sim.datasets.episode import Episode
from wfm_sim.datasets.store import EpisodeReader, EpisodeWriter, StoreError
from wfm_sim.envs.contexts import ContextBank
from wfm_sim.envs.imagined import PROMPT_SEP, ImaginedVectorEnv
from wfm_sim.models.sampling import SamplingConfig
from wfm_sim.models.text import TEXT_FOLDER
from wfm_sim.models.world_model import resolve_pretrained
from wfm_sim.policies import PlanPolicy, make_policy
from wfm_sim.rollout.pool import RolloutPool, RolloutRequest, split_chunks
from wfm_sim.rollout.worker import PolicySpec, RolloutWorker

EXTRAS = {"entropy": ((), "float32"), "real_frame": ((), "bool"), "start_context": ((), "int32")}


@dataclass(frozen=True)
class GenerateConfig:
    """What ``wfm-sim generate`` imagines."""

    model: str = "driving"
    episodes: int = 8
    horizon: int = 48
    starts: str | None = None
    """A store of real episodes to start from (the model's rig and frame size); default: the model's shipped contexts."""
    policy: str = "road"
    """A policy name, a ``.npy`` plan ``(T, A)`` / ``(episodes, T, A)``, or a policy folder."""
    seed: int = 0
    """Episode i is seeded ``seed + i``."""
    workers: int = 1
    """Ray actors (1: in this process)."""
    envs: int = 8
    """Imagined envs per batch (part of the provenance: a batch's float sums depend on its size)."""
    decoder: str = "token"
    diffusion_steps: int | None = None
    mode: str = "parallel"
    parallel_steps: int = 8
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    prompt: str | None = None
    device: str = "cpu"
    precision: str = "fp32"
    """fp32 by default: bf16 kernels differ across CPU kinds, and regeneration is the point."""
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        for name in ("episodes", "horizon", "workers", "envs", "parallel_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.seed < 0:
            raise ValueError(f"seed must be >= 0, got {self.seed}")

    def reset_options(self) -> dict:
        """What every episode's env reset is given: the prompt, for a text-conditioned model."""
        return {} if self.prompt is None else {"prompt": self.prompt}

    def env_kwargs(self) -> dict:
        return {"dataset": self.starts, "decoder": self.decoder, "diffusion_steps": self.diffusion_steps,
                "mode": self.mode, "parallel_steps": self.parallel_steps, "max_episode_steps": self.horizon,
                "sampling": SamplingConfig(self.temperature, self.top_k, self.top_p), "precision": self.precision}


def provenance(cfg: GenerateConfig, model, bank_origins: list[str]) -> dict:
    """Everything that decides an episode's content, as JSON."""
    import torch

    import wfm_sim

    folder = resolve_pretrained(cfg.model)
    return {"generator": "wfm_sim.generate", "wfm_sim_version": wfm_sim.__version__, "torch_version": torch.__version__,
            "model": cfg.model, "model_hash": content_hash(folder), "model_name": model.cfg.name,
            "settings": {k: v for k, v in asdict(cfg).items() if k not in ("episodes", "workers", "extra")},
            "start_contexts": bank_origins, "machine": platform.machine(), "processor": _cpu_name()}


def _cpu_name() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def _key(prov: dict, seed: int) -> str:
    return f"wfm_sim.generate/{prov['model']}@{prov['model_hash']}/{prov['settings']['policy']}/h{prov['settings']['horizon']}/seed={seed}"


def _finish(ep: Episode, bank_origins: list[str]) -> Episode:
    """Per-step provenance extras of one imagined episode."""
    n = len(ep)
    ent = ep.extras.get("entropy")
    real = np.zeros(n, bool)
    real[0] = True  # frame 0 is the last real context frame

    origin = (ep.origin or "").split(PROMPT_SEP)[0]  # a prompted start names its context, then the prompt
    idx = bank_origins.index(origin) if origin in bank_origins else -1
    extras = {"entropy": np.asarray(ent if ent is not None else np.full(n, np.nan), np.float32),
              "real_frame": real, "start_context": np.full(n, idx, np.int32)}
    if "success" in ep.extras:
        extras["success"] = ep.extras["success"]
    ep.extras = extras
    return ep


def _policy_spec(cfg: GenerateConfig, space):
    if cfg.policy == "random":
        return PolicySpec("random")
    policy = make_policy(cfg.policy, space, camera="CAM_FRONT") if cfg.policy != "road" else None
    if getattr(policy, "privileged", False):
        raise ValueError(f"--policy {cfg.policy} reads the real simulator's state; imagination needs a pixel policy, "
                         "a plan or random")
    if isinstance(policy, PlanPolicy):
        plan = policy.plan
        if plan.shape[-1:] != space.shape[-1:] or plan.shape[-2] < cfg.horizon:
            raise ValueError(f"plan {cfg.policy} must have shape (T >= {cfg.horizon}, {space.shape[-1]}) or "
                             f"(episodes, T, {space.shape[-1]}) for this model's actions, got {plan.shape}")
        return PolicySpec("plan", plan=plan)
    return PolicySpec("named", name=cfg.policy)


def _check_inputs(cfg: GenerateConfig, model) -> None:
    if cfg.prompt is not None and model.cfg.backbone.text_dim == 0:
        raise ValueError(f"--prompt needs a text-conditioned model; {cfg.model} has no text input (text_dim=0)")
    if cfg.prompt is not None:
        if not (resolve_pretrained(cfg.model) / TEXT_FOLDER).is_dir():
            raise ValueError(f"--prompt: {cfg.model} takes text but its folder has no text_encoder/ to encode it with")
    if cfg.starts is not None:
        r = EpisodeReader(cfg.starts)
        want = (tuple(model.cfg.cameras), model.cfg.tokenizer.image_size)
        if tuple(c for c in model.cfg.cameras if c in r.cameras) != want[0] or r.image_size != want[1]:
            raise StoreError(f"--starts {cfg.starts} holds cameras {list(r.cameras)} at {r.image_size}px; the model "
                             f"{cfg.model} needs cameras {list(want[0])} at {want[1]}px")


class _Local:
    """One in-process worker with the pool's chunk interface (workers=1: no Ray)."""

    def __init__(self, cfg: GenerateConfig):
        self.worker = RolloutWorker(cfg.model, cfg.envs, cfg.env_kwargs(), cfg.device)

    def iter_chunks(self, req):
        for chunk in split_chunks(req, self.worker.env.num_envs):
            yield self.worker.run(chunk, req.policy)[1]


def generate(cfg: GenerateConfig, out: str | Path, progress: bool = True) -> dict:
    """Imagine ``cfg.episodes`` episodes into the store ``out`` (created, or completed)."""
    probe = ImaginedVectorEnv(1, cfg.model, device=cfg.device, **{**cfg.env_kwargs(), "dataset": None})
    model = probe.model
    _check_inputs(cfg, model)

    bank = (ContextBank.from_store(cfg.starts, model.cfg.cameras, model.cfg.context_video_frames) if cfg.starts
            else probe.contexts)
    if bank is None:
        raise ValueError(f"{cfg.model} ships no start contexts: pass --starts STORE (real episodes of its simulator)")
    spec = _policy_spec(cfg, probe.single_action_space)
    prov = provenance(cfg, model, list(bank.origin))
    out = Path(out)
    if (out / "zarr.json").is_file():
        have = EpisodeReader(out).attrs.get("provenance")
        if have is not None and have["settings"] != prov["settings"] or have is not None and have["model_hash"] != prov["model_hash"]:
            diff = sorted(k for k in prov["settings"] if have["settings"].get(k) != prov["settings"][k])
            raise StoreError(f"{out} holds episodes generated with other settings ({', '.join(diff) or 'model'}); "
                             "write to another --out")
    keys = [_key(prov, cfg.seed + i) for i in range(cfg.episodes)]
    c = model.cfg
    a = c.action
    space = ({"type": "box", "shape": [a.dim], "low": list(a.low), "high": list(a.high)} if a.kind == "box"
             else {"type": "discrete", "n": a.n})
    extras = dict(EXTRAS, **({"success": ((), "bool")} if c.backbone.success_head else {}))
    t0, written, frames = time.perf_counter(), 0, 0
    with EpisodeWriter(out, tuple(c.cameras), c.tokenizer.image_size, space, c.fps, f"wfm_sim imagined: {cfg.model}",
                       extras=extras, metadata={"generator": "wfm_sim.generate", "model": cfg.model,
                                                "provenance": prov}) as writer:
        missing = [i for i in range(cfg.episodes) if not writer.has(keys[i])]
        if not missing:
            return {"episodes": 0, "skipped": cfg.episodes, "frames": 0, "seconds": 0.0}
        n = cfg.envs
        batches = sorted({i // n for i in missing})  # whole batches: each episode keeps its companions
        only = tuple(j for b in batches for j in range(b * n, min((b + 1) * n, cfg.episodes)))
        req = RolloutRequest(cfg.episodes, cfg.horizon, seed=cfg.seed, policy=spec, only=only,
                             reset_options=cfg.reset_options())
        runner = _Local(cfg) if cfg.workers == 1 else RolloutPool(cfg.model, cfg.workers, n, env_kwargs=cfg.env_kwargs())
        try:
            with tqdm(total=len(missing), desc="generate", unit="ep", disable=not progress) as bar:
                for eps in runner.iter_chunks(req):
                    for ep in eps:
                        key = keys[ep.seed - cfg.seed]
                        if writer.has(key):
                            continue
                        ep.key = key
                        writer.write_episode(_finish(ep, prov["start_contexts"]))
                        written, frames = written + 1, frames + len(ep) * len(c.cameras)
                        bar.update(1)
        finally:
            if cfg.workers > 1:
                runner.shutdown()
    secs = time.perf_counter() - t0
    return {"episodes": written, "skipped": cfg.episodes - len(missing), "camera_frames": frames, "seconds": secs,
            "camera_frames_per_s": frames / max(secs, 1e-9)}


def regenerate(store: str | Path, index: int) -> Episode:
    """Imagine episode ``index`` of a generated store again from its provenance (same batch, same row)."""
    r = EpisodeReader(store)
    prov = r.attrs.get("provenance")
    if prov is None:
        raise StoreError(f"{store} was not written by wfm-sim generate: it has no provenance")
    if not 0 <= index < r.num_episodes:
        raise IndexError(f"{store} holds episodes 0..{r.num_episodes - 1}, asked for {index}")
    seed = r.episode_seeds[index]
    settings = dict(prov["settings"])
    i = seed - settings["seed"]
    cfg = GenerateConfig(**{**settings, "episodes": i + 1, "workers": 1})
    if content_hash(resolve_pretrained(cfg.model)) != prov["model_hash"]:
        raise StoreError(f"the model {cfg.model} has changed since {store} was generated (hash {prov['model_hash']})")
    local = _Local(cfg)
    spec = _policy_spec(cfg, local.worker.env.single_action_space)
    first = i // cfg.envs * cfg.envs  # its batch, up to its row: the rows after it do not change it
    req = RolloutRequest(i + 1, cfg.horizon, seed=cfg.seed, policy=spec, only=tuple(range(first, i + 1)),
                         reset_options=cfg.reset_options())
    for eps in local.iter_chunks(req):
        for ep in eps:
            if ep.seed == seed:
                return _finish(ep, prov["start_contexts"])
    raise StoreError(f"episode {index} (seed {seed}) was not regenerated")
