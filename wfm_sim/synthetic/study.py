"""Does synthetic data help? ``wfm-sim downstream``: the same downstream models trained on real data
alone and on real plus imagined data, for the same number of steps, over several seeds, scored on
real outcomes the world model never saw.

The study, every stage resumable (rerun the same command after a kill: finished stages are kept):

1. **Real data.** ``max(budgets)`` episodes recorded in the real twin with ``policy`` (default
   ``road-explore``: the pixel road follower with steering noise and held random actions, so the
   data holds recoveries and actions that do not follow the road), or the first episodes of a
   store the user brings (``real``). A real budget of B is its first B episodes.
2. **Synthetic data.** For each budget, ``synthetic`` episodes imagined from real contexts of those B
   episodes (``wfm-sim generate --starts``), driven by the same policy in imagination, with full
   provenance (model, context episode and step, seed, sampler settings).
3. **Quality gate** (``gate``). An inverse-dynamics model trained on the B real episodes recovers
   the steering of every synthetic episode from its frames; episodes whose recovered steering
   correlates with the commanded one below ``gate`` are rejected (frames that disagree with their
   own actions). The same figure on held-out real episodes is reported beside it.
4. **Downstream tasks**, per budget, per arm (real only; real + a share of the synthetic episodes;
   real + the gated ones), per seed, with the same steps, batch and learning rate:

   * ``policy``: a behaviour-cloned pixel policy on the model's whole camera rig, its targets the
     ``teacher``'s action on every frame (default ``pixel-driver``, the scripted driver distilled
     into a policy of pixels alone, so real and imagined frames are labelled alike), scored by
     real return in the real twin on fresh seeds;
   * ``perception``: steering inverse dynamics (which action took the frames from t to t + 1),
     R^2 on held-out real episodes recorded with fresh seeds.

5. **Report**: ``study.json`` (every run; per arm the mean, and the paired difference from real
   only with a 95 % t interval over seeds), ``study.png`` (downstream score against synthetic
   share), ``contact.png`` (real frames and synthetic frames from the same real context).

Seeds: real recording from ``first_seed``, held-out perception episodes from ``first_seed +
100_000``, policy evaluation from ``first_seed + 200_000``; choose ``first_seed`` away from the
seeds the world model was trained on (its card lists them).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from wfm_sim.checkpoint import atomic_write_json, read_json
from wfm_sim.datasets.merge import filter_store
from wfm_sim.datasets.store import EpisodeReader, StoreError
from wfm_sim.envs.real import make_real_vec
from wfm_sim.envs.sources import get_source
from wfm_sim.models.world_model import WorldModel, resolve_pretrained
from wfm_sim.policies import make_policy
from wfm_sim.policies.base import ConvPolicy, ConvPolicyConfig
from wfm_sim.policies.bc import BCConfig, fit_policy
from wfm_sim.rollout.play import play
from wfm_sim.rollout.record import record
from wfm_sim.synthetic.downstream import (IDMConfig, Transitions, camera_frames, evaluate_idm, load_transitions,
                                           train_idm)
from wfm_sim.synthetic.generate import GenerateConfig, generate
from wfm_sim.synthetic.study_plots import contact_sheet_from_context, plot_study

TASKS = ("policy", "perception")
FORMAT = "wfm_sim.downstream_study"

# two-sided 95 % quantiles of Student's t by degrees of freedom (above 30: the normal's 1.96)
_T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228,
         11: 2.201, 12: 2.179, 13: 2.160, 14: 2.145, 15: 2.131, 16: 2.120, 17: 2.110, 18: 2.101, 19: 2.093,
         20: 2.086, 25: 2.060, 30: 2.042}


@dataclass(frozen=True)
class StudyConfig:
    """One downstream study (``wfm-sim downstream``)."""

    model: str = "driving"
    """The world model that imagines the synthetic episodes (shipped name or folder)."""
    source: str = "carracing-4cam"
    """The real twin: it records the real data and scores the driving policies."""
    real: str | None = None
    """A store of real episodes to use instead of recording them (the model's rig and frame size)."""
    budgets: tuple[int, ...] = (10, 50)
    """Real-data budgets, in episodes (the first B of the real data)."""
    synthetic: int = 40
    """Synthetic episodes imagined per budget."""
    fractions: tuple[float, ...] = (0.5, 1.0)
    """Arms: real plus this share of the synthetic episodes (real only is always an arm)."""
    horizon: int = 48
    """Steps per synthetic episode."""
    policy: str = "road-explore"
    """Drives the real recording and the imagined episodes (a pixel policy, so it runs in both)."""
    teacher: str = "pixel-driver"
    """Labels every frame for the driving-policy task (a pixel policy; the shipped ``pixel-driver``
    drives about as well as the scripted driver, which reads the simulator's state and so cannot
    label imagined frames)."""
    prompt: str | None = None
    """Scenario text for a text-conditioned model."""
    tasks: tuple[str, ...] = field(default=TASKS, metadata={"names": True})
    """Downstream tasks: policy (behaviour cloning, real return), perception (steering inverse dynamics)."""
    seeds: int = 3
    """Training seeds per arm (the interval is over seeds)."""
    bc_steps: int = 1500
    idm_steps: int = 1500
    batch_size: int = 64
    real_steps: int | None = None
    """Steps per recorded real episode (default: the source's episode length)."""
    eval_episodes: int = 10
    """Real-twin episodes (fresh seeds) that score each driving policy."""
    eval_steps: int | None = None
    """Steps per scoring episode (default: the source's episode length)."""
    test_episodes: int = 10
    """Held-out real episodes for the perception task (fresh seeds)."""
    gate: float = 0.2
    """The gated arm keeps synthetic episodes whose inverse-dynamics steering correlation is at least this."""
    gated: bool = True
    """Add the gated arm (and score every synthetic episode for it)."""
    first_seed: int = 5_000_000
    envs: int = 8
    """Imagined envs per batch while generating."""
    size: int | None = None
    """Frame side (default: the model's)."""

    def __post_init__(self):
        for name in ("synthetic", "horizon", "seeds", "bc_steps", "idm_steps", "batch_size", "eval_episodes",
                     "test_episodes", "envs"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not self.budgets or any(b < 1 for b in self.budgets):
            raise ValueError(f"budgets must be episode counts >= 1, got {self.budgets}")
        if any(not 0 < f <= 1 for f in self.fractions):
            raise ValueError(f"fractions are shares of the synthetic episodes, each in (0, 1]; got {self.fractions}")
        bad = [t for t in self.tasks if t not in TASKS]
        if bad or not self.tasks:
            raise ValueError(f"tasks are {', '.join(TASKS)}; got {list(self.tasks)}")
        if not -1 <= self.gate <= 1:
            raise ValueError(f"gate is a correlation in [-1, 1], got {self.gate}")
        if self.first_seed < 0:
            raise ValueError(f"first_seed must be >= 0, got {self.first_seed}")
        for name in ("eval_steps", "real_steps"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")


def _load(path: Path) -> dict:
    return json.loads(Path(path).read_text())


def _save(path: Path, obj: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, obj)


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def t_interval(values) -> tuple[float, float]:
    """Mean and the half-width of its two-sided 95 % Student-t interval (nan with one value)."""
    v = np.asarray(values, np.float64)
    if len(v) < 2:
        return (float(v.mean()) if len(v) else float("nan")), float("nan")
    df = len(v) - 1
    q = _T975.get(df) or (_T975[max(k for k in _T975 if k <= df)] if df < 30 else 1.96)
    return float(v.mean()), float(q * v.std(ddof=1) / math.sqrt(len(v)))


# ------------------------------------------------------------------ inputs

def check_inputs(cfg: StudyConfig) -> dict:
    """Refuse, before anything is recorded or imagined, what the study could not finish."""
    folder = resolve_pretrained(cfg.model)
    mc = WorldModel.read_config(folder)
    src = get_source(cfg.source)
    cams, size = tuple(mc.cameras), mc.tokenizer.image_size
    if cfg.size is not None and cfg.size != size:
        raise ValueError(f"--size {cfg.size}: the model {cfg.model} imagines {size}px frames; the study needs both "
                         "alike")
    if tuple(c for c in cams if c in src.cameras) != cams:
        raise ValueError(f"the model {cfg.model} has cameras {list(cams)}; source {cfg.source} records "
                         f"{list(src.cameras)}: choose the model's own twin")
    if src.action_space.get("type") != "box" or mc.action.kind != "box":
        raise ValueError(f"the downstream tasks regress continuous actions; {cfg.source} / {cfg.model} act "
                         f"{src.action_space.get('type')} / {mc.action.kind}")
    if cfg.prompt is not None and mc.backbone.text_dim == 0:
        raise ValueError(f"--prompt needs a text-conditioned model; {cfg.model} has no text input")
    policies = {}
    for name in (cfg.policy, cfg.teacher):
        policies[name] = pol = make_policy(name, None, source=cfg.source, camera=cams[0] if "CAM_FRONT" not in cams else None)
        if getattr(pol, "privileged", False):
            raise ValueError(f"{name!r} reads the real simulator's state; the study drives and labels imagined "
                             "frames too, so it needs a pixel policy (pixel-driver, road, road-explore, a policy folder)")
        pc = getattr(pol, "cfg", None)
        if isinstance(pc, ConvPolicyConfig) and (pc.cameras != len(cams) or pc.image_size != size):
            raise ValueError(f"{name!r} reads {pc.cameras} camera(s) at {pc.image_size}px; the model {cfg.model} "
                             f"imagines {len(cams)} at {size}px: give --policy / --teacher a policy of this rig "
                             "(road and road-explore fit any)")
    need = max(cfg.budgets)
    if cfg.real is not None:
        r = EpisodeReader(cfg.real)
        if tuple(c for c in cams if c in r.cameras) != cams or r.image_size != size:
            raise StoreError(f"--real {cfg.real} holds cameras {list(r.cameras)} at {r.image_size}px; the model "
                             f"{cfg.model} needs cameras {list(cams)} at {size}px")
        if r.num_episodes < need:
            raise StoreError(f"--real {cfg.real} holds {r.num_episodes} episodes; the largest budget asks for {need}")
    return {"cameras": cams, "size": size, "fps": mc.fps, "context": mc.context_video_frames, "policies": policies}


def _settings_file(cfg: StudyConfig, out: Path) -> None:
    """A study folder holds one study: another setting that changes results is refused."""
    path = out / "study_config.json"
    mine = asdict(cfg)
    if path.is_file():
        have = read_json(path, FORMAT)["config"]
        keep = ("budgets", "fractions", "tasks", "seeds")  # more of these extends a study; the rest must agree
        diff = sorted(k for k in mine if k not in keep and have.get(k) != mine[k])
        if diff:
            raise StoreError(f"{out} holds a study run with other settings ({', '.join(diff)}); rerun with them or "
                             "write to another --out")
    atomic_write_json(path, {"format": FORMAT, "config": mine})


# ------------------------------------------------------------------ data

def _teacher_labels(teacher, frames: np.ndarray, cameras: tuple[str, ...], chunk: int = 512) -> np.ndarray:
    out = []
    for i in range(0, len(frames), chunk):
        obs = {c: frames[i : i + chunk, j] for j, c in enumerate(cameras)}
        teacher.reset([0] * len(frames[i : i + chunk]))
        out.append(np.asarray(teacher(obs), np.float32))
    return np.concatenate(out)


def _policy_cameras(cameras: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(sorted(cameras))  # the Dict observation's order, which ConvPolicy reads


def _gate(cfg: StudyConfig, out: Path, budget: int, real_t: Transitions, syn_store: Path, test_t: Transitions | None,
          space: dict, progress: bool) -> dict:
    """Score every synthetic episode by how well real-trained inverse dynamics recovers its steering."""
    path = out / f"gate{budget}.json"
    if path.is_file():
        return _load(path)
    idm = train_idm([real_t], space, IDMConfig(steps=cfg.idm_steps, seed=0), progress=progress)
    r = EpisodeReader(syn_store)

    def corr(t: Transitions) -> float | None:
        with torch.no_grad():
            pred = idm(torch.from_numpy(t.frames)).numpy()[:, 0]
        a = t.actions[:, 0]
        if len(a) < 3 or a.std() < 1e-6 or pred.std() < 1e-6:
            return None
        return float(np.corrcoef(pred, a)[0, 1])

    per = [corr(load_transitions(syn_store, [e], cameras=real_t.cameras)) for e in range(r.num_episodes)]
    kept = [e for e, c in enumerate(per) if c is not None and c >= cfg.gate]
    real_ref = None
    if test_t is not None:
        ref_store = out / "test.zarr"
        tr = EpisodeReader(ref_store)
        vals = [corr(load_transitions(ref_store, [e], cameras=real_t.cameras)) for e in range(tr.num_episodes)]
        vals = [v for v in vals if v is not None]
        real_ref = {"median": float(np.median(vals)), "share_above_gate": float(np.mean(np.array(vals) >= cfg.gate))} \
            if vals else None
    result = {"threshold": cfg.gate, "correlations": per, "kept": kept, "rejected_share": 1 - len(kept) / len(per),
              "real_held_out": real_ref}
    atomic_write_json(path, result)
    return result


# ------------------------------------------------------------------ runs

def _train_policy(frames: np.ndarray, labels: np.ndarray, cams: tuple[str, ...], size: int, space: dict, cfg: StudyConfig, seed: int,
                  folder: Path, progress: bool) -> ConvPolicy:
    if (folder / "bc.json").is_file():
        return ConvPolicy.from_pretrained(folder)
    torch.manual_seed(seed)
    policy = ConvPolicy(ConvPolicyConfig(image_size=size, cameras=len(cams), action_dim=space["shape"][0],
                                         low=tuple(space["low"]), high=tuple(space["high"])))
    bc = BCConfig(steps=cfg.bc_steps, batch_size=cfg.batch_size, seed=seed)
    opt = torch.optim.Adam(policy.parameters(), lr=bc.lr)
    loss = fit_policy(policy, opt, frames, labels, bc, bc.steps, np.random.default_rng(seed),
                      f"bc {folder.parent.name} seed {seed}", progress)
    policy.save_pretrained(folder)
    atomic_write_json(folder / "bc.json", {"frames": int(len(frames)), "final_mse": loss, **asdict(bc)})
    return policy


def _real_return(policy: ConvPolicy, cfg: StudyConfig, size: int) -> list[float]:
    src = get_source(cfg.source)
    steps = cfg.eval_steps or src.max_steps
    seeds = [cfg.first_seed + 200_000 + i for i in range(cfg.eval_episodes)]
    n = min(len(seeds), 10)
    env = make_real_vec(cfg.source, n, size, max_episode_steps=steps)
    try:
        returns = []
        for c in range(0, len(seeds), n):
            returns += [float(ep.total_reward()) for ep in play(env, policy, seeds[c : c + n], steps)]
    finally:
        env.close()
    return returns


def _summaries(runs: dict) -> dict:
    """Per task and budget: each arm's mean and 95 % interval over seeds, and its paired difference
    from real only (the same seed's real-only run)."""
    out = {}
    for task, budgets in runs.items():
        out[task] = {}
        for budget, arms in budgets.items():
            base = arms.get("real only", {})
            rows = {}
            for arm, seeds in arms.items():
                vals = [seeds[s]["score"] for s in sorted(seeds)]
                mean, half = t_interval(vals)
                row = {"mean": mean, "ci95": half, "seeds": len(vals), "synthetic_share": next(
                    iter(seeds.values()))["synthetic_share"]}
                paired = [seeds[s]["score"] - base[s]["score"] for s in sorted(seeds) if s in base]
                if arm != "real only" and paired:
                    d, dh = t_interval(paired)
                    row |= {"difference": d, "difference_ci95": dh,
                            "interval_excludes_zero": bool(not math.isnan(dh) and abs(d) > dh)}
                rows[arm] = row
            out[task][budget] = rows
    return out


def _policy_data(real_b: Path, budget: int, syn: Path, cams: tuple[str, ...], teacher) -> dict:
    """The budget's real and synthetic frames with the teacher's label on each, and each synthetic episode's rows."""
    r = EpisodeReader(syn)
    real = camera_frames(real_b, range(budget), cams)
    fake = camera_frames(syn, range(r.num_episodes), cams)
    return {"real": (real, _teacher_labels(teacher, real, cams)), "synthetic": (fake, _teacher_labels(teacher, fake, cams)),
            "bounds": [r.episode_bounds(e) for e in range(r.num_episodes)]}


def _policy_runs(cfg: StudyConfig, folder: Path, data: dict, eps: list[int], cams, size: int, space: dict,
                 progress: bool) -> dict:
    """One arm of the policy task: a behaviour-cloned policy per seed, scored by real return (finished seeds are read)."""
    (real, real_labels), (fake, fake_labels) = data["real"], data["synthetic"]
    rows = np.concatenate([np.arange(*data["bounds"][e]) for e in eps]) if eps else np.zeros(0, int)
    frames, labels = np.concatenate([real, fake[rows]]), np.concatenate([real_labels, fake_labels[rows]])
    out = {}
    for s in range(cfg.seeds):
        path = folder / f"seed{s}.json"
        if not path.is_file():
            returns = _real_return(_train_policy(frames, labels, cams, size, space, cfg, s, folder / f"seed{s}", progress),
                                   cfg, size)
            _save(path, {"score": float(np.mean(returns)), "returns": returns, "synthetic_share": len(rows) / len(frames),
                         "train_frames": int(len(frames))})
        out[s] = _load(path)
    return out


def _perception_runs(cfg: StudyConfig, folder: Path, real_t: Transitions, syn: Path, eps: list[int], cams,
                     test_t: Transitions, space: dict, progress: bool, arm: str) -> dict:
    """One arm of the perception task: steering inverse dynamics per seed, R^2 on held-out real frames."""
    parts = [real_t] + ([load_transitions(syn, eps, cameras=cams)] if eps else [])
    total = sum(len(p) for p in parts)
    mean = np.concatenate([p.actions for p in parts]).mean(0)
    out = {}
    for s in tqdm(range(cfg.seeds), desc=f"idm {arm}", disable=not progress):
        path = folder / f"seed{s}.json"
        if not path.is_file():
            ev = evaluate_idm(train_idm(parts, space, IDMConfig(steps=cfg.idm_steps, seed=s)), test_t, mean)
            _save(path, {"score": float(ev["r2"][0]), "r2": ev["r2"], "mse": ev["mse"],
                         "synthetic_share": (total - len(real_t)) / total, "train_transitions": int(total)})
        out[s] = _load(path)
    return out


def run_study(cfg: StudyConfig, out: str | Path, progress: bool = True) -> dict:
    """Run (or complete) the study ``cfg`` in folder ``out``; returns the report written to study.json."""
    info = check_inputs(cfg)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    _settings_file(cfg, out)
    cams, size = info["cameras"], info["size"]
    pcams = _policy_cameras(cams)
    budgets = sorted(set(cfg.budgets))

    real = Path(cfg.real) if cfg.real else out / "real.zarr"
    if cfg.real is None:
        record(cfg.source, real, max(budgets), policy=cfg.policy, size=size, seed=cfg.first_seed,
               max_steps=cfg.real_steps, progress=progress)
    space = EpisodeReader(real).action_space
    test_t = None
    if "perception" in cfg.tasks or cfg.gated:
        record(cfg.source, out / "test.zarr", cfg.test_episodes, policy=cfg.policy, size=size,
               seed=cfg.first_seed + 100_000, max_steps=cfg.real_steps, progress=progress)
        test_t = load_transitions(out / "test.zarr", cameras=cams)

    teacher = info["policies"][cfg.teacher]  # built and checked by check_inputs
    runs: dict = {t: {} for t in cfg.tasks}
    gates, generated = {}, {}
    for budget in budgets:
        real_b = out / f"real{budget}.zarr"
        filter_store(real, real_b, list(range(budget)), {"why": f"downstream study: real budget {budget}"})
        syn = out / f"synthetic{budget}.zarr"
        generated[budget] = generate(GenerateConfig(
            model=cfg.model, episodes=cfg.synthetic, horizon=cfg.horizon, starts=str(real_b), policy=cfg.policy,
            seed=cfg.first_seed + 300_000 + 1000 * budget, envs=cfg.envs, prompt=cfg.prompt), syn, progress=progress)
        real_t = load_transitions(real_b, cameras=cams)
        if cfg.gated:
            gates[budget] = _gate(cfg, out, budget, real_t, syn, test_t, space, progress)

        policy_data = None  # frames and teacher labels, loaded once per budget when the policy task runs
        arms = {"real only": []}
        for f in cfg.fractions:
            arms[f"+{f:.0%} synthetic"] = list(range(max(1, round(f * cfg.synthetic))))
        if cfg.gated:
            arms[f"+synthetic, gated (corr >= {cfg.gate:g})"] = gates[budget]["kept"]

        for arm, eps in arms.items():
            if arm != "real only" and not eps:
                continue  # the gate kept nothing: the arm is real only
            if "policy" in cfg.tasks:
                policy_data = policy_data or _policy_data(real_b, budget, syn, pcams, teacher)
                runs["policy"].setdefault(str(budget), {})[arm] = _policy_runs(
                    cfg, out / "runs" / "policy" / f"real{budget}" / _slug(arm), policy_data, eps, pcams, size,
                    space, progress)
            if "perception" in cfg.tasks:
                runs["perception"].setdefault(str(budget), {})[arm] = _perception_runs(
                    cfg, out / "runs" / "perception" / f"real{budget}" / _slug(arm), real_t, syn, eps, cams, test_t,
                    space, progress, arm)

    report = {"format": FORMAT, "config": asdict(cfg), "units": {"policy": "real return (mean over eval episodes)",
                                                                 "perception": "steering R^2 on held-out real frames"},
              "summary": _summaries(runs), "gate": {str(b): {k: v for k, v in g.items() if k != "correlations"}
                                                    for b, g in gates.items()},
              "generate": {str(b): g for b, g in generated.items()}, "runs": runs}
    report["files"] = {"plot": str(plot_study(report, out / "study.png")),
                       "contact_sheet": str(contact_sheet_from_context(out / f"synthetic{budgets[0]}.zarr", cams,
                                                                        out / "contact.png", info["context"]))}
    atomic_write_json(out / "study.json", report)
    return report


def study_table(report: dict) -> str:
    """The report's arms as a markdown table per task."""
    lines = []
    for task, budgets in report["summary"].items():
        lines += [f"{task} ({report['units'][task]})", "",
                  "| real episodes | arm | synthetic share | score (95 % CI) | difference from real only (95 % CI) |",
                  "| --- | --- | --- | --- | --- |"]
        for budget, arms in budgets.items():
            for arm, r in arms.items():
                diff = (f"{r['difference']:+.3f} +- {r['difference_ci95']:.3f}" if "difference" in r else "")
                lines.append(f"| {budget} | {arm} | {r['synthetic_share']:.2f} | {r['mean']:.3f} +- {r['ci95']:.3f} | "
                             f"{diff} |")
        lines.append("")
    return "\n".join(lines)


__all__ = ["StudyConfig", "check_inputs", "run_study", "study_table", "t_interval"]
