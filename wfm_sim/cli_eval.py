"""``wfm-sim evaluate``, ``score`` and ``plan``: how far a world model can be trusted against its
real simulator. Flags map onto :mod:`wfm_sim.evaluation`; no logic lives here."""

from __future__ import annotations

import json
from pathlib import Path

from wfm_sim.cli_args import nonneg_float, nonneg_int, positive_int


def _evaluate(args) -> None:
    from pathlib import Path

    from wfm_sim.evaluation.fidelity import EvalConfig, evaluate
    from wfm_sim.evaluation.report import summary_table, write_report
    from wfm_sim.models import SamplingConfig, WorldModel

    model = WorldModel.from_pretrained(args.model, device=args.device, precision=args.precision)
    cfg = EvalConfig(horizon=args.horizon, windows=args.windows, split=args.split, modes=tuple(args.modes),
                     decoders=tuple(args.decoders), parallel_steps=args.parallel_steps,
                     diffusion_steps=args.diffusion_steps, sampling=SamplingConfig(temperature=args.temperature,
                                                                                    top_k=args.top_k), seed=args.seed)
    split = None
    if args.split != "all":
        from wfm_sim.datasets.split import load_split
        from wfm_sim.models.world_model import resolve_pretrained

        split = load_split(resolve_pretrained(args.model), args.data)
    report, videos = evaluate(model, args.data, cfg, split)
    report["model"] = str(args.model)
    out = Path(args.out or Path(str(args.model)) / "eval")
    paths = write_report(report, videos, out, fps=model.cfg.fps / 2)
    print(summary_table(report))
    print("wrote " + ", ".join(str(p) for p in paths.values()))


def _score(args) -> None:
    from wfm_sim.envs.spaces import model_action_space
    from wfm_sim.evaluation.policy_sets import graded_set
    from wfm_sim.evaluation.score_report import ranking_table, write_score_report
    from wfm_sim.evaluation.scoring import ScoreConfig, check_rig, make_starts, score_policies, twin_source
    from wfm_sim.models import WorldModel
    from wfm_sim.policies import make_policy

    model = WorldModel.from_pretrained(args.model, device=args.device, precision=args.precision)
    source = twin_source(model, args.model, args.source)
    cfg = ScoreConfig(starts=args.starts, start_seed=args.start_seed, starts_from=args.starts_from,
                      start_episode=args.start_episode, samples=args.samples, horizon=args.horizon,
                      batch=args.batch, real=not args.no_real, replay=not args.no_replay, decoder=args.decoder,
                      mode=args.mode, seed=args.seed, workers=args.workers)
    policies = {}
    for name in args.policies:  # scripted experts (driver, expert) play only in the real simulator, as references
        label = policy_label(name)
        if label in policies:
            raise ValueError(f"--policies name two policies {label!r}; give them distinct names")
        policies[label] = make_policy(
            name, model_action_space(model.cfg), source=source, camera=model.cfg.cameras[0])
    check_rig(model, source, cfg.horizon + (cfg.warmup or 0))  # before the real twin records anything
    starts = make_starts(model, source, cfg)
    if args.graded:
        graded = graded_set(source, starts, cfg, model)
        clash = sorted(set(graded) & set(policies))
        if clash:
            raise ValueError(f"--policies {clash} have the names of graded plans; rename them")
        policies.update(graded)
    report = score_policies(model, source, policies, cfg, progress=not args.quiet, model_ref=args.model,
                            starts=starts)
    paths = write_score_report(report, args.out, fps=model.cfg.fps / 2)
    print(ranking_table(report))
    print(json.dumps({"speed": report["speed"]}))
    print("wrote " + ", ".join(str(p) for p in paths.values()))


def policy_label(name: str) -> str:
    """The name a policy gets in score tables: a folder's name (its run's name for RUN/policy),
    a plan file's name without its suffix, or the name itself for built-ins and entry points."""
    p = Path(name)
    if not p.exists():
        return name
    if p.is_dir():
        return p.parent.name if p.name == "policy" and p.parent.name else p.name
    return p.stem


def add_score(sub) -> None:
    sc = sub.add_parser("score", help="score policies in imagination and in the real simulator from the same starts",
                        description="Play every policy from the same real start states in the world model (K samples) "
                                    "and in its real twin; report return and success per policy with 95%% CIs, and "
                                    "Pearson, Spearman and MMRV between imagined and real across policies.")
    sc.add_argument("--model", default="manipulation", help="shipped model name or folder")
    sc.add_argument("--source", default=None, help="the real simulator (default: the shipped model's twin)")
    sc.add_argument("--policies", nargs="*", default=[],
                    help="random, road, .npy plans, policy folders (ConvPolicy, train policy), module:callable; "
                         "scripted experts (driver, expert) run in the real simulator only, as references")
    sc.add_argument("--graded", action="store_true", help="add 9 plans derived from the scripted expert (best to worst)")
    sc.add_argument("--starts", type=positive_int, default=20, help="start states (real simulator seeds, or episodes)")
    sc.add_argument("--start-seed", type=nonneg_int, default=1_000_000, help="first start seed (training data uses small seeds)")
    sc.add_argument("--starts-from", default=None, metavar="STORE",
                    help="start from the first frames of this recorded store's episodes instead of fresh seeds "
                         "(with --real, the twin is reset at each episode's recorded seed and replays its first "
                         "actions; report.json's starts.context_max_diff says how exactly)")
    sc.add_argument("--start-episode", type=nonneg_int, default=0, help="with --starts-from: the first episode used")
    sc.add_argument("--samples", type=positive_int, default=2, help="imagined samples per start (K)")
    sc.add_argument("--horizon", type=positive_int, default=30)
    sc.add_argument("--batch", type=positive_int, default=32, help="imagined envs stepped together")
    sc.add_argument("--workers", type=positive_int, default=1, help="> 1: imagine on a Ray pool of this many model replicas")
    real = sc.add_mutually_exclusive_group()
    real.add_argument("--real", action="store_true", help="also play every policy in the real simulator (the default)")
    real.add_argument("--no-real", action="store_true", help="imagination only")
    sc.add_argument("--no-replay", action="store_true",
                    help="skip reading the model's heads along the real episodes (the 'replayed' column, which splits "
                         "the imagined-real gap into dynamics error and head error)")
    sc.add_argument("--decoder", default="token", choices=["token", "diffusion"])
    sc.add_argument("--mode", default="parallel", choices=["sequential", "parallel"])
    sc.add_argument("--seed", type=nonneg_int, default=0)
    sc.add_argument("--device", default="auto")
    sc.add_argument("--precision", default="auto")
    sc.add_argument("--out", required=True, help="report folder (report.json is written last)")
    sc.add_argument("--quiet", action="store_true")
    sc.set_defaults(func=_score)


def _plan(args) -> None:
    from pathlib import Path

    from wfm_sim.checkpoint import atomic_write_json
    from wfm_sim.evaluation.planning import PlanConfig, plan_and_execute
    from wfm_sim.evaluation.scoring import check_rig, twin_source
    from wfm_sim.models import WorldModel

    model = WorldModel.from_pretrained(args.model, device=args.device, precision=args.precision)
    source = twin_source(model, args.model, args.source)
    cfg = PlanConfig(horizon=args.horizon, population=args.population, elites=args.elites,
                     iterations=args.iterations, samples=args.samples, seed=args.seed)
    check_rig(model, source, args.horizon + model.cfg.context_frames - 1)
    seeds = list(range(args.start_seed, args.start_seed + args.starts))
    result = plan_and_execute(model, source, seeds, cfg, progress=not args.quiet)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "plan.json", result)
    print(json.dumps(result["mean"], indent=2))
    print(f"wrote {out / 'plan.json'}")


def add_plan(sub) -> None:
    pl = sub.add_parser("plan", help="plan with CEM in imagination, execute in the real simulator",
                        description="From each real start state, search action sequences with the cross-entropy "
                                    "method in the world model; play the chosen plan, a random candidate and the "
                                    "scripted expert in the real twin from the same start.")
    pl.add_argument("--model", default="manipulation")
    pl.add_argument("--source", default=None)
    pl.add_argument("--starts", type=positive_int, default=5)
    pl.add_argument("--start-seed", type=nonneg_int, default=2_000_000)
    pl.add_argument("--horizon", type=positive_int, default=20)
    pl.add_argument("--population", type=positive_int, default=32)
    pl.add_argument("--elites", type=positive_int, default=6)
    pl.add_argument("--iterations", type=positive_int, default=2)
    pl.add_argument("--samples", type=positive_int, default=1)
    pl.add_argument("--seed", type=nonneg_int, default=0)
    pl.add_argument("--device", default="auto")
    pl.add_argument("--precision", default="auto")
    pl.add_argument("--out", required=True)
    pl.add_argument("--quiet", action="store_true")
    pl.set_defaults(func=_plan)


def add_evaluate(sub) -> None:
    e = sub.add_parser("evaluate", help="open-loop fidelity against real episodes: JSON, plot, side-by-side mp4")
    e.add_argument("model", help="shipped model name or model folder")
    e.add_argument("--data", required=True, help="held-out episode store of the model's simulator")
    e.add_argument("--split", default="all", choices=["all", "val", "train"], help="'val' for a training store's held-out episodes")
    e.add_argument("--horizon", type=positive_int, default=8)
    e.add_argument("--windows", type=positive_int, default=32)
    e.add_argument("--modes", nargs="+", default=["sequential", "parallel"])
    e.add_argument("--decoders", nargs="+", default=["token", "diffusion"])
    e.add_argument("--parallel-steps", type=positive_int, default=8)
    e.add_argument("--diffusion-steps", type=positive_int, default=None)
    e.add_argument("--temperature", type=nonneg_float, default=1.0)
    e.add_argument("--top-k", type=nonneg_int, default=0)
    e.add_argument("--seed", type=nonneg_int, default=0)
    e.add_argument("--device", default="auto")
    e.add_argument("--precision", default="auto")
    e.add_argument("--out", default=None, help="report folder (default: MODEL/eval)")
    e.set_defaults(func=_evaluate)


def _quality(args) -> int:
    from wfm_sim.datasets import filter_store
    from wfm_sim.evaluation.quality import score_dataset, summary_lines, write_quality

    if (args.min_quality is None) != (args.keep is None):
        raise ValueError("--min-quality and --keep go together: the threshold and the store the kept episodes go to")
    result = score_dataset(args.store, reference=args.reference, progress=not args.quiet)
    out = Path(args.out or str(Path(args.store)).rstrip("/").removesuffix(".zarr") + "_quality")
    paths = write_quality(result, out, args.store)
    print("\n".join(summary_lines(result)))
    summary = {"episodes": len(result["episodes"]), "quality": result["dataset"]["quality"], **paths}
    if args.min_quality is not None:
        keep = [r["episode"] for r in result["episodes"] if r["quality"] >= args.min_quality]
        added = filter_store(args.store, args.keep, keep, {"min_quality": args.min_quality,
                                                           "reference": args.reference}, progress=not args.quiet)
        summary |= {"kept": len(keep), "added": added, "keep_store": args.keep}
    print(json.dumps(summary))
    return 0


def add_quality(sub) -> None:
    q = sub.add_parser("quality", help="quality and diversity of a (generated) driving dataset; filter by quality",
                       description="Score every episode: agreement between neighbouring cameras, distance to the real "
                                   "colour palette, drift over the rollout, token entropy, road curvature and events; "
                                   "per dataset against --reference (real episodes): curvature distribution, event "
                                   "rates, diversity. Writes quality.json and a contact sheet of the best and worst "
                                   "episodes; --min-quality Q --keep NEW.zarr copies the episodes scoring >= Q.")
    q.add_argument("store", help="the store to score (wfm-sim generate output, or real episodes)")
    q.add_argument("--reference", default=None, help="a store of real episodes of the same rig (recommended)")
    q.add_argument("--out", default=None, help="folder for quality.json and quality_sheet.png (default STORE_quality)")
    q.add_argument("--min-quality", type=nonneg_float, default=None, help="keep episodes with quality >= this (0-1)")
    q.add_argument("--keep", default=None, help="store the kept episodes are copied to")
    q.add_argument("--quiet", action="store_true")
    q.set_defaults(func=_quality)
