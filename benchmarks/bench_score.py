"""Policy scoring throughput: policies x starts x samples scored per second in imagination and
in the real simulator, for imagined batch sizes 8 and 32.

    python benchmarks/bench_score.py [--model manipulation] [--starts 8] [--horizon 20]

Imagined episodes run batched in one ImaginedVectorEnv (parallel decoding, token decode); real
ones in real twins (MuJoCo / Box2D with rendering at the model's frame size). Context encoding
and env resets are included: this is what `wfm-sim score` spends.
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("MUJOCO_GL", "egl")

from common import emit, machine  # noqa: E402
from wfm_sim.evaluation.scoring import SHIPPED_SOURCES, ScoreConfig, score_policies  # noqa: E402
from wfm_sim.models import WorldModel  # noqa: E402
from wfm_sim.policies import RandomPolicy  # noqa: E402
from wfm_sim.envs.real import RealEnv  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="manipulation")
    ap.add_argument("--starts", type=int, default=8)
    ap.add_argument("--horizon", type=int, default=20)
    args = ap.parse_args()
    info = machine()
    model = WorldModel.from_pretrained(args.model)
    source = SHIPPED_SOURCES[args.model]
    space = RealEnv(source).action_space
    rows = []
    for batch in (8, 32):
        cfg = ScoreConfig(starts=args.starts, samples=4, horizon=args.horizon, batch=batch, videos=0)
        rep = score_policies(model, source, {"random": RandomPolicy(space)}, cfg, progress=False)
        s = rep["speed"]
        rows.append({"imagined_batch": batch, "imagined_episodes_s": s["imagined_episodes_per_s"],
                     "imagined_steps_s": s["imagined_steps_per_s"], "real_episodes_s": s["real_episodes_per_s"],
                     "real_steps_s": s["real_steps_per_s"],
                     "imagined_over_real": s["imagined_steps_per_s"] / s["real_steps_per_s"]})
    emit(f"policy scoring ({args.model} vs {source}, horizon {args.horizon})", rows, info)


if __name__ == "__main__":
    main()
