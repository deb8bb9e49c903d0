"""``wfm-sim train policy``: an actor-critic trained only inside a world model (:mod:`wfm_sim.rl`)."""

from __future__ import annotations

import json

from wfm_sim.cli_args import nonneg_float, positive_float, positive_int

POLICY_FLAGS = ("model", "iterations", "num_envs", "horizon", "gamma", "uncertainty_penalty", "max_entropy",
                "reward_scale", "parallel_steps", "decoder", "init_policy")


def add_policy_flags(t) -> None:
    g = t.add_argument_group("train policy (reinforcement learning in imagination)")
    g.add_argument("--model", default=None, help="world model: shipped name or folder, with trained reward/termination heads")
    g.add_argument("--iterations", type=positive_int, default=None, help="PPO iterations (default 100)")
    g.add_argument("--num-envs", type=positive_int, default=None, help="imagined envs stepped together (default 16)")
    g.add_argument("--horizon", type=positive_int, default=None, help="imagined steps per rollout from a real context (default 15)")
    g.add_argument("--gamma", type=positive_float, default=None, help="discount (default 0.98)")
    g.add_argument("--uncertainty-penalty", type=nonneg_float, default=None,
                   help="reward minus this times the model's token entropy in nats (default 0)")
    g.add_argument("--max-entropy", type=positive_float, default=None,
                   help="end an imagined rollout where the token entropy exceeds this")
    g.add_argument("--reward-scale", type=positive_float, default=None, help="multiply rewards for the update (default 1)")
    g.add_argument("--parallel-steps", type=positive_int, default=None, help="parallel decoding passes per frame (default 4)")
    g.add_argument("--decoder", choices=["token", "diffusion"], default=None, help="default token")
    g.add_argument("--init-policy", default=None, help="a saved policy folder to fine-tune from (e.g. a Dyna iteration's)")


def check_flags(args) -> None:
    """Policy flags with a world-model component, or component flags with ``policy``: one clear error."""
    given = [f"--{k.replace('_', '-')}" for k in POLICY_FLAGS if getattr(args, k) is not None]
    if args.component != "policy":
        if given:
            raise ValueError(f"{', '.join(given)} apply to `train policy` only")
        if args.data is None:
            raise ValueError(f"train {args.component} needs --data (the episode store to train on)")
    elif args.model is None:
        raise ValueError("train policy needs --model (the world model to train in)")


def train_policy_cmd(args) -> None:
    from wfm_sim.rl import ImaginationRLConfig, train_policy

    kw = {k: getattr(args, k) for k in POLICY_FLAGS if getattr(args, k) is not None and k != "model"}
    cfg = ImaginationRLConfig(model=args.model, out=args.out, data=args.data, lr=args.lr, seed=args.seed,
                              device=args.device, precision=args.precision, progress=not args.quiet, **kw)
    last = train_policy(cfg, resume=args.resume)
    print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in last.items()}))
    print(f"policy: {cfg.out}/policy (score it: wfm-sim score --model {cfg.model} --policies {cfg.out}/policy random "
          "--real)")


def add_dyna(sub) -> None:
    d = sub.add_parser("dyna", help="the Dyna loop: policy in imagination, real score, real data, world-model update",
                       description="Each iteration: fine-tune the world model on all real data (from iteration 1), "
                                   "train the policy in imagination from the previous one, score it in both worlds "
                                   "(logged to OUT/dyna.jsonl), and collect real episodes with it. Resumable.")
    d.add_argument("--model", required=True, help="the starting world model (folder or shipped name)")
    d.add_argument("--source", required=True, help="its real simulator (a wfm-sim collect source)")
    d.add_argument("--data", required=True, help="its real training store; collected episodes are appended")
    d.add_argument("--out", required=True)
    d.add_argument("--iterations", type=positive_int, default=3)
    d.add_argument("--collect-episodes", type=positive_int, default=20)
    d.add_argument("--collect-noise", type=nonneg_float, default=0.3)
    d.add_argument("--wm-steps", type=positive_int, default=400)
    d.add_argument("--policy-iterations", type=positive_int, default=40)
    d.add_argument("--num-envs", type=positive_int, default=32)
    d.add_argument("--horizon", type=positive_int, default=15)
    d.add_argument("--score-starts", type=positive_int, default=5)
    d.add_argument("--uncertainty-penalty", type=nonneg_float, default=0.2)
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--quiet", action="store_true")
    d.set_defaults(func=_dyna)


def _dyna(args) -> None:
    from wfm_sim.rl.dyna import DynaConfig, run_dyna

    cfg = DynaConfig(model=args.model, source=args.source, data=args.data, out=args.out, iterations=args.iterations,
                     collect_episodes=args.collect_episodes, collect_noise=args.collect_noise, wm_steps=args.wm_steps,
                     policy_iterations=args.policy_iterations, num_envs=args.num_envs, horizon=args.horizon,
                     score_starts=args.score_starts, uncertainty_penalty=args.uncertainty_penalty, seed=args.seed,
                     progress=not args.quiet)
    for line in run_dyna(cfg):
        print(json.dumps({k: round(v, 2) if isinstance(v, float) else v for k, v in line.items()}))
