"""Data-parallel training on Ray Train (``TorchTrainer``) with the one training loop.

Each Ray worker runs :func:`wfm_sim.training.loop.train` with its rank: it takes its slice of
every global batch, gradients are averaged across workers with ``all_reduce`` before the
optimizer step (exactly what DDP computes; done by hand because the loss goes through the
whole WorldModel while only one component trains), and rank 0 evaluates and saves. On CPU the
process group uses gloo; on GPUs, NCCL with one GPU per worker.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from pathlib import Path

import torch
import torch.distributed as dist

from wfm_sim.training.loop import TrainConfig, train


class AllReduce:
    """Gradient averaging and parameter broadcast over the default process group."""

    def __init__(self, world: int):
        self.world = world

    def broadcast(self, module: torch.nn.Module) -> None:
        for p in module.state_dict().values():
            dist.broadcast(p.data if hasattr(p, "data") else p, src=0)

    def average_gradients(self, params) -> None:
        grads = [p.grad for p in params if p.grad is not None]
        flat = torch.cat([g.flatten() for g in grads])
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        flat /= self.world
        offset = 0
        for g in grads:
            g.copy_(flat[offset : offset + g.numel()].view_as(g))
            offset += g.numel()


def _worker(config: dict) -> None:
    import ray.train

    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    cfg = TrainConfig(**config)
    if cfg.device in ("auto", "cuda") and torch.cuda.is_available():
        cfg = TrainConfig(**{**config, "device": f"cuda:{ctx.get_local_rank()}"})
    train(cfg, rank=rank, world=world, allreduce=AllReduce(world))


def train_distributed(cfg: TrainConfig, workers: int = 2, use_gpu: bool = False, storage: str | None = None) -> dict:
    """Run ``cfg`` on ``workers`` Ray Train workers; returns rank 0's last metrics."""
    import ray
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    if not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be an integer >= 1, got {workers!r}")
    if not ray.is_initialized():
        # Ray Train's controller and scheduling actors need CPU slots beside the workers: on a
        # single machine, offer at least workers + 2 logical CPUs or the worker group waits.
        ray.init(num_cpus=max(os.cpu_count() or 1, workers + 2), include_dashboard=False, log_to_driver=False)
    have = ray.cluster_resources()
    need = {"CPU": workers + 1, "GPU": workers if use_gpu else 0}  # + 1: Ray Train's controller
    short = [f"{need[r]} {r}s but the cluster has {have.get(r, 0):g}" for r in need if need[r] > have.get(r, 0)]
    if short:  # Ray would wait forever for the worker group
        raise RuntimeError(f"cannot place {workers} Ray Train workers: they need " + "; ".join(short)
                           + ". Use fewer --ray-workers, or a bigger cluster")
    trainer = TorchTrainer(
        _worker,
        train_loop_config=asdict(cfg),
        scaling_config=ScalingConfig(num_workers=workers, use_gpu=use_gpu),
        torch_config=TorchConfig(backend="nccl" if use_gpu else "gloo"),
        run_config=RunConfig(storage_path=storage, name=f"wfm_sim-{cfg.component}"),
    )
    result = trainer.fit()
    if result.error is not None:
        raise result.error
    log = Path(cfg.out) / "train_state" / cfg.component / "metrics.jsonl"  # written by rank 0
    return json.loads(log.read_text().splitlines()[-1]) if log.is_file() else {}
