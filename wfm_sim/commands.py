"""Every ``wfm-sim`` command as a frozen config and the function that runs it.

A command's config is the single source of its flags, defaults and help (the command line is
generated from it: :mod:`wfm_sim.cli_args`), and the same object runs it from Python::

    from wfm_sim.commands import DemoCommand, run_demo_command
    run_demo_command(DemoCommand(steps=8))

Library configs are nested, never restated: ``score`` holds a
:class:`~wfm_sim.evaluation.scoring.ScoreConfig`, ``train tokenizer`` is a
:class:`~wfm_sim.training.loop.TrainConfig`. A run function returns what the command prints (a
dict is printed as one JSON line).
"""

from __future__ import annotations

import json
import shutil
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from wfm_sim.checkpoint import atomic_write_json
from wfm_sim.config import arg
from wfm_sim.datasets import EpisodeReader, filter_store, merge_stores, repair_store
from wfm_sim.datasets.export import export_lerobot
from wfm_sim.datasets.health import inspect_store
from wfm_sim.datasets.importers import import_lerobot, import_robomimic
from wfm_sim.datasets.inspect import dataset_sheet
from wfm_sim.datasets.split import load_split
from wfm_sim.datasets.store import StoreError, open_root
from wfm_sim.demo import run_demo
from wfm_sim.envs.gym_source import GymSpec
from wfm_sim.envs.sources import SOURCES, get_source
from wfm_sim.envs.spaces import model_action_space
from wfm_sim.evaluation.counterfactual import (
    CounterfactualConfig,
    counterfactual,
    counterfactual_summary,
    write_counterfactual,
)
from wfm_sim.evaluation.fidelity import EvalConfig, evaluate
from wfm_sim.evaluation.policy_sets import graded_set
from wfm_sim.evaluation.report import summary_table, write_report
from wfm_sim.evaluation.score_report import ranking_table, write_score_report
from wfm_sim.evaluation.scoring import (
    ScoreConfig,
    check_rig,
    make_starts,
    score_policies,
    twin_source,
)
from wfm_sim.models import WorldModel
from wfm_sim.models.cosmos_weights import load_cosmos_tokenizer, reconstruct
from wfm_sim.models.world_model import resolve_pretrained
from wfm_sim.policies import ConvPolicy, PlanPolicy, make_policy
from wfm_sim.policies.registry import SCRIPTED
from wfm_sim.rl import train_policy
from wfm_sim.rl.dyna import run_dyna
from wfm_sim.rl.imagination import ImaginationRLConfig
from wfm_sim.rl.planning import PlanConfig, plan_and_execute
from wfm_sim.rollout import PolicySpec, RolloutPool, RolloutRequest
from wfm_sim.rollout.record import record
from wfm_sim.synthetic.generate import GenerateConfig, generate
from wfm_sim.synthetic.quality import score_dataset, summary_lines, write_quality
from wfm_sim.synthetic.study import StudyConfig, run_study, study_table
from wfm_sim.training.loop import train
from wfm_sim.viz import read_mp4, write_mp4

DECODERS, MODES = ("token", "diffusion"), ("sequential", "parallel")


def _rounded(d: dict, digits: int = 2) -> dict:
    return {k: round(v, digits) if isinstance(v, float) else v for k, v in d.items()}


# --------------------------------------------------------------------------- collect

@dataclass(frozen=True)
class CollectCommand:
    """Record episodes from a real simulator into a zarr store."""

    source: str = arg(positional=True, metavar="SOURCE")
    """Simulator to record (``wfm-sim collect --help`` lists them), or gym:<EnvId> for any
    registered Gymnasium env that renders rgb_array, e.g. gym:Reacher-v5."""
    episodes: int = arg(min=1)
    """Episodes to record: seeds --seed .. --seed+N-1; episodes the store holds already are skipped."""
    out: str = arg()
    """Output store, e.g. data/driving.zarr."""
    policy: str | None = None
    """random, driver (CarRacing), expert or expert-clean (Meta-World; clean: no exploration noise),
    road, a .npy plan, a ConvPolicy folder or module:callable (default: the source's scripted one)."""
    size: int = arg(64, min=1)
    """Frame side in pixels."""
    max_steps: int | None = arg(None, min=1)
    """Steps per episode (default: per source)."""
    seed: int = arg(0, min=0)
    """First episode seed."""
    captions: bool = False
    """Also record a scene caption id per step (CarRacing), for text-conditioned models."""
    cameras: tuple[str, ...] | None = arg(None, names=True)
    """gym: sources: MuJoCo views, comma-separated (the model's camera names, free, free_az<deg>[_el<deg>])."""
    fps: float | None = arg(None, min=0, strict=True)
    """gym: sources: recorded frames/s (default: render_fps / repeat)."""
    action_repeat: int | None = arg(None, min=1)
    """gym: sources: simulator steps per recorded step."""
    info: tuple[str, ...] | None = arg(None, names=True)
    """gym: sources: step-info fields to store, comma-separated (a field named success is the success flag)."""
    env_kwargs: dict | None = None
    """gym: sources: gym.make keyword arguments as a JSON object."""
    progress: bool = True


def run_collect(cfg: CollectCommand) -> dict:
    gym_flags = {"--cameras": cfg.cameras, "--fps": cfg.fps, "--action-repeat": cfg.action_repeat,
                 "--info": cfg.info, "--env-kwargs": cfg.env_kwargs}
    source = cfg.source
    if source.startswith("gym:") and len(source) > 4:
        spec = GymSpec.parse(source)
        spec = GymSpec(spec.env_id, tuple(cfg.cameras or spec.cameras), cfg.action_repeat or spec.repeat,
                       cfg.fps or spec.fps, tuple(cfg.info or spec.info), cfg.env_kwargs or spec.kwargs,
                       cfg.max_steps or spec.max_steps)
        source = spec.name()
    elif source.split("?")[0] not in SOURCES:
        raise ValueError(f"expected one of {sorted(SOURCES)} or gym:<EnvId>, got {source!r}")
    elif any(v is not None for v in gym_flags.values()):
        given = [k for k, v in gym_flags.items() if v is not None]
        raise ValueError(f"{', '.join(given)} apply to gym:<EnvId> sources only; {source} has a fixed rig and rate")
    if cfg.captions:
        source = get_source(source).with_captions().name  # fails with the sources that cannot caption
    with no_empty_store_left(cfg.out):
        return _rounded(record(source, cfg.out, cfg.episodes, policy=cfg.policy, size=cfg.size,
                               max_steps=cfg.max_steps, seed=cfg.seed, progress=cfg.progress))


# --------------------------------------------------------------------------- dataset

@dataclass(frozen=True)
class DatasetInfo:
    """Print a summary of a store; optionally write a PNG contact sheet."""

    path: str = arg(positional=True)
    """The store."""
    sheet: str | None = None
    """Write a contact sheet PNG here."""
    sheet_episodes: int = arg(3, min=1)
    """Episodes shown on the sheet."""


def run_dataset_info(cfg: DatasetInfo) -> str:
    reader = EpisodeReader(cfg.path)
    text = json.dumps(reader.summary(), indent=2)
    if cfg.sheet:
        text += f"\ncontact sheet: {dataset_sheet(reader, cfg.sheet, episodes=cfg.sheet_episodes)}"
    return text


@dataclass(frozen=True)
class DatasetCheck:
    """Validate a store: structure, committed episodes, NaN/inf actions and rewards. Exit 0 when
    consistent, 1 when not."""

    path: str = arg(positional=True)
    """The store."""
    repair: bool = False
    """Drop provably partial rows (a crashed writer's unfinished episode); never committed ones."""
    keep_episodes: int | None = arg(None, min=0, metavar="K")
    """With --repair: keep only the first K episodes of an inconsistent store (destructive)."""


def run_dataset_check(cfg: DatasetCheck) -> int:
    import sys

    if cfg.repair or cfg.keep_episodes is not None:
        if not cfg.repair:
            raise ValueError("--keep-episodes removes committed episodes: pass --repair with it")
        print(json.dumps(repair_store(cfg.path, cfg.keep_episodes), indent=2))
        return 0
    health = inspect_store(open_root(cfg.path), cfg.path, values=True)
    print(json.dumps(health.summary(), indent=2))
    if not health.ok:
        print(f"wfm-sim dataset check: {health.refusal()}", file=sys.stderr)
        return 1
    if not health.clean:
        print(f"wfm-sim dataset check: {cfg.path} holds a crashed writer's unfinished episode (invisible to readers); "
              "the next writer or --repair drops it", file=sys.stderr)
    return 0


@dataclass(frozen=True)
class DatasetMerge:
    """Append the episodes of several stores (e.g. one per Ray actor) to one."""

    sources: tuple[str, ...] = arg(positional=True)
    """Stores to merge, in order."""
    out: str = arg()
    """Destination store (created or appended to)."""
    cameras: tuple[str, ...] | None = None
    """Keep only these cameras, in this order (e.g. CAM_FRONT of a 4-camera rig)."""
    source: str | None = None
    """With --cameras: the collect source those cameras are (e.g. carracing-front), so that later
    collect runs append to the result."""
    progress: bool = True


def run_dataset_merge(cfg: DatasetMerge) -> dict:
    added = merge_stores(list(cfg.sources), cfg.out, progress=cfg.progress, cameras=cfg.cameras, source=cfg.source)
    r = EpisodeReader(cfg.out)
    return {"added_episodes": added, "episodes": r.num_episodes, "frames": r.num_steps}


@dataclass(frozen=True)
class DatasetImport:
    """Import a team's own recordings: a robomimic-style HDF5 file (data/demo_N/{actions, rewards,
    dones, obs/<camera>_image}) or a local LeRobot dataset folder (v2.x or v3.0). Episodes the
    store holds already are skipped."""

    format: str = arg(positional=True, choices=("robomimic", "lerobot"))
    """The file format."""
    path: str = arg(positional=True)
    """The .hdf5 file or the LeRobot folder."""
    out: str = arg()
    """Destination store (created or completed)."""
    cameras: tuple[str, ...] | None = arg(None, names=True)
    """Cameras to keep, comma-separated (default: all)."""
    size: int = arg(64, min=1)
    """Frame side in pixels after resizing."""
    fps: float | None = arg(None, min=0, strict=True)
    """robomimic: control rate, when the file does not say it."""
    progress: bool = True


def run_dataset_import(cfg: DatasetImport) -> dict:
    cams = None if cfg.cameras is None else list(cfg.cameras)
    if cfg.format == "robomimic":
        stats = import_robomimic(cfg.path, cfg.out, cams, cfg.size, cfg.fps, progress=cfg.progress)
    else:
        if cfg.fps is not None:
            raise ValueError("--fps applies to robomimic files; a LeRobot dataset gives its own (meta/info.json)")
        stats = import_lerobot(cfg.path, cfg.out, cams, cfg.size, progress=cfg.progress)
    r = EpisodeReader(cfg.out)
    return {**_rounded(stats), "store_episodes": r.num_episodes, "cameras": list(r.cameras)}


@dataclass(frozen=True)
class DatasetExport:
    """Export a store (recorded, imported or generated) as a LeRobot dataset (codebase v3.0: parquet,
    one H.264 mp4 per camera, meta/info.json, stats) that LeRobot's ``LeRobotDataset`` loads
    unchanged. Built in OUT.partial and renamed when complete."""

    format: str = arg(positional=True, choices=("lerobot",))
    """The dataset format."""
    path: str = arg(positional=True)
    """The store."""
    out: str = arg()
    """The dataset folder to create (refused if it exists)."""
    task: str | None = None
    """Task string of every episode (default: the store's source, e.g. carracing-4cam)."""
    fps: int | None = arg(None, min=0, strict=True)
    """Integer frame rate, when the store's is not an integer."""
    crf: int = arg(18, min=0)
    """H.264 quality: 0 is lossless in YUV, higher is smaller and blurrier (at most 51)."""
    frames_per_file: int = arg(20_000, min=1)
    """Rows per data and video file before the next file starts."""
    progress: bool = True


def run_dataset_export(cfg: DatasetExport) -> dict:
    return export_lerobot(cfg.path, cfg.out, task=cfg.task, fps=cfg.fps, crf=cfg.crf,
                          frames_per_file=cfg.frames_per_file, progress=cfg.progress)


# --------------------------------------------------------------------------- train

def run_train(cfg) -> dict:
    if cfg.ray_workers:
        from wfm_sim.training.distributed import train_distributed

        return _rounded(train_distributed(cfg, workers=cfg.ray_workers, use_gpu=cfg.device.startswith("cuda")), 5)
    return _rounded(train(cfg), 5)


@dataclass(frozen=True)
class TrainPolicyCommand:
    """An actor-critic trained only inside a world model (reinforcement learning in imagination)."""

    rl: ImaginationRLConfig
    resume: bool = False
    """Continue from the run folder's train state."""


def run_train_policy(cfg: TrainPolicyCommand) -> str:
    last = train_policy(cfg.rl, resume=cfg.resume)
    return (json.dumps(_rounded(last, 4)) + f"\npolicy: {cfg.rl.out}/policy (score it: wfm-sim score --model "
            f"{cfg.rl.model} --policies {cfg.rl.out}/policy random --real)")


# ------------------------------------------------------------------------ evaluate

@dataclass(frozen=True)
class EvaluateCommand:
    """Open-loop fidelity against real episodes (JSON, plot, side-by-side mp4); with
    --counterfactual, the counterfactual report against the real twin instead: branches of
    different actions from the same real states, played in both worlds."""

    model: str = arg(positional=True)
    """Shipped model name or model folder."""
    data: str | None = None
    """Held-out episode store of the model's simulator (open-loop fidelity)."""
    eval: EvalConfig = field(default_factory=EvalConfig)
    counterfactual: bool = False
    """Branch the real twin into several action sequences from the same real states and play
    the same branches in imagination: action discrimination, spread, inverse dynamics, events."""
    cf: CounterfactualConfig = field(default_factory=CounterfactualConfig)
    source: str | None = None
    """With --counterfactual: the real simulator (default: the shipped model's twin)."""
    device: str = "auto"
    precision: str = "auto"
    out: str | None = None
    """Report folder (default: MODEL/eval, or MODEL/counterfactual)."""
    progress: bool = True


def run_evaluate(cfg: EvaluateCommand) -> str:
    if cfg.counterfactual == (cfg.data is not None):
        raise ValueError("evaluate needs either --data STORE (open-loop fidelity) or --counterfactual "
                         "(branches against the real twin), not both")
    model = WorldModel.from_pretrained(cfg.model, device=cfg.device, precision=cfg.precision)
    if cfg.counterfactual:
        source = twin_source(model, cfg.model, cfg.source)
        out = Path(cfg.out or Path(str(cfg.model)) / "counterfactual")
        retire_report(out)
        report = counterfactual(model, source, cfg.cf, progress=cfg.progress)
        report["model"] = str(cfg.model)
        paths = write_counterfactual(report, out, fps=model.cfg.fps / 2)
        return counterfactual_summary(report) + "\nwrote " + ", ".join(str(p) for p in paths.values())
    split = None
    if cfg.eval.split != "all":
        split = load_split(resolve_pretrained(cfg.model), cfg.data)
    out = Path(cfg.out or Path(str(cfg.model)) / "eval")
    retire_report(out)
    report, videos = evaluate(model, cfg.data, cfg.eval, split)
    report["model"] = str(cfg.model)
    paths = write_report(report, videos, out, fps=model.cfg.fps / 2)
    return summary_table(report) + "\nwrote " + ", ".join(str(p) for p in paths.values())


@dataclass(frozen=True)
class ScoreCommand:
    """Play every policy from the same real start states in the world model (K samples) and in its
    real twin; report return and success per policy with 95% CIs, and Pearson, Spearman and MMRV
    between imagined and real across policies."""

    out: str = arg()
    """Report folder (report.json is written last)."""
    model: str = "manipulation"
    """Shipped model name or folder."""
    source: str | None = None
    """The real simulator (default: the shipped model's twin)."""
    policies: tuple[str, ...] = ()
    """random, road, const:A0,A1,..., .npy plans, policy folders (ConvPolicy, train policy),
    module:callable; scripted experts (driver, expert) run in the real simulator only, as references."""
    graded: bool = False
    """Add 9 plans derived from the scripted expert (best to worst)."""
    score: ScoreConfig = field(default_factory=ScoreConfig)
    device: str = "auto"
    precision: str = "auto"
    progress: bool = True


@contextmanager
def no_empty_store_left(out: str | Path):
    """Remove the store ``out`` when the command fails before committing an episode to it, if the
    command created it: a refused command leaves nothing behind."""
    out = Path(out)
    existed = out.exists()
    try:
        yield
    except BaseException:
        if not existed and out.is_dir() and (out / "zarr.json").is_file():
            try:
                empty = EpisodeReader(out).num_episodes == 0
            except StoreError:  # a store whose first episode never committed
                empty = True
            if empty:
                shutil.rmtree(out, ignore_errors=True)
        raise


def retire_report(folder: str | Path) -> None:
    """Rename a previous ``report.json`` in ``folder`` to ``report.previous.json`` before a rerun:
    a rerun killed half-way must not leave the old report looking like its own."""
    old = Path(folder) / "report.json"
    if old.is_file():
        old.replace(old.with_name("report.previous.json"))


def run_score(cfg: ScoreCommand) -> str:
    model = WorldModel.from_pretrained(cfg.model, device=cfg.device, precision=cfg.precision)
    retire_report(cfg.out)
    source, sc = twin_source(model, cfg.model, cfg.source), cfg.score
    policies = {}
    for name in cfg.policies:  # scripted experts (driver, expert) play only in the real simulator, as references
        label = policy_label(name)
        if label in policies:
            raise ValueError(f"--policies name two policies {label!r}; give them distinct names")
        policies[label] = make_policy(name, model_action_space(model.cfg), source=source, camera=model.cfg.cameras[0])
    check_rig(model, source, sc.horizon + (sc.warmup or 0))  # before the real twin records anything
    starts = make_starts(model, source, sc)
    if cfg.graded:
        graded = graded_set(source, starts, sc, model)
        clash = sorted(set(graded) & set(policies))
        if clash:
            raise ValueError(f"--policies {clash} have the names of graded plans; rename them")
        policies.update(graded)
    report = score_policies(model, source, policies, sc, progress=cfg.progress, model_ref=cfg.model, starts=starts)
    paths = write_score_report(report, cfg.out, fps=model.cfg.fps / 2)
    return "\n".join((ranking_table(report), json.dumps({"speed": report["speed"]}),
                      "wrote " + ", ".join(str(p) for p in paths.values())))


def policy_label(name: str) -> str:
    """The name a policy gets in score tables: a folder's name (its run's name for RUN/policy),
    a plan file's name without its suffix, or the name itself for built-ins and entry points."""
    if name.startswith("lerobot:"):
        return "lerobot:" + Path(name[len("lerobot:"):]).name
    p = Path(name)
    if not p.exists():
        return name
    if p.is_dir():
        return p.parent.name if p.name == "policy" and p.parent.name else p.name
    return p.stem


@dataclass(frozen=True)
class PlanCommand:
    """From each real start state, search action sequences with the cross-entropy method in the
    world model; play the chosen plan, a random candidate and the scripted expert in the real twin
    from the same start."""

    out: str = arg()
    """Folder for plan.json."""
    model: str = "manipulation"
    """Shipped model name or folder."""
    source: str | None = None
    """The real simulator (default: the shipped model's twin)."""
    starts: int = arg(5, min=1)
    """Start states (real simulator seeds)."""
    start_seed: int = arg(2_000_000, min=0)
    """First start seed."""
    plan: PlanConfig = field(default_factory=PlanConfig)
    device: str = "auto"
    precision: str = "auto"
    progress: bool = True


def run_plan(cfg: PlanCommand) -> str:
    model = WorldModel.from_pretrained(cfg.model, device=cfg.device, precision=cfg.precision)
    source = twin_source(model, cfg.model, cfg.source)
    check_rig(model, source, cfg.plan.horizon + model.cfg.context_frames - 1)
    seeds = list(range(cfg.start_seed, cfg.start_seed + cfg.starts))
    result = plan_and_execute(model, source, seeds, cfg.plan, progress=cfg.progress)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "plan.json", result)
    return json.dumps(result["mean"], indent=2) + f"\nwrote {out / 'plan.json'}"


@dataclass(frozen=True)
class QualityCommand:
    """Score every episode of a (generated) driving dataset: agreement between neighbouring cameras,
    distance to the real colour palette, drift, token entropy, road curvature and events; per
    dataset against --reference. Writes quality.json and a contact sheet; --min-quality Q --keep
    NEW.zarr copies the episodes scoring >= Q."""

    store: str = arg(positional=True)
    """The store to score (wfm-sim generate output, or real episodes)."""
    reference: str | None = None
    """A store of real episodes of the same rig (recommended)."""
    out: str | None = None
    """Folder for quality.json and quality_sheet.png (default STORE_quality)."""
    min_quality: float | None = arg(None, min=0)
    """Keep episodes with quality >= this (0-1)."""
    keep: str | None = None
    """Store the kept episodes are copied to."""
    progress: bool = True


def run_quality(cfg: QualityCommand) -> str:
    if (cfg.min_quality is None) != (cfg.keep is None):
        raise ValueError("--min-quality and --keep go together: the threshold and the store the kept episodes go to")
    result = score_dataset(cfg.store, reference=cfg.reference, progress=cfg.progress)
    out = Path(cfg.out or str(Path(cfg.store)).rstrip("/").removesuffix(".zarr") + "_quality")
    summary = {"episodes": len(result["episodes"]), "quality": result["dataset"]["quality"],
               **write_quality(result, out, cfg.store)}
    if cfg.min_quality is not None:
        keep = [r["episode"] for r in result["episodes"] if r["quality"] >= cfg.min_quality]
        added = filter_store(cfg.store, cfg.keep, keep, {"min_quality": cfg.min_quality, "reference": cfg.reference},
                             progress=cfg.progress)
        summary |= {"kept": len(keep), "added": added, "keep_store": cfg.keep}
    return "\n".join(summary_lines(result)) + "\n" + json.dumps(summary)


# ------------------------------------------------------------------- imagination

@dataclass(frozen=True)
class DemoCommand:
    """An imagined multi-camera drive with the shipped model: mp4 + PNG + frames/s."""

    model: str = "driving"
    """Shipped model name or folder."""
    steps: int = arg(48, min=1)
    envs: int = arg(2, min=1)
    out: str = "demo"
    seed: int = arg(0, min=0)
    decoder: str = arg("token", choices=DECODERS)
    mode: str = arg("parallel", choices=MODES)
    device: str = "auto"


def run_demo_command(cfg: DemoCommand) -> str:
    resolve_pretrained(cfg.model)
    res = run_demo(cfg.model, steps=cfg.steps, envs=cfg.envs, out=cfg.out, seed=cfg.seed, decoder=cfg.decoder,
                   mode=cfg.mode, device=cfg.device)
    return (f"imagined {res['envs']} x {res['steps']} steps of {cfg.model}: {res['env_steps_per_s']:.1f} env steps/s, "
            f"{res['frames_per_s']:.1f} camera frames/s\nwrote {res['video']} and {res['contact_sheet']}")


@dataclass(frozen=True)
class RolloutCommand:
    """Imagined episodes on Ray workers, streamed into a zarr store."""

    episodes: int = arg(min=1)
    horizon: int = arg(min=1)
    out: str = arg()
    model: str = "driving"
    """Shipped model name or folder."""
    policy: str = "random"
    """random, road (pixel road follower), a .npy plan (T, A), a ConvPolicy folder, or module:callable."""
    workers: int = arg(2, min=1)
    """Model replicas (Ray actors)."""
    envs_per_worker: int = arg(8, min=1)
    gpus_per_worker: float = arg(0.0, min=0)
    """0 = CPU; 0.25 = four replicas per GPU."""
    seed: int = arg(0, min=0)
    decoder: str = arg("token", choices=DECODERS)
    mode: str = arg("parallel", choices=MODES)
    address: str | None = None
    """Ray cluster address ('auto' on a cluster); default: local."""
    progress: bool = True


def _policy_spec(name: str, horizon: int, space=None):
    """A rollout PolicySpec for ``--policy``; fails here, before Ray starts, on a bad policy or one
    whose actions lie outside the model's action ``space``."""
    if name == "random":
        return PolicySpec("random")
    if name in SCRIPTED:
        raise ValueError(f"--policy {name} is a scripted expert that reads the real simulator's state; "
                         "imagined rollouts need a pixel policy (road, a ConvPolicy folder), a plan or random")
    policy = make_policy(name, space, camera="CAM_FRONT") if name != "road" else None
    if isinstance(policy, PlanPolicy):
        if len(policy) < horizon:
            raise ValueError(f"plan {name} has {len(policy)} steps, fewer than --horizon {horizon}")
        if space is not None and hasattr(space, "low"):
            if policy.plan.shape[-1] != space.shape[0]:
                raise ValueError(f"plan {name} has {policy.plan.shape[-1]} action values per step; the model takes "
                                 f"{space.shape[0]}")
            if ((policy.plan < space.low) | (policy.plan > space.high)).any():
                raise ValueError(f"plan {name} leaves the model's action space [{space.low.tolist()}, "
                                 f"{space.high.tolist()}]")
        return PolicySpec("plan", plan=policy.plan)
    if isinstance(policy, ConvPolicy) and Path(name).is_dir():
        return PolicySpec("conv", state=(vars(policy.cfg), policy.state_dict()))
    return PolicySpec("named", name=name)


def run_rollout(cfg: RolloutCommand) -> str:
    # Fail on a bad model or policy before starting Ray.
    space = model_action_space(WorldModel.read_config(resolve_pretrained(cfg.model)))
    spec = _policy_spec(cfg.policy, cfg.horizon, space)
    pool = RolloutPool(cfg.model, workers=cfg.workers, envs_per_worker=cfg.envs_per_worker, num_gpus=cfg.gpus_per_worker,
                       env_kwargs={"decoder": cfg.decoder, "mode": cfg.mode, "max_episode_steps": cfg.horizon},
                       address=cfg.address)
    t0 = time.perf_counter()
    with no_empty_store_left(cfg.out):
        n = pool.run_to_store(RolloutRequest(cfg.episodes, cfg.horizon, seed=cfg.seed, policy=spec), cfg.out,
                              progress=cfg.progress)
    pool.shutdown()
    return (f"wrote {n} imagined episodes ({EpisodeReader(cfg.out).num_steps} steps) to {cfg.out} in "
            f"{time.perf_counter() - t0:.1f} s with {cfg.workers} workers")


@dataclass(frozen=True)
class GenerateCommand:
    """Imagine --episodes episodes of --horizon steps, each started from a real context (--starts:
    your store of real episodes; default: the model's shipped contexts), into a zarr store with
    full provenance. Re-run the same command to complete a killed run: nothing is lost or written
    twice."""

    out: str = arg()
    """Output store."""
    generate: GenerateConfig = field(default_factory=GenerateConfig)
    progress: bool = True


def run_generate(cfg: GenerateCommand) -> dict:
    with no_empty_store_left(cfg.out):
        return _rounded(generate(cfg.generate, cfg.out, progress=cfg.progress))


@dataclass(frozen=True)
class DownstreamCommand:
    """Does synthetic data help? Train the same downstream models (a behaviour-cloned driving policy
    scored by real return in the real twin; steering inverse dynamics scored on held-out real
    frames) on real data alone and on real plus imagined data, for the same steps, over --seeds
    seeds, at each real budget; report the difference with a 95 % interval. Writes study.json,
    study.png and contact.png; rerun the same command to complete a killed study."""

    out: str = arg()
    """Study folder (its real and synthetic stores, runs, report)."""
    study: StudyConfig = field(default_factory=StudyConfig)
    progress: bool = True


def run_downstream(cfg: DownstreamCommand) -> str:
    report = run_study(cfg.study, cfg.out, progress=cfg.progress)
    gate = {b: round(g["rejected_share"], 3) for b, g in report["gate"].items()}
    return study_table(report) + "\n" + json.dumps({"out": cfg.out, "gate_rejected_share": gate, **report["files"]})


def run_dyna_command(cfg) -> str:
    return "\n".join(json.dumps(_rounded(line)) for line in run_dyna(cfg))


def run_baseline(cfg) -> str:
    from wfm_sim.rl.real_ppo import train_real_ppo

    return "\n".join(json.dumps(_rounded(line)) for line in train_real_ppo(cfg))


@dataclass(frozen=True)
class CosmosTokenizeCommand:
    """Tokenize and reconstruct a video with NVIDIA's Cosmos-Tokenize1 DV weights from a local
    folder (model.pt state dict)."""

    folder: str = arg(positional=True)
    """E.g. Cosmos-Tokenize1-DV4x8x8-360p holding model.pt (see the docs)."""
    video: str = arg()
    """An mp4 to tokenize."""
    variant: str | None = arg(None, choices=("DV4x8x8", "DV8x8x8", "DV8x16x16"))
    """Default: from config.json or the folder name."""
    frames: int | None = arg(None, min=1)
    """At most this many frames (1 + k*m are used)."""
    fps: float = arg(10.0, min=0, strict=True)
    out: str = "cosmos_tokens"


def run_cosmos_tokenize(cfg: CosmosTokenizeCommand) -> dict:
    import numpy as np

    model = load_cosmos_tokenizer(cfg.folder, variant=cfg.variant)
    frames = read_mp4(cfg.video)
    if not frames:
        raise ValueError(f"{cfg.video} holds no video frames")
    start = time.perf_counter()
    r = reconstruct(model, np.stack(frames), cfg.frames)
    seconds = time.perf_counter() - start
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    np.save(out / "tokens.npy", r["tokens"].astype(np.int32))
    write_mp4(out / "input_vs_reconstruction.mp4", [np.concatenate(p, axis=1) for p in zip(r["input"], r["reconstruction"])],
              fps=cfg.fps)
    return {"variant": model.cfg.name, "frames": len(r["input"]), "frame_size": list(r["input"].shape[1:3]),
            "tokens": list(r["tokens"].shape), "psnr_db": round(r["psnr"], 2), "seconds": round(seconds, 2),
            "out": str(out)}
