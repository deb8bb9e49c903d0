"""Does a reward ensemble know where the world model's reward is wrong? One command.

    python scripts/ensemble_calibration.py --model driving --source carracing-4cam --out runs/ensemble_driving

1. Records real episodes to fit the ensemble on (``--fit-episodes`` of the ``mixed`` driver,
   which leaves the road, spins and recovers, plus a third as many of the scripted driver;
   seeds 9,000,000+, never used to train a shipped model).
2. Copies the model and fits ``--members`` extra reward heads on that data, trunk frozen
   (``wfm-sim train heads --reward-ensemble``).
3. Records held-out episodes of three policies (driver, mixed, random; seeds 9,100,000+) and
   replays them through the backbone with their real frames forced in (teacher forcing): at every
   step the reward head's error against the real reward, and the members' spread.
4. Reports whether the spread ranks the errors (Spearman over all steps), mean error by spread
   quartile, and the spread per policy; ``calibration.json`` and ``calibration.png``.

Everything resumes: finished stores, heads and the report are kept on a rerun.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import numpy as np
import torch

from wfm_sim.datasets import EpisodeReader
from wfm_sim.models import WorldModel
from wfm_sim.models.world_model import resolve_pretrained
from wfm_sim.rollout import record
from wfm_sim.training.loop import TrainConfig, train

POLICIES = ("driver", "mixed", "random")


def fit(args, out: Path) -> Path:
    store = out / "fit.zarr"
    record(args.source, store, args.fit_episodes, policy="mixed", seed=9_000_000)
    record(args.source, store, max(1, args.fit_episodes // 3), policy="driver", seed=9_050_000)
    model = out / "model"
    if not (model / ".fitted").is_file():
        shutil.rmtree(model, ignore_errors=True)
        shutil.copytree(resolve_pretrained(args.model), model)  # a text model's encoder and contexts too
        train(TrainConfig("heads", str(store), str(model), steps=args.steps, batch_size=args.batch_size,
                          lr=args.lr, reward_ensemble=args.members, eval_every=args.steps, save_every=args.steps,
                          num_workers=0))
        (model / ".fitted").write_text("")
    return model


@torch.no_grad()
def replay(model: WorldModel, store: Path) -> dict:
    """Per step of every episode: the reward head, the real reward, the members' spread."""
    r = EpisodeReader(store)
    C, cams = model.cfg.context_frames, model.cfg.cameras
    eps = [r.episode(i) for i in range(r.num_episodes)]
    T = min(len(e) for e in eps)
    tokens = []
    for e in eps:
        frames = torch.from_numpy(np.stack([e.obs[c][:T] for c in cams], axis=1))[None]  # (1, T, v, H, W, 3)
        tokens.append(model.encode(frames)[0].flatten(1))
    tokens = torch.stack(tokens)  # (E, T, n)
    acts = torch.as_tensor(np.stack([e.action[:T] for e in eps]), dtype=torch.float32)[:, :, None]  # (E, T, f=1, a)
    im = model.imagine(len(eps), mode="parallel")
    im.reset(None, tokens=tokens[:, :C], actions=acts[:, : C - 1], seeds=[0] * len(eps))
    pred, spread = [], []
    for j in range(C - 1, T - 1):
        out = im.step(acts[:, j], None, frame=tokens[:, j + 1])
        pred.append(out.reward.cpu().numpy())
        spread.append(out.reward_std.cpu().numpy())
    real = np.stack([e.reward[C - 1 : T - 1] for e in eps], axis=1)
    return {"pred": np.stack(pred), "real": real, "spread": np.stack(spread),
            "policy": [k.split("/")[1] if "/" in k else k for k in r.episode_keys]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="driving")
    ap.add_argument("--source", default="carracing-4cam")
    ap.add_argument("--out", default="runs/ensemble_driving")
    ap.add_argument("--fit-episodes", type=int, default=30)
    ap.add_argument("--eval-episodes", type=int, default=4, help="held-out episodes per policy")
    ap.add_argument("--members", type=int, default=4)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--lr", type=float, default=1e-3)
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    folder = fit(args, out)
    model = WorldModel.from_pretrained(folder, device="cpu")
    model.eval()
    rows = {}
    for i, name in enumerate(POLICIES):
        store = out / f"eval_{name}.zarr"
        record(args.source, store, args.eval_episodes, policy=name, seed=9_100_000 + 1_000 * i)
        rows[name] = replay(model, store)
    from scipy.stats import spearmanr

    err = np.concatenate([np.abs(v["pred"] - v["real"]).ravel() for v in rows.values()])
    spread = np.concatenate([v["spread"].ravel() for v in rows.values()])
    q = np.quantile(spread, [0.25, 0.5, 0.75])
    bins = np.digitize(spread, q)
    report = {
        "model": args.model, "members": args.members, "heads_steps": args.steps, "fit_episodes": args.fit_episodes,
        "steps": int(len(err)), "spearman_spread_vs_abs_error": float(spearmanr(spread, err)[0]),
        "abs_error_by_spread_quartile": [float(err[bins == b].mean()) for b in range(4)],
        "spread_quartile_edges": [float(x) for x in q],
        "per_policy": {k: {"mean_spread": float(v["spread"].mean()), "mean_abs_error": float(np.abs(v["pred"] - v["real"]).mean()),
                           "real_return": float(v["real"].sum(0).mean()), "replayed_return": float(v["pred"].sum(0).mean())}
                       for k, v in rows.items()},
    }
    (out / "calibration.json").write_text(json.dumps(report, indent=2))
    plot(report, out / "calibration.png")
    print(json.dumps(report, indent=2))


def plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.6))
    a.bar(["Q1 (surest)", "Q2", "Q3", "Q4 (least sure)"], report["abs_error_by_spread_quartile"], color="tab:blue")
    a.set_ylabel("|reward head - real reward|, mean")
    a.set_title(f"error by ensemble-spread quartile (Spearman {report['spearman_spread_vs_abs_error']:.2f})", fontsize=9)
    pol = report["per_policy"]
    b.bar(list(pol), [v["mean_spread"] for v in pol.values()], color="tab:orange", label="ensemble spread")
    b.bar(list(pol), [v["mean_abs_error"] for v in pol.values()], color="none", edgecolor="k", label="|error|")
    b.set_title("per policy (held-out real episodes)", fontsize=9)
    b.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
