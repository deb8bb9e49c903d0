"""Train the graded behaviour-cloned policy set for a model's scoring, in one command.

    python scripts/graded_bc.py data/push_expert.zarr runs/graded_bc/manipulation

Eight ConvPolicies cloned from the store's expert episodes with less data, fewer steps or
noisier targets (see wfm_sim.policies.bc.GRADED); finished ones are kept on a rerun. Score them:
``wfm-sim score --model manipulation --policies runs/graded_bc/manipulation/* random --real``.
"""

import argparse
import json

from wfm_sim.policies.bc import GRADED, train_graded_set

ap = argparse.ArgumentParser()
ap.add_argument("data", help="store of expert episodes (e.g. wfm-sim collect metaworld-push --episodes 200)")
ap.add_argument("out", help="folder for the policies (one sub-folder each)")
ap.add_argument("--only", nargs="*", default=None, choices=list(GRADED))
args = ap.parse_args()
res = train_graded_set(args.data, args.out, args.only)
print(json.dumps({k: round(v["final_mse"], 4) for k, v in res.items()}, indent=2))
