"""The ``wfm-sim`` command. Subcommands map flags onto the library's functions; no logic lives here."""

from __future__ import annotations

import argparse
import json
import os
import sys

from wfm_sim.cli_args import (Parser, json_object, name_list, nonneg_float, nonneg_int, positive_float, positive_int,
                              source_name)
from wfm_sim.cli_eval import add_evaluate, add_plan, add_quality, add_score
from wfm_sim.cli_rl import add_dyna, add_policy_flags


def _collect(args) -> None:
    from wfm_sim.envs.gym_source import GymSpec
    from wfm_sim.rollout.record import record

    gym_flags = {"--cameras": args.cameras, "--fps": args.fps, "--action-repeat": args.action_repeat,
                 "--info": args.info, "--env-kwargs": args.env_kwargs}
    source = args.source
    if source.startswith("gym:"):
        spec = GymSpec.parse(source)
        spec = GymSpec(spec.env_id, tuple(args.cameras or spec.cameras), args.action_repeat or spec.repeat,
                       args.fps or spec.fps, tuple(args.info or spec.info), args.env_kwargs or spec.kwargs,
                       args.max_steps or spec.max_steps)
        source = spec.name()
    elif any(v is not None for v in gym_flags.values()):
        given = [k for k, v in gym_flags.items() if v is not None]
        raise ValueError(f"{', '.join(given)} apply to gym:<EnvId> sources only; {source} has a fixed rig and rate")
    if args.captions:
        from wfm_sim.envs.sources import get_source

        source = get_source(source).with_captions().name  # fails with the sources that can caption
    stats = record(source, args.out, args.episodes, policy=args.policy, size=args.size,
                   max_steps=args.max_steps, seed=args.seed, progress=not args.quiet)
    print(json.dumps({k: round(v, 2) if isinstance(v, float) else v for k, v in stats.items()}))


def _dataset_info(args) -> None:
    from wfm_sim.datasets.inspect import dataset_sheet
    from wfm_sim.datasets.store import EpisodeReader

    reader = EpisodeReader(args.path)
    print(json.dumps(reader.summary(), indent=2))
    if args.sheet:
        print(f"contact sheet: {dataset_sheet(reader, args.sheet, episodes=args.sheet_episodes)}")


def _dataset_check(args) -> int:
    from wfm_sim.datasets import repair_store
    from wfm_sim.datasets.health import inspect_store
    from wfm_sim.datasets.store import open_root

    if args.repair or args.keep_episodes is not None:
        if args.keep_episodes is not None and not args.repair:
            raise ValueError("--keep-episodes removes committed episodes: pass --repair with it")
        report = repair_store(args.path, args.keep_episodes)
        print(json.dumps(report, indent=2))
        return 0
    health = inspect_store(open_root(args.path), args.path, values=True)
    print(json.dumps(health.summary(), indent=2))
    if not health.ok:
        print(f"wfm-sim dataset check: {health.refusal()}", file=sys.stderr)
        return 1
    if not health.clean:
        print(f"wfm-sim dataset check: {args.path} holds a crashed writer's unfinished episode (invisible to readers); "
              "the next writer or --repair drops it", file=sys.stderr)
    return 0


def _dataset_merge(args) -> None:
    from wfm_sim.datasets import EpisodeReader, merge_stores

    added = merge_stores(args.sources, args.out, progress=not args.quiet, cameras=args.cameras, source=args.source)
    r = EpisodeReader(args.out)
    print(json.dumps({"added_episodes": added, "episodes": r.num_episodes, "frames": r.num_steps}))


def _dataset_import(args) -> None:
    from wfm_sim.datasets import EpisodeReader
    from wfm_sim.datasets.importers import import_lerobot, import_robomimic

    if args.format == "robomimic":
        stats = import_robomimic(args.path, args.out, args.cameras, args.size, args.fps, progress=not args.quiet)
    else:
        if args.fps is not None:
            raise ValueError("--fps applies to robomimic files; a LeRobot dataset gives its own (meta/info.json)")
        stats = import_lerobot(args.path, args.out, args.cameras, args.size, progress=not args.quiet)
    r = EpisodeReader(args.out)
    print(json.dumps({**{k: round(v, 2) if isinstance(v, float) else v for k, v in stats.items()},
                      "store_episodes": r.num_episodes, "cameras": list(r.cameras)}))


def _train(args) -> None:
    from wfm_sim.cli_rl import check_flags, train_policy_cmd
    from wfm_sim.training.loop import TrainConfig, train

    check_flags(args)
    if args.component == "policy":
        return train_policy_cmd(args)

    cfg = TrainConfig(component=args.component, data=args.data, out=args.out, preset=args.preset, steps=args.steps,
                      batch_size=args.batch_size, lr=args.lr, device=args.device, precision=args.precision,
                      compile=args.compile, num_workers=args.num_workers, eval_every=args.eval_every,
                      save_every=args.save_every, seed=args.seed, resume=args.resume, progress=not args.quiet,
                      tokenizer_from=args.tokenizer_from, cameras=tuple(args.cameras) if args.cameras else None,
                      text_encoder=args.text_encoder)
    if args.ray_workers:
        from wfm_sim.training.distributed import train_distributed

        last = train_distributed(cfg, workers=args.ray_workers, use_gpu=args.device.startswith("cuda"))
    else:
        last = train(cfg)
    print(json.dumps({k: round(v, 5) if isinstance(v, float) else v for k, v in last.items()}))


def _demo(args) -> None:
    from wfm_sim.demo import run_demo
    from wfm_sim.models.world_model import resolve_pretrained

    resolve_pretrained(args.model)

    res = run_demo(args.model, steps=args.steps, envs=args.envs, out=args.out, seed=args.seed, decoder=args.decoder,
                   mode=args.mode, device=args.device)
    print(f"imagined {res['envs']} x {res['steps']} steps of {args.model}: {res['env_steps_per_s']:.1f} env steps/s, "
          f"{res['frames_per_s']:.1f} camera frames/s")
    print(f"wrote {res['video']} and {res['contact_sheet']}")


def _policy_spec(name: str, horizon: int):
    """A rollout PolicySpec for ``--policy``; fails here, before Ray starts, on a bad policy."""
    from pathlib import Path

    from wfm_sim.policies import ConvPolicy, PlanPolicy, make_policy
    from wfm_sim.policies.registry import SCRIPTED
    from wfm_sim.rollout import PolicySpec

    if name == "random":
        return PolicySpec("random")
    if name in SCRIPTED:
        raise ValueError(f"--policy {name} is a scripted expert that reads the real simulator's state; "
                         "imagined rollouts need a pixel policy (road, a ConvPolicy folder), a plan or random")
    policy = make_policy(name, camera="CAM_FRONT") if name != "road" else None
    if isinstance(policy, PlanPolicy):
        if len(policy) < horizon:
            raise ValueError(f"plan {name} has {len(policy)} steps, fewer than --horizon {horizon}")
        return PolicySpec("plan", plan=policy.plan)
    if isinstance(policy, ConvPolicy) and Path(name).is_dir():
        return PolicySpec("conv", state=(vars(policy.cfg), policy.state_dict()))
    return PolicySpec("named", name=name)


def _rollout(args) -> None:
    import time

    import ray

    from wfm_sim.rollout import RolloutPool, RolloutRequest

    from wfm_sim.models.world_model import resolve_pretrained

    resolve_pretrained(args.model)  # fail on a bad model or policy before starting Ray
    spec = _policy_spec(args.policy, args.horizon)
    ray.init(address=args.address, include_dashboard=False, log_to_driver=False) if args.address else \
        ray.init(include_dashboard=False, log_to_driver=False)
    pool = RolloutPool(args.model, workers=args.workers, envs_per_worker=args.envs_per_worker,
                       num_gpus=args.gpus_per_worker, env_kwargs={"decoder": args.decoder, "mode": args.mode,
                                                                   "max_episode_steps": args.horizon})
    t0 = time.perf_counter()
    n = pool.run_to_store(RolloutRequest(args.episodes, args.horizon, seed=args.seed, policy=spec), args.out,
                          progress=not args.quiet)
    from wfm_sim.datasets.store import EpisodeReader

    frames = EpisodeReader(args.out).num_steps
    print(f"wrote {n} imagined episodes ({frames} steps) to {args.out} in {time.perf_counter() - t0:.1f} s "
          f"with {args.workers} workers")
    pool.shutdown()


def _generate(args) -> None:
    from wfm_sim.rollout.generate import GenerateConfig, generate

    cfg = GenerateConfig(model=args.model, episodes=args.episodes, horizon=args.horizon, starts=args.starts,
                         policy=args.policy, seed=args.seed, workers=args.workers, envs=args.envs, decoder=args.decoder,
                         mode=args.mode, parallel_steps=args.parallel_steps, temperature=args.temperature,
                         top_k=args.top_k, prompt=args.prompt)
    stats = generate(cfg, args.out, progress=not args.quiet)
    print(json.dumps({k: round(v, 2) if isinstance(v, float) else v for k, v in stats.items()}))


def _add_generate(sub) -> None:
    g = sub.add_parser("generate", help="a synthetic dataset from a world model, with provenance; resumable",
                       description="Imagine --episodes episodes of --horizon steps, each started from a real context "
                                   "(--starts: your store of real episodes; default: the model's shipped contexts), "
                                   "into a zarr store with full provenance. Re-run the same command to complete a "
                                   "killed run: nothing is lost or written twice.")
    g.add_argument("--model", default="driving", help="shipped model name or folder")
    g.add_argument("--out", required=True, help="output store")
    g.add_argument("--episodes", type=positive_int, required=True)
    g.add_argument("--horizon", type=positive_int, default=48)
    g.add_argument("--starts", default=None, help="store of real episodes to start from (the model's cameras and size)")
    g.add_argument("--policy", default="road", help="road, random, a .npy plan, or a policy folder")
    g.add_argument("--seed", type=nonneg_int, default=0, help="episode i is seeded seed + i")
    g.add_argument("--workers", type=positive_int, default=1, help="Ray actors (1: in this process)")
    g.add_argument("--envs", type=positive_int, default=8, help="imagined envs per batch")
    g.add_argument("--decoder", choices=["token", "diffusion"], default="token")
    g.add_argument("--mode", choices=["sequential", "parallel"], default="parallel")
    g.add_argument("--parallel-steps", type=positive_int, default=8)
    g.add_argument("--temperature", type=nonneg_float, default=1.0)
    g.add_argument("--top-k", type=nonneg_int, default=0)
    g.add_argument("--prompt", default=None, help="scenario text (text-conditioned models)")
    g.add_argument("--quiet", action="store_true")
    g.set_defaults(func=_generate)


def _add_collect(sub) -> None:
    from wfm_sim.envs.sources import SOURCES

    lines = "\n".join(f"  {n:16s} {s.description} (default policy: {s.default_policy})" for n, s in SOURCES.items())
    c = sub.add_parser("collect", help="record episodes from a real simulator into a zarr store",
                       description=f"Record episodes from a real simulator.\n\nsources:\n{lines}",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    c.add_argument("source", type=source_name, metavar="SOURCE",
                   help="simulator to record (listed above), or gym:<EnvId> for any registered Gymnasium env "
                        "that renders rgb_array, e.g. gym:Reacher-v5")
    c.add_argument("--episodes", type=positive_int, required=True, help="episodes to record: seeds --seed .. --seed+N-1; episodes the store holds already are skipped")
    c.add_argument("--out", required=True, help="output store, e.g. data/driving.zarr")
    c.add_argument("--policy", default=None, help="random, driver (CarRacing), expert or expert-clean (Meta-World; "
                   "clean: no exploration noise, labels for behaviour cloning), road, a .npy plan, "
                   "a ConvPolicy folder or module:callable (default: the source's scripted one)")
    c.add_argument("--size", type=positive_int, default=64, help="frame side in pixels (default 64)")
    c.add_argument("--max-steps", type=positive_int, default=None, help="steps per episode (default: per source)")
    c.add_argument("--seed", type=nonneg_int, default=0, help="first episode seed")
    c.add_argument("--quiet", action="store_true", help="no progress bar")
    c.add_argument("--captions", action="store_true", help="also record a scene caption id per step (CarRacing: "
                   "'sharp left curve ahead', 'off the road on grass', ...), for text-conditioned models")
    g = c.add_argument_group("gym:<EnvId> sources")
    g.add_argument("--cameras", type=name_list, default=None,
                   help="MuJoCo views, comma-separated: the model's camera names, free, free_az<deg>[_el<deg>] "
                        "(default: the env's own render, stored as CAM_MAIN)")
    g.add_argument("--fps", type=positive_float, default=None, help="recorded frames/s (default: render_fps / repeat)")
    g.add_argument("--action-repeat", type=positive_int, default=None, help="simulator steps per recorded step")
    g.add_argument("--info", type=name_list, default=None,
                   help="step-info fields to store, comma-separated (a field named success is the success flag)")
    g.add_argument("--env-kwargs", type=json_object, default=None, help="gym.make keyword arguments as a JSON object")
    c.set_defaults(func=_collect)


def _add_dataset(sub) -> None:
    d = sub.add_parser("dataset", help="inspect, check, merge and import episode stores")
    dsub = d.add_subparsers(dest="dataset_command", required=True)
    info = dsub.add_parser("info", help="print a summary of a store; optionally write a PNG contact sheet")
    info.add_argument("path")
    info.add_argument("--sheet", default=None, help="write a contact sheet PNG here")
    info.add_argument("--sheet-episodes", type=positive_int, default=3, help="episodes shown on the sheet")
    info.set_defaults(func=_dataset_info)
    check = dsub.add_parser("check", help="validate a store; --repair drops a crashed writer's partial rows",
                            description="Validate a store: structure, committed episodes, NaN/inf actions and "
                                        "rewards. Exit 0 when consistent, 1 when not.")
    check.add_argument("path")
    check.add_argument("--repair", action="store_true",
                       help="drop provably partial rows (a crashed writer's unfinished episode); never committed ones")
    check.add_argument("--keep-episodes", type=nonneg_int, default=None, metavar="K",
                       help="with --repair: keep only the first K episodes of an inconsistent store (destructive)")
    check.set_defaults(func=_dataset_check)
    merge = dsub.add_parser("merge", help="append the episodes of several stores (e.g. one per Ray actor) to one")
    merge.add_argument("sources", nargs="+", help="stores to merge, in order")
    merge.add_argument("--out", required=True, help="destination store (created or appended to)")
    merge.add_argument("--cameras", nargs="+", default=None,
                       help="keep only these cameras, in this order (e.g. CAM_FRONT of a 4-camera rig)")
    merge.add_argument("--source", default=None,
                       help="with --cameras: the collect source those cameras are (e.g. carracing-front), "
                            "so that later collect runs append to the result")
    merge.add_argument("--quiet", action="store_true")
    merge.set_defaults(func=_dataset_merge)
    imp = dsub.add_parser("import", help="import robomimic HDF5 or a LeRobot dataset folder into a store",
                          description="Import a team's own recordings: a robomimic-style HDF5 file "
                                      "(data/demo_N/{actions, rewards, dones, obs/<camera>_image}) or a local LeRobot "
                                      "dataset folder (v2.x or v3.0: meta/info.json, data/ parquet, videos/ mp4). "
                                      "Episodes the store holds already are skipped.")
    imp.add_argument("format", choices=["robomimic", "lerobot"])
    imp.add_argument("path", help="the .hdf5 file or the LeRobot folder")
    imp.add_argument("--out", required=True, help="destination store (created or completed)")
    imp.add_argument("--cameras", type=name_list, default=None, help="cameras to keep, comma-separated (default: all)")
    imp.add_argument("--size", type=positive_int, default=64, help="frame side in pixels after resizing (default 64)")
    imp.add_argument("--fps", type=positive_float, default=None, help="robomimic: control rate, when the file does not say it")
    imp.add_argument("--quiet", action="store_true")
    imp.set_defaults(func=_dataset_import)


def _add_train(sub) -> None:
    t = sub.add_parser("train", help="train one component (tokenizer, then backbone, then decoder), or a policy in imagination")
    t.add_argument("component", choices=["tokenizer", "backbone", "decoder", "heads", "policy"],
                   help="heads: refit a trained backbone's reward / termination / success heads alone (trunk frozen)")
    t.add_argument("--data", default=None, help="episode store to train on (policy: real episodes to start from; "
                                                 "default the model's shipped contexts)")
    t.add_argument("--out", required=True, help="model folder (created from --preset on first use)")
    t.add_argument("--preset", default="small", help="model size when creating the folder: tiny, tiny-k4, small, small-mv, rl, rl-k4, base, large")
    t.add_argument("--steps", type=positive_int, default=2000)
    t.add_argument("--batch-size", type=positive_int, default=16)
    t.add_argument("--lr", type=positive_float, default=3e-4)
    t.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1 ...")
    t.add_argument("--precision", default="auto", help="auto (bf16 on CUDA and bf16-capable CPUs), bf16, fp32")
    t.add_argument("--compile", action="store_true", help="torch.compile the component (GPU)")
    t.add_argument("--num-workers", type=nonneg_int, default=1, help="DataLoader workers")
    t.add_argument("--eval-every", type=positive_int, default=250)
    t.add_argument("--save-every", type=positive_int, default=250)
    t.add_argument("--seed", type=nonneg_int, default=0)
    t.add_argument("--resume", action="store_true", help="continue from the folder's train state")
    t.add_argument("--ray-workers", type=nonneg_int, default=0, help="> 0: data-parallel on Ray Train with this many workers")
    t.add_argument("--tokenizer-from", default=None, help="when creating --out, reuse this model folder's tokenizer")
    t.add_argument("--text-encoder", default=None, help="when creating --out: a text-conditioned model with this T5 "
                   "encoder ('tiny' or a local T5 folder); the store must hold captions (collect --captions)")
    t.add_argument("--cameras", type=name_list, default=None,
                   help="when creating --out: the cameras the model sees, a subset of the store's (default all)")
    t.add_argument("--quiet", action="store_true")
    add_policy_flags(t)
    t.set_defaults(func=_train)


def _add_demo(sub) -> None:
    dm = sub.add_parser("demo", help="imagined multi-camera drive with the shipped model: mp4 + PNG + frames/s")
    dm.add_argument("--model", default="driving", help="shipped model name or folder (default: driving)")
    dm.add_argument("--steps", type=positive_int, default=48)
    dm.add_argument("--envs", type=positive_int, default=2)
    dm.add_argument("--out", default="demo")
    dm.add_argument("--seed", type=nonneg_int, default=0)
    dm.add_argument("--decoder", default="token", choices=["token", "diffusion"])
    dm.add_argument("--mode", default="parallel", choices=["sequential", "parallel"])
    dm.add_argument("--device", default="auto")
    dm.set_defaults(func=_demo)


def _add_rollout(sub) -> None:
    ro = sub.add_parser("rollout", help="imagined episodes on Ray workers, streamed into a zarr store")
    ro.add_argument("--model", default="driving", help="shipped model name or folder (default: driving)")
    ro.add_argument("--policy", default="random", help="random, road (pixel road follower), a .npy plan (T, A), "
                    "a ConvPolicy folder, or module:callable")
    ro.add_argument("--episodes", type=positive_int, required=True)
    ro.add_argument("--horizon", type=positive_int, required=True)
    ro.add_argument("--workers", type=positive_int, default=2, help="model replicas (Ray actors)")
    ro.add_argument("--envs-per-worker", type=positive_int, default=8)
    ro.add_argument("--gpus-per-worker", type=nonneg_float, default=0.0, help="0 = CPU; 0.25 = four replicas per GPU")
    ro.add_argument("--out", required=True)
    ro.add_argument("--seed", type=nonneg_int, default=0)
    ro.add_argument("--decoder", default="token", choices=["token", "diffusion"])
    ro.add_argument("--mode", default="parallel", choices=["sequential", "parallel"])
    ro.add_argument("--address", default=None, help="Ray cluster address ('auto' on a cluster); default: local")
    ro.add_argument("--quiet", action="store_true")
    ro.set_defaults(func=_rollout)


def _cosmos_tokenize(args) -> None:
    import time
    from pathlib import Path

    import numpy as np

    from wfm_sim.models.cosmos_weights import load_cosmos_tokenizer, reconstruct
    from wfm_sim.viz import read_mp4, write_mp4

    model = load_cosmos_tokenizer(args.folder, variant=args.variant)
    frames = read_mp4(args.video)
    if not frames:
        raise ValueError(f"{args.video} holds no video frames")
    start = time.perf_counter()
    r = reconstruct(model, np.stack(frames), args.frames)
    seconds = time.perf_counter() - start
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    np.save(out / "tokens.npy", r["tokens"].astype(np.int32))
    write_mp4(out / "input_vs_reconstruction.mp4", [np.concatenate(p, axis=1) for p in zip(r["input"], r["reconstruction"])],
              fps=args.fps)
    print(json.dumps({"variant": model.cfg.name, "frames": len(r["input"]), "frame_size": list(r["input"].shape[1:3]),
                      "tokens": list(r["tokens"].shape), "psnr_db": round(r["psnr"], 2),
                      "seconds": round(seconds, 2), "out": str(out)}))


def _add_cosmos_tokenize(sub) -> None:
    ct = sub.add_parser("cosmos-tokenize", help="tokenize and reconstruct a video with NVIDIA's Cosmos-Tokenize1 "
                        "DV weights from a local folder (model.pt state dict)")
    ct.add_argument("folder", help="e.g. Cosmos-Tokenize1-DV4x8x8-360p holding model.pt (see README)")
    ct.add_argument("--video", required=True, help="an mp4 to tokenize")
    ct.add_argument("--variant", default=None, choices=["DV4x8x8", "DV8x8x8", "DV8x16x16"],
                    help="default: from config.json or the folder name")
    ct.add_argument("--frames", type=positive_int, default=None, help="at most this many frames (1 + k*m are used)")
    ct.add_argument("--fps", type=positive_float, default=10.0)
    ct.add_argument("--out", default="cosmos_tokens")
    ct.set_defaults(func=_cosmos_tokenize)


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="wfm-sim", description="World-foundation-model simulator tools")
    sub = p.add_subparsers(dest="command", required=True)
    for add in (_add_collect, _add_dataset, _add_train, add_evaluate, add_score, add_plan, _add_demo, _add_rollout,
                _add_generate, add_quality, add_dyna, _add_cosmos_tokenize):
        add(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    """Run a command. Every error is one line naming what was wrong and what was expected, with a
    non-zero exit (2: bad input, 1: a failed check); ``WFM_SIM_DEBUG=1`` shows the traceback."""
    args = build_parser().parse_args(argv)
    try:
        code = args.func(args)
    except KeyboardInterrupt:
        print(f"wfm-sim {args.command}: interrupted; what was committed is kept, rerun the command to complete it",
              file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - the command line answers in one line, never a traceback
        if os.environ.get("WFM_SIM_DEBUG"):
            raise
        message = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        name = " ".join(filter(None, (args.command, getattr(args, "dataset_command", None))))
        print(f"wfm-sim {name}: error: {message}", file=sys.stderr)
        return 2
    return int(code or 0)


if __name__ == "__main__":
    sys.exit(main())
