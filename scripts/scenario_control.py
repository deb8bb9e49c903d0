"""Scenario control from real contexts, checked by an off-road detector trained on real frames.

    python scripts/scenario_control.py --model driving --out runs/scenario

Writes runs/scenario/scenario.json (see wfm_sim.synthetic.scenarios); rerun to complete a killed run.
"""

from __future__ import annotations

import argparse
import json

from wfm_sim.synthetic.scenarios import ScenarioConfig, scenario_control

ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
ap.add_argument("--out", required=True)
for name, default in vars(ScenarioConfig()).items():
    ap.add_argument("--" + name.replace("_", "-"), type=type(default) if default is not None else str, default=default)
args = vars(ap.parse_args())
out = args.pop("out")
report = scenario_control(ScenarioConfig(**args), out)
print(json.dumps({k: report[k] for k in ("detector", "imagined", "real")}, indent=1))
