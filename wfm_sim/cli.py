"""The ``wfm-sim`` command: one subcommand per command config of :mod:`wfm_sim.commands` (and
the library configs it reuses); the flags, defaults and help are generated from those configs."""

from __future__ import annotations

import argparse
import json
import os
import sys

from wfm_sim import commands as c
from wfm_sim.cli_args import Parser, command
from wfm_sim.envs.sources import SOURCES
from wfm_sim.rl.dyna import DynaConfig
from wfm_sim.rl.real_ppo import RealPPOConfig
from wfm_sim.training.loop import TrainConfig

USES = """Three uses, one command each (every command's --help shows an example):
  train RL policies in imagination   wfm-sim train policy --model driving --out runs/policy
  score policies and plans           wfm-sim score --model manipulation --policies random --graded --out runs/score
  generate synthetic driving data    wfm-sim generate --model driving --episodes 16 --out data/synthetic.zarr
Start with: wfm-sim demo (an imagined 4-camera drive with the shipped model)."""

COMPONENTS = {"tokenizer": "the video tokenizer (first)", "backbone": "the causal transformer (second)",
              "decoder": "the diffusion decoder (third)",
              "heads": "refit a trained backbone's reward / termination / success heads alone (trunk frozen)"}


def _train(sub) -> None:
    t = sub.add_parser("train", help="train one component (tokenizer, then backbone, then decoder), or a policy "
                                     "in imagination")
    tsub = t.add_subparsers(dest="component", required=True, metavar="{tokenizer,backbone,decoder,heads,policy}")
    for name, what in COMPONENTS.items():
        command(tsub, name, TrainConfig, c.run_train, f"train {what}",
                f"wfm-sim train {name} --data data/driving.zarr --out runs/driving --preset small-mv --steps 2000",
                component=name)
    command(tsub, "policy", c.TrainPolicyCommand, c.run_train_policy, "an actor-critic trained only in imagination",
            "wfm-sim train policy --model driving --out runs/policy --iterations 100")


def _dataset(sub) -> None:
    d = sub.add_parser("dataset", help="inspect, check, merge, import and export episode stores")
    dsub = d.add_subparsers(dest="dataset_command", required=True)
    command(dsub, "info", c.DatasetInfo, c.run_dataset_info, "summary of a store; optionally a PNG contact sheet",
            "wfm-sim dataset info data/driving.zarr --sheet sheet.png")
    command(dsub, "check", c.DatasetCheck, c.run_dataset_check, "validate a store; --repair drops a crashed "
            "writer's partial rows", "wfm-sim dataset check data/driving.zarr")
    command(dsub, "merge", c.DatasetMerge, c.run_dataset_merge, "append the episodes of several stores to one",
            "wfm-sim dataset merge a.zarr b.zarr --out all.zarr")
    command(dsub, "import", c.DatasetImport, c.run_dataset_import, "import robomimic HDF5 or a LeRobot dataset "
            "folder into a store", "wfm-sim dataset import lerobot ~/lerobot/pusht --out data/pusht.zarr")
    command(dsub, "export", c.DatasetExport, c.run_dataset_export, "export a store as a LeRobot v3.0 dataset",
            "wfm-sim dataset export lerobot data/synthetic.zarr --out exports/synthetic")


def build_parser() -> Parser:
    p = Parser(prog="wfm-sim", description=f"World-foundation-model simulator tools.\n\n{USES}",
               formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    command(sub, "collect", c.CollectCommand, c.run_collect, "record episodes from a real simulator into a zarr store",
            "wfm-sim collect carracing-4cam --episodes 20 --out data/driving.zarr", description=_sources())
    _dataset(sub)
    _train(sub)
    command(sub, "evaluate", c.EvaluateCommand, c.run_evaluate,
            "open-loop fidelity against real episodes, or the counterfactual report against the real twin",
            "wfm-sim evaluate driving --data data/held_out.zarr --horizon 8\n"
            "  wfm-sim evaluate driving --counterfactual --starts 8 --branches 4 --out runs/cf-driving")
    command(sub, "score", c.ScoreCommand, c.run_score, "score policies in imagination and in the real simulator",
            "wfm-sim score --model manipulation --policies random --graded --starts 20 --out runs/score")
    command(sub, "plan", c.PlanCommand, c.run_plan, "plan with CEM in imagination, execute in the real simulator",
            "wfm-sim plan --model manipulation --starts 5 --out runs/plan")
    command(sub, "demo", c.DemoCommand, c.run_demo_command, "imagined multi-camera drive: mp4 + PNG + frames/s",
            "wfm-sim demo --steps 48 --out demo")
    command(sub, "rollout", c.RolloutCommand, c.run_rollout, "imagined episodes on Ray workers, into a zarr store",
            "wfm-sim rollout --model driving --episodes 64 --horizon 32 --workers 2 --out data/imagined.zarr")
    command(sub, "generate", c.GenerateCommand, c.run_generate, "a synthetic dataset with provenance; resumable",
            "wfm-sim generate --model driving --episodes 16 --horizon 48 --out data/synthetic.zarr")
    command(sub, "downstream", c.DownstreamCommand, c.run_downstream, "does synthetic data help? downstream models "
            "trained on real and on real + synthetic data at matched steps", "wfm-sim downstream --model driving "
            "--budgets 10 50 --synthetic 40 --seeds 3 --out runs/downstream")
    command(sub, "quality", c.QualityCommand, c.run_quality, "quality and diversity of a (generated) driving "
            "dataset; filter by quality", "wfm-sim quality data/synthetic.zarr --reference data/driving.zarr")
    command(sub, "dyna", DynaConfig, c.run_dyna_command, "the Dyna loop: policy in imagination, real score, "
            "real data, world-model update", "wfm-sim dyna --model runs/rl --source carracing --data data/rl.zarr "
            "--out runs/dyna")
    command(sub, "baseline", RealPPOConfig, c.run_baseline, "the model-free baseline: SB3 PPO on the real twin "
            "with a real-step budget, scored on validation seeds", "wfm-sim baseline --source carracing-front "
            "--real-steps 75000 --out runs/ppo_real")
    command(sub, "cosmos-tokenize", c.CosmosTokenizeCommand, c.run_cosmos_tokenize, "tokenize and reconstruct a "
            "video with NVIDIA's Cosmos-Tokenize1 DV weights from a local folder",
            "wfm-sim cosmos-tokenize Cosmos-Tokenize1-DV4x8x8-360p --video clip.mp4")
    return p


def _sources() -> str:
    lines = "\n".join(f"  {n:16s} {s.description} (default policy: {s.default_policy})" for n, s in SOURCES.items())
    return f"Record episodes from a real simulator.\n\nsources:\n{lines}"


def main(argv: list[str] | None = None) -> int:
    """Run a command. Every error is one line naming what was wrong and what was expected, with a
    non-zero exit (2: bad input, 1: a failed check); ``WFM_SIM_DEBUG=1`` shows the traceback."""
    args = build_parser().parse_args(argv)
    try:
        out = args.func(args)
    except KeyboardInterrupt:
        print(f"wfm-sim {args.command}: interrupted; what was committed is kept, rerun the command to complete it",
              file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - the command line answers in one line, never a traceback
        if os.environ.get("WFM_SIM_DEBUG"):
            raise
        cause = getattr(e, "cause", None)  # an error raised in a Ray actor: say the actor's own error
        if isinstance(cause, BaseException):
            e = cause
        message = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        name = " ".join(filter(None, (args.command, getattr(args, "dataset_command", None))))
        print(f"wfm-sim {name}: error: {message}", file=sys.stderr)
        return 2
    if isinstance(out, int):
        return out
    if out is not None:
        print(json.dumps(out) if isinstance(out, dict) else out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
