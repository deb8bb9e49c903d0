"""Real return of several policies on the same real seeds, full episodes, one table.

    python scripts/real_returns.py --source carracing-front --seed 3000000 --episodes 20 \\
        --policies runs/ppo_real/best carracing-dyna driver random --out runs/test_returns.json

Each policy plays ``--episodes`` full episodes of the real twin from seeds ``--seed``... (the
source's episode length minus one step, as ``wfm-sim score`` and ``wfm-sim baseline`` do). Every
``--policy`` form works (names, shipped policies, folders); an SB3 baseline folder plays the way
it validated best unless ``--sb3-both`` asks for its mean and sampled actions each.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from wfm_sim.envs.sources import get_source
from wfm_sim.envs.spaces import action_space
from wfm_sim.policies import make_policy
from wfm_sim.rl.real_ppo import SB3PixelPolicy, evaluate_real


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--source", default="carracing-front")
    ap.add_argument("--seed", type=int, default=3_000_000)
    ap.add_argument("--episodes", type=int, default=20)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--policies", nargs="+", required=True)
    ap.add_argument("--sb3-both", action="store_true", help="score SB3 folders acting on the mean and sampling")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    src = get_source(args.source)
    seeds = list(range(args.seed, args.seed + args.episodes))
    rows = {}
    for name in args.policies:
        policy = make_policy(name, action_space(src.action_space), args.source)
        variants = {name: policy}
        if args.sb3_both and isinstance(policy, SB3PixelPolicy):
            variants = {f"{name} (mean)": SB3PixelPolicy.from_pretrained(name, deterministic=True),
                        f"{name} (sampled)": SB3PixelPolicy.from_pretrained(name, deterministic=False)}
        for label, p in variants.items():
            t0 = time.perf_counter()
            ret = evaluate_real(p, args.source, seeds, args.size)
            rows[label] = {"mean": float(np.mean(ret)), "std": float(np.std(ret)), "returns": ret,
                           "seconds": time.perf_counter() - t0}
            print(f"{label:50s} {np.mean(ret):8.1f} +- {np.std(ret):6.1f}", flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps({"source": args.source, "seeds": [seeds[0], len(seeds)], "policies": rows},
                                             indent=2))


if __name__ == "__main__":
    main()
