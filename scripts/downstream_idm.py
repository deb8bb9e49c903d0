"""Does synthetic driving data help a downstream model? One command, every stage resumable.

    python scripts/downstream_idm.py --data data/driving_mix.zarr --out runs/downstream

1. Real episodes for the downstream model come from the shipped driving model's *training* split
   (a few, and more); its held-out split (episodes the world model never saw) is the test set.
2. ``wfm-sim generate`` imagines synthetic episodes from starts in the few real episodes, driven by
   real action sequences cut from those same episodes (so synthetic actions follow the real
   action distribution), with full provenance.
3. An inverse-dynamics model (``wfm_sim.synthetic.downstream``) is trained per arm with the same
   steps, batch, learning rate and seeds: real alone, real + synthetic, synthetic alone; R^2 per
   action dimension on the held-out real transitions.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from wfm_sim.datasets import EpisodeReader, filter_store
from wfm_sim.datasets.split import load_split
from wfm_sim.models.world_model import resolve_pretrained
from wfm_sim.synthetic.downstream import IDMConfig, load_transitions, run_arms, table
from wfm_sim.synthetic.generate import GenerateConfig, generate

ap = argparse.ArgumentParser()
ap.add_argument("--data", default="data/driving_mix.zarr", help="the real store the shipped driving model was trained on")
ap.add_argument("--model", default="driving")
ap.add_argument("--out", default="runs/downstream")
ap.add_argument("--few", type=int, default=10, help="real episodes in the small real set")
ap.add_argument("--many", type=int, default=50, help="real episodes in the large real set (includes the few)")
ap.add_argument("--synthetic", type=int, default=64, help="synthetic episodes")
ap.add_argument("--horizon", type=int, default=48)
ap.add_argument("--steps", type=int, default=1500)
ap.add_argument("--seeds", type=int, default=3)
ap.add_argument("--test-stride", type=int, default=3, help="every k-th held-out transition is tested")
args = ap.parse_args()

out = Path(args.out)
out.mkdir(parents=True, exist_ok=True)
split = load_split(resolve_pretrained(args.model), args.data)
reader = EpisodeReader(args.data)
val = [int(e) for e in split.val]
train_eps = [e for e in range(reader.num_episodes) if e not in set(val)]
order = np.random.default_rng(0).permutation(train_eps).tolist()
few, many = sorted(order[: args.few]), sorted(order[: args.many])

# the few real episodes as the user's own store: generate starts from them
real_few = out / f"real{args.few}.zarr"
filter_store(args.data, real_few, few, {"why": "downstream study: the small real set"})
plan_path = out / "plan.npy"
if not plan_path.is_file():
    rng = np.random.default_rng(1)
    acts = []
    for i in range(args.synthetic):  # a real action window from one of the few episodes
        a, b = reader.episode_bounds(few[i % len(few)])
        s = int(rng.integers(a, b - args.horizon))
        acts.append(reader.read("action", s, s + args.horizon))
    np.save(plan_path, np.stack(acts).astype(np.float32))
syn = out / "synthetic.zarr"
gen = generate(GenerateConfig(model=args.model, episodes=args.synthetic, horizon=args.horizon, starts=str(real_few),
                              policy=str(plan_path), seed=0, envs=8), syn)
print(json.dumps({"generate": gen}))

space = reader.action_space
t_few = load_transitions(args.data, few)
t_many = load_transitions(args.data, many)
t_syn = load_transitions(syn)
test = load_transitions(args.data, val, stride=args.test_stride)
arms = {f"real {args.few} episodes": [t_few],
        f"real {args.few} + synthetic {args.synthetic}x{args.horizon}": [t_few, t_syn],
        f"synthetic {args.synthetic}x{args.horizon} only": [t_syn],
        f"real {args.many} episodes": [t_many],
        f"real {args.many} + synthetic {args.synthetic}x{args.horizon}": [t_many, t_syn]}
report = run_arms(arms, test, space, IDMConfig(steps=args.steps), list(range(args.seeds)), out=out)
report["data"] = {"store": args.data, "few": few, "many": many, "test_episodes": val, "synthetic": str(syn),
                  "generate": gen}
(out / "downstream.json").write_text(json.dumps(report, indent=2) + "\n")
print(table(report))
