"""One generic training loop for the tokenizer, the backbone and the diffusion decoder.

``train(TrainConfig(...))`` builds (or reopens) the world model in ``out``, trains one component
on windows of an episode store and writes, every ``save_every`` steps, the whole model
(``config.json`` + ``model.safetensors``) plus a train state that resumes exactly: the same
batches (a step-indexed sampler), the same random masks and noise (a step-seeded generator),
the same optimizer moments and RNG states.

Under Ray Train (:mod:`wfm_sim.training.distributed`) the same loop runs on every worker:
each takes its slice of the global batch and gradients are averaged with ``all_reduce``
before the optimizer step (what DDP does), and rank 0 evaluates and saves.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler
from tqdm.auto import tqdm

from wfm_sim import checkpoint as ckpt
from wfm_sim.config import arg
from wfm_sim.datasets.split import ensure_split, load_split
from wfm_sim.datasets.store import EpisodeReader, StoreError
from wfm_sim.device import resolve_device
from wfm_sim.models import rng
from wfm_sim.models.presets import preset, with_tokenizer
from wfm_sim.models.text import TEXT_FOLDER, TextEncoder
from wfm_sim.models.world_model import FORMAT, ActionSpec, WorldModel
from wfm_sim.records import LossAndLogs, host_logs
from wfm_sim.training.state import load_train_state, save_train_state
from wfm_sim.training.tasks import HEADS, TASKS, frozen_except, lr_at


@dataclass(frozen=True)
class TrainConfig:
    """Flags of ``wfm-sim train``."""

    component: str = arg(hidden=True)
    """'tokenizer', 'backbone' or 'decoder' (train them in this order); or 'heads': refit a trained
    backbone's reward / termination / success heads alone, its trunk frozen."""
    data: str
    """Episode store (zarr) to train on."""
    out: str
    """Model folder: created from ``preset`` on first use, updated in place afterwards."""
    preset: str = "small"
    """Model size when creating the folder: tiny, tiny-k4, small, small-mv, rl, rl-k4, base, large."""
    steps: int = arg(2000, min=1)
    """Optimizer steps (in total, counting those of a resumed run)."""
    batch_size: int = arg(16, min=1)
    """Windows per step."""
    lr: float = arg(3e-4, min=0, strict=True)
    """Peak learning rate (linear warm-up, cosine decay to 10%)."""
    weight_decay: float = arg(0.01, min=0)
    warmup: int = arg(100, min=0)
    """Warm-up steps."""
    grad_clip: float = arg(1.0, min=0, strict=True)
    """Gradient-norm clip."""
    device: str = "auto"
    """auto, cpu, cuda, cuda:1 ..."""
    precision: str = "auto"
    """'auto' (bf16 autocast on CUDA and bf16-capable CPUs), 'bf16' or 'fp32'."""
    compile: bool = False
    """torch.compile the component's step (worth it on GPU; costs ~20 s of compile on CPU)."""
    num_workers: int = arg(1, min=0)
    """DataLoader workers."""
    eval_every: int = arg(250, min=1)
    """Held-out evaluation every this many steps."""
    eval_batches: int = arg(4, min=1)
    """Held-out batches per evaluation."""
    save_every: int = arg(250, min=1)
    """Checkpoint (model + train state) every this many steps."""
    seed: int = arg(0, min=0)
    resume: bool = False
    """Continue from the folder's train state."""
    val_fraction: float = arg(0.1, min=0)
    """Share of the store's episodes held out (drawn once, kept in the folder's split.json)."""
    progress: bool = True
    tokenizer_from: str | None = None
    """When creating ``out``: take the tokenizer (weights and config) from this model folder
    (e.g. one trained on other recordings of the same simulator; its cameras must include ours)."""
    cameras: tuple[str, ...] | None = arg(None, names=True)
    """When creating ``out``: the cameras the model sees (a subset of the store's; default all)."""
    text_encoder: str | None = None
    """When creating ``out``: make a text-conditioned model with this T5 encoder ('tiny' or a
    local T5 folder), saved into ``out/text_encoder``; the store must hold scene captions."""
    ray_workers: int = 0
    """> 0: data-parallel on Ray Train with this many workers."""
    reward_ensemble: int | None = arg(None, min=1)
    """heads / a new backbone: give the model this many extra reward heads (an ensemble whose
    spread is the uncertainty RL penalises; ``--uncertainty ensemble``). Existing heads keep their
    weights; new members start from their own random initialisation."""

    def __post_init__(self):
        if self.component not in TASKS:
            raise ValueError(f"component must be one of {tuple(TASKS)}, got {self.component!r}")
        if self.steps < 1 or not 1 <= self.batch_size <= 65536:
            raise ValueError(f"steps must be >= 1 and batch-size in [1, 65536]; got {self.steps} and {self.batch_size}")


class NonFiniteLossError(RuntimeError):
    """Training met a NaN or infinite loss or gradient and stopped before updating the weights."""


class StepSampler(Sampler):
    """Batches as a pure function of the step: epoch permutations seeded by ``seed + epoch``.

    Rank ``r`` of ``world`` takes slice r of each global batch of ``batch * world`` indices.
    """

    def __init__(self, n: int, batch: int, seed: int, start_step: int, steps: int, rank: int = 0, world: int = 1):
        self.n, self.batch, self.seed, self.start, self.steps = n, batch, seed, start_step, steps
        self.rank, self.world = rank, world

    def indices(self, step: int) -> list[int]:
        g = self.batch * self.world
        per_epoch = max(1, self.n // g)
        epoch, i = divmod(step, per_epoch)
        perm = np.random.default_rng(self.seed + epoch).permutation(self.n)
        if self.n < g:
            perm = np.resize(perm, g)
        chunk = perm[i * g : (i + 1) * g]
        return chunk[self.rank * self.batch : (self.rank + 1) * self.batch].tolist()

    def __iter__(self):
        for step in range(self.start, self.steps):
            yield self.indices(step)

    def __len__(self) -> int:
        return max(0, self.steps - self.start)


def config_for_data(preset_name: str, data: str, name: str = "", cameras: tuple[str, ...] | None = None):
    """A preset's config shaped to a store: its cameras (or the subset ``cameras``), action space, fps and extras."""
    r = EpisodeReader(data)
    if cameras:
        missing = [c for c in cameras if c not in r.cameras]
        if missing:
            raise StoreError(f"{data} has no camera(s) {missing}; it has {list(r.cameras)}")
    a = r.action_space
    if a["type"] == "box":
        action = ActionSpec("box", dim=a["shape"][0], low=tuple(a["low"]), high=tuple(a["high"]))
    else:
        action = ActionSpec("discrete", dim=1, low=(), high=(), n=a["n"])
    size = preset(preset_name).tokenizer.image_size
    if size != r.image_size:
        raise StoreError(f"{data} has {r.image_size}px frames but preset {preset_name!r} expects {size}px")
    cfg = preset(preset_name, cameras=tuple(cameras) if cameras else r.cameras, action=action, success_head="success" in r.extras,
                 fps=r.fps, name=name, source_env=str(r.attrs.get("source_env", "")))
    return replace(cfg, backbone=replace(cfg.backbone, reward_scale=reward_scale(r)))


def reward_scale(reader: EpisodeReader) -> float:
    """The data's max |reward| (rewards are regressed in units of it)."""
    stats = reader.attrs.get("stats", {}).get("reward")
    return float(max(abs(stats["min"][0]), abs(stats["max"][0]), 1e-3)) if stats else 1.0


def with_reward_ensemble(model: WorldModel, k: int, seed: int = 0) -> WorldModel:
    """``model`` with ``k`` extra reward heads: every existing weight kept (members it already
    has included), new members freshly initialised from ``seed``."""
    cfg = replace(model.cfg, backbone=replace(model.cfg.backbone, reward_ensemble=k))
    torch.manual_seed(seed)
    fresh = WorldModel(cfg)
    state = fresh.state_dict()
    state.update({n: v for n, v in model.state_dict().items() if n in state and v.shape == state[n].shape})
    fresh.load_state_dict(state)
    fresh.trained = model.trained
    return fresh.setup(str(next(model.parameters()).device), model.precision)


def open_model(cfg: TrainConfig) -> WorldModel:
    """The model in ``cfg.out`` (created from the preset and the data on first use), built once
    with its final config: a backbone trained afresh regresses rewards in units of this data's
    scale, so its config carries that scale from construction on."""
    out = Path(cfg.out)
    if (out / "config.json").is_file():
        model_cfg = WorldModel.read_config(out)
        r = EpisodeReader(cfg.data)
        missing = [c for c in model_cfg.cameras if c not in r.cameras]
        if missing:
            raise StoreError(f"{cfg.data} lacks camera(s) {missing} that the model in {out} uses")
        a = r.action_space
        if a["type"] == "box" and a["shape"][0] != model_cfg.action.dim:
            raise StoreError(f"{cfg.data} has {a['shape'][0]}-d actions; the model in {out} takes {model_cfg.action.dim}-d")
        fresh_backbone = cfg.component == "backbone" and not (cfg.resume and _has_state(cfg))
        if fresh_backbone:
            model_cfg = replace(model_cfg, backbone=replace(model_cfg.backbone, reward_scale=reward_scale(r)))
        model = WorldModel.from_pretrained(out, device=cfg.device, precision=cfg.precision, config=model_cfg)
        if cfg.reward_ensemble is not None and cfg.reward_ensemble != model_cfg.backbone.reward_ensemble:
            if cfg.component not in (HEADS, "backbone"):
                raise ValueError(f"--reward-ensemble changes the backbone's heads: use it with `train heads` or "
                                 f"`train backbone`, not `train {cfg.component}`")
            model = with_reward_ensemble(model, cfg.reward_ensemble, cfg.seed)
        return model
    torch.manual_seed(cfg.seed)
    model_cfg = config_for_data(cfg.preset, cfg.data, out.name, cfg.cameras)
    if cfg.reward_ensemble is not None:
        model_cfg = replace(model_cfg, backbone=replace(model_cfg.backbone, reward_ensemble=cfg.reward_ensemble))
    if cfg.text_encoder is not None:
        if "caption" not in EpisodeReader(cfg.data).extras:
            raise StoreError(f"{cfg.data} holds no scene captions to train a text-conditioned model on; record it "
                             "with `wfm-sim collect ... --captions`")
        encoder = TextEncoder.named(cfg.text_encoder)
        model_cfg = replace(model_cfg, backbone=replace(model_cfg.backbone, text_dim=encoder.dim))
        out.mkdir(parents=True, exist_ok=True)
        encoder.save_pretrained(out / TEXT_FOLDER)
        torch.manual_seed(cfg.seed)
    if cfg.tokenizer_from is None:
        model = WorldModel(model_cfg)
        model.trained = ()
        return model.setup(cfg.device, cfg.precision)
    donor = WorldModel.from_pretrained(cfg.tokenizer_from, device="cpu", precision="fp32")
    if not set(model_cfg.cameras) <= set(donor.cfg.cameras):  # the tokenizer is shared by all views
        raise StoreError(f"--tokenizer-from {cfg.tokenizer_from} learned cameras {list(donor.cfg.cameras)}; the new "
                         f"model sees {list(model_cfg.cameras)}")
    model = WorldModel(with_tokenizer(model_cfg, donor.cfg.tokenizer))
    model.tokenizer.load_state_dict(donor.tokenizer.state_dict())
    model.trained = ("tokenizer",)
    return model.setup(cfg.device, cfg.precision)


def _trained(out: Path) -> tuple[str, ...]:
    """The components a model folder's weights hold trained (none without a model)."""
    if not (out / "config.json").is_file():
        return ()

    trained = ckpt.read_json(out / "config.json", FORMAT).get("trained")
    return ("tokenizer", "backbone", "decoder") if trained is None else tuple(trained)  # no record: older folders, trained


def _has_state(cfg: TrainConfig) -> bool:
    return (Path(cfg.out) / "train_state" / cfg.component / "state.json").is_file()


def train(cfg: TrainConfig, rank: int = 0, world: int = 1, allreduce=None) -> dict:
    """Train one component. Returns the last logs (and eval metrics, when any ran)."""
    out = Path(cfg.out)
    device = resolve_device(cfg.device)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file; a model is a folder (created on first use)")
    if cfg.resume and not _has_state(cfg):
        raise ValueError(f"--resume: {out} holds no saved {cfg.component} train state "
                         f"({out / 'train_state' / cfg.component / 'state.json'}); start without --resume")
    if cfg.component == HEADS and "backbone" not in _trained(out):
        raise ValueError(f"train heads refits a trained backbone's reward / termination / success heads: {out} holds "
                         "no trained backbone (train the backbone first, or copy a model folder there)")
    EpisodeReader(cfg.data).check_values()  # NaN/inf actions or rewards would train a NaN model
    model = open_model(cfg)
    split = ensure_split(out, cfg.data, cfg.val_fraction, cfg.seed) if rank == 0 else None
    if split is None:  # other ranks read what rank 0 wrote
        split = _wait_for_split(out, cfg.data)
    cache = out / "train_state" / "backbone" if cfg.component in ("backbone", HEADS) else None  # heads read it too
    task = TASKS[cfg.component](model, cfg.data, split, folder=out, cache_folder=cache,
                                progress=cfg.progress and rank == 0)
    frozen_except(model, cfg.component)
    module = task.module
    if allreduce is not None:
        allreduce.broadcast(module)
    params = [p for p in module.parameters() if p.requires_grad]
    opt = make_optimizer(params, cfg)
    state_dir = out / "train_state" / cfg.component
    step, elapsed0 = 0, 0.0
    if cfg.resume and (state_dir / "state.json").is_file():
        step, extra = load_train_state(state_dir, module, opt)
        if step > cfg.steps:
            raise ValueError(f"{state_dir / 'state.json'} is at step {step}, past --steps {cfg.steps} (steps count in "
                             "total, resumed ones included): give --steps above it, or check the state is this run's")
        fused(opt)  # a state saved by another optimizer build keeps its moments, runs fused
        elapsed0 = float(extra.get("elapsed_s", 0.0))
    train_ds = task.dataset("train")
    sampler = StepSampler(len(train_ds), cfg.batch_size, cfg.seed, step, cfg.steps, rank, world)
    loader = DataLoader(train_ds, batch_sampler=sampler, num_workers=cfg.num_workers, collate_fn=task.collate,
                        persistent_workers=False)
    val_batches = _val_batches(task, cfg) if rank == 0 else []
    run_step = torch.compile(task.loss) if cfg.compile else task.loss
    log_path = state_dir / "metrics.jsonl"
    state_dir.mkdir(parents=True, exist_ok=True)
    if log_path.is_file():  # lines logged after the state resumed from were lost with the run: drop them
        _truncate_log(log_path, step)
    bar = tqdm(total=cfg.steps, initial=step, desc=f"train {cfg.component}", disable=not (cfg.progress and rank == 0))
    last: dict = {}
    t0, seen = time.perf_counter(), 0
    stop = _StopFlag()
    saved_step = step if _has_state(cfg) else None
    health = Health(device)
    for batch in loader:
        for group in opt.param_groups:
            group["lr"] = lr_at(step, cfg.lr, cfg.warmup, cfg.steps)
        gen = rng.key(cfg.seed * 1_000_003 + step * world + rank, 0, device)  # this step's masks and noise
        res, grad_norm = train_step(run_step, batch.to(device), gen, opt, params, cfg.grad_clip, model.autocast,
                                    allreduce)
        step += 1
        health.record(step, res.loss, grad_norm)
        seen += batch.reward.shape[0] * world
        evaluating = rank == 0 and (step % cfg.eval_every == 0 or step == cfg.steps)
        saving = rank == 0 and (step % cfg.save_every == 0 or step == cfg.steps or stop.requested)
        if not (step % 10 == 0 or step == cfg.steps or evaluating or saving or stop.requested):
            continue  # nothing to read on the host: the next step starts without waiting
        # The log interval: the one point where the host reads the device.
        scalars = host_logs({"loss": res.loss, "grad_norm": grad_norm, **res.logs})
        health.check(out, saved_step, bar, stop)
        rate = seen / (time.perf_counter() - t0)
        last = {"step": step, "loss": scalars.pop("loss"), "grad_norm": scalars.pop("grad_norm"),
                "lr": opt.param_groups[0]["lr"], "samples_per_s": rate,
                "elapsed_s": elapsed0 + time.perf_counter() - t0, "time": time.time(), **scalars}
        if rank == 0:
            bar.update(step - bar.n)
            bar.set_postfix(loss=f"{last['loss']:.4f}", sps=f"{rate:.1f}")
            if evaluating:
                last.update(evaluate(task, val_batches, device))
            if step % 10 == 0 or step == cfg.steps or evaluating:
                with open(log_path, "a") as f:
                    f.write(json.dumps({"component": cfg.component, **last}) + "\n")
            if saving:
                _save(model, module, opt, step, state_dir, out, cfg, last["elapsed_s"])
                saved_step = step
        if stop.requested:
            last["stopped_early"] = True
            break
    stop.restore()
    bar.close()
    if not last:  # resumed at --steps: a finished run says so instead of printing {}
        last = {"step": step, "done": f"already trained to step {step} of --steps {cfg.steps}; nothing to do"}
    return last


def make_optimizer(params: list, cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW, fused: one kernel for all parameters, and it can skip a step on the device."""
    return fused(torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.95), fused=True))


def fused(opt: torch.optim.Optimizer) -> torch.optim.Optimizer:
    for group in opt.param_groups:  # load_state_dict restores a saved group's flags: reassert them
        group["fused"], group["foreach"] = True, False
    return opt


def train_step(run_step, batch, gen, opt, params, grad_clip: float, autocast, allreduce=None
               ) -> tuple[LossAndLogs, torch.Tensor]:
    """One optimizer step that never waits on the device.

    A non-finite loss or gradient norm is not checked here: the fused optimizer skips the
    update on the device (``found_inf``, as mixed-precision loss scaling does) and
    :class:`Health` reports it at the next log interval. Returns the loss and logs, and the
    gradient norm before clipping.
    """
    with autocast():
        res = run_step(batch, gen)
    opt.zero_grad(set_to_none=True)
    res.loss.backward()
    if allreduce is not None:
        allreduce.average_gradients(params)
    grad_norm = torch.nn.utils.clip_grad_norm_(params, grad_clip)
    finite = torch.isfinite(res.loss.detach()) & torch.isfinite(grad_norm)
    opt.found_inf = (~finite).float()
    opt.step()
    return res, grad_norm


class Health:
    """The first non-finite step, tracked on the device and read at the log interval."""

    def __init__(self, device):
        self.first = torch.full((), -1, dtype=torch.long, device=device)
        self.loss = torch.zeros((), device=device)
        self.norm = torch.zeros((), device=device)

    def record(self, step: int, loss: torch.Tensor, grad_norm: torch.Tensor) -> None:
        loss, grad_norm = loss.detach().float(), grad_norm.detach().float()
        new = (self.first < 0) & ~(torch.isfinite(loss) & torch.isfinite(grad_norm))
        self.first = torch.where(new, step, self.first)
        self.loss = torch.where(new, loss, self.loss)
        self.norm = torch.where(new, grad_norm, self.norm)

    def check(self, out: Path, saved_step, bar, stop) -> None:
        first, loss, norm = torch.stack((self.first.float(), self.loss, self.norm)).cpu().tolist()
        if first >= 0:
            bar.close()
            stop.restore()
            raise NonFiniteLossError(f"step {int(first)}: loss {loss}, gradient norm {norm}; its update was "
                                     f"skipped, training stopped, and {out} keeps its last checkpoint (step {saved_step})")


def _wait_for_split(out: Path, data: str, timeout: float = 120.0):
    deadline = time.time() + timeout
    while True:
        try:
            return load_split(out, data)
        except StoreError:
            if time.time() > deadline:
                raise
            time.sleep(0.2)


class _StopFlag:
    """SIGTERM / SIGINT ask the loop to finish its step, checkpoint and return (preemption-safe)."""

    def __init__(self):
        import signal
        import threading

        self.requested = False
        self._old = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._old[sig] = signal.signal(sig, self._handle)

    def _handle(self, signum, frame):
        self.requested = True

    def restore(self):
        import signal

        for sig, handler in self._old.items():
            signal.signal(sig, handler)


def _val_batches(task, cfg: TrainConfig) -> list:
    try:
        val = task.dataset("val")
    except StoreError:
        return []
    n = min(len(val), cfg.eval_batches * cfg.batch_size)
    idx = np.linspace(0, len(val) - 1, n).astype(int)  # a fixed, spread-out held-out sample
    return [task.collate([val[int(i)] for i in idx[j : j + cfg.batch_size]]) for j in range(0, n, cfg.batch_size)]


def _truncate_log(path: Path, step: int) -> None:
    """Keep the lines of ``metrics.jsonl`` up to ``step`` (a resumed run logs the later ones again)."""
    lines = path.read_text().splitlines()
    keep = [x for x in lines if x.strip() and json.loads(x).get("step", 0) <= step]
    if len(keep) != len(lines):
        ckpt.atomic_write_bytes(path, "".join(x + "\n" for x in keep).encode())


@torch.no_grad()
def evaluate(task, batches: list, device) -> dict:
    if not batches:
        return {}
    task.module.eval()
    sums: dict[str, float] = {}
    for i, b in enumerate(batches):
        gen = rng.key(10_000 + i, 0, device)
        with task.model.autocast():
            logs = task.evaluate(b.to(device), gen)
        for k, v in logs.items():
            sums[k] = sums.get(k, 0.0) + v / len(batches)
    task.module.train()
    out = {f"val/{k}": v for k, v in sums.items()}
    main = {"tokenizer": "l1", "backbone": "ce_sequential", "decoder": "edm_mse", HEADS: "heads_loss"}[task.name]
    out["val/loss"] = sums.get(main, float("nan"))
    return out


def _save(model, module, opt, step, state_dir, out, cfg, elapsed: float) -> None:
    save_component(model, out, "backbone" if cfg.component == HEADS else cfg.component)
    save_train_state(state_dir, module, opt, step, {"config": asdict(cfg), "elapsed_s": elapsed})


def save_component(model: WorldModel, out: Path, component: str) -> None:
    """Write ``component``'s weights and config section into the model folder, keeping the other
    components as they are on disk: trainers of different components may share one folder."""
    import fcntl

    out.mkdir(parents=True, exist_ok=True)
    with open(out / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (out / "model.safetensors").is_file():
            model.trained = tuple(sorted(set(model.trained or ()) | {component}))
            model.save_pretrained(out)
            return
        state = ckpt.load_tensors(out / "model.safetensors")
        prefix = component + "."
        mine = {k: v for k, v in model.state_dict().items() if k.startswith(prefix)}
        bad = [k for k, v in mine.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
        if bad:
            raise NonFiniteLossError(f"{component} weights {bad[:3]} hold NaN or inf; {out} keeps its last checkpoint")
        state = {k: v for k, v in state.items() if not k.startswith(prefix)} | mine
        meta = ckpt.read_json(out / "config.json", FORMAT)
        meta["config"][component] = ckpt.to_dict(getattr(model.cfg, component))
        if "trained" in meta:  # folders saved before the record existed stay without it (taken as trained)
            meta["trained"] = sorted(set(meta["trained"]) | {component})
        ckpt.save_tensors(out / "model.safetensors", state, {"format": FORMAT})
        ckpt.atomic_write_json(out / "config.json", meta)
