"""Make the shipped ``pixel-driver`` policy: the scripted CarRacing driver distilled into a 4-camera
pixel policy by behaviour cloning, then DAgger in the real twin.

The scripted driver reads the simulator's state (``privileged``), so it cannot act on imagined
frames; this policy reads only the four 64x64 cameras and drives about as well. It labels frames
for the downstream study (``wfm-sim downstream --teacher pixel-driver``) and is a strong pixel
policy to score. About 25 minutes on 2 CPU cores:

    python scripts/pixel_driver.py --out runs/pixel-driver

Seeds: the cloned episodes 7,000,000+, the DAgger rounds 7,100,000+ (never used to train a world
model or to score). Copy the folder to ``wfm_sim/pretrained/policies/pixel-driver`` and score it
(the card's command) to ship it.
"""

from __future__ import annotations

import argparse
import json

from wfm_sim.policies.bc import BCConfig, train_dagger
from wfm_sim.policies.driving import TrackFollower
from wfm_sim.rollout.record import record


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="runs/pixel-driver")
    p.add_argument("--data", default="data/driver4cam.zarr", help="store for the scripted driver's episodes")
    p.add_argument("--episodes", type=int, default=30)
    p.add_argument("--rounds", type=int, default=4)
    a = p.parse_args()
    print(json.dumps(record("carracing-4cam", a.data, a.episodes, policy="driver", seed=7_000_000)))
    rec = train_dagger(a.data, a.out, "carracing-4cam", TrackFollower(noise=0.0),
                       BCConfig(episodes=a.episodes, steps=1500, shift=4, seed=0), rounds=a.rounds,
                       episodes_per_round=20, steps_per_round=1000, first_seed=7_100_000, num_envs=10)
    print(json.dumps(rec["rounds"]))


if __name__ == "__main__":
    main()
