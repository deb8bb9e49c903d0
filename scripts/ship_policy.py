"""Ship an imagination-trained policy with the world model it was trained in, and refresh its card.

    python scripts/ship_policy.py POLICY_DIR NAME --model MODEL_DIR        # copy the artifacts
    python scripts/ship_policy.py POLICY_DIR NAME --score runs/score-NAME  # then its score report

Writes ``wfm_sim/pretrained/policies/NAME/``: the policy (``config.json``, ``model.safetensors``)
and, with ``--model``, ``world_model/``: that model's weights stored int8 (weight-only,
per-channel scales), its config, its context bank and a text model's T5 encoder. Score the
shipped pair from there (``wfm-sim score --model policies/NAME/world_model --policies NAME ...``),
then pass the report folder with ``--score`` (and ``--command``, the score command, for the card):
its ``report.json`` becomes ``score.json`` and the
card's header and score section are regenerated from it (``wfm_sim.card.refresh_card``). The
card's prose (``README.md`` beside it) is written by hand and kept.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from wfm_sim import checkpoint as ckpt
from wfm_sim.card import refresh_card
from wfm_sim.models import WorldModel
from wfm_sim.models.text import copy_text_encoder
from wfm_sim.policies.actor_critic import ActorCritic
from wfm_sim.policies.registry import SHIPPED_POLICIES


def ship(policy: Path, name: str, model: Path | None, score: Path | None, command: str | None = None) -> Path:
    out = SHIPPED_POLICIES / name
    if model is not None:
        ActorCritic.from_pretrained(policy)  # refuses a folder that is not a saved ActorCritic
        out.mkdir(parents=True, exist_ok=True)
        for f in ("config.json", "model.safetensors"):
            shutil.copy(policy / f, out / f)
        wm = out / "world_model"
        shutil.rmtree(wm, ignore_errors=True)
        WorldModel.from_pretrained(model, device="cpu", precision="fp32").save_pretrained(wm, storage="int8")
        if (model / "contexts.safetensors").is_file():
            shutil.copy(model / "contexts.safetensors", wm / "contexts.safetensors")
        copy_text_encoder(model, wm)
    if score is not None:
        report = json.loads((score / "report.json").read_text())
        names = [r["policy"] for r in report["policies"]]
        if name not in names:
            raise ValueError(f"{score}/report.json scored {names}, not {name!r}: score the shipped policy by its name")
        if (out / "world_model").is_dir():  # the report names a model by its config; name the shipped folder it scored
            report["model"] = f"policies/{name}/world_model"
        if command:
            report["command"] = command
        ckpt.atomic_write_json(out / "score.json", report)
        if (out / "README.md").is_file():
            refresh_card(out)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("policy", type=Path, help="a saved ActorCritic folder (a run's policy/)")
    ap.add_argument("name", help="the shipped name (wfm_sim/pretrained/policies/NAME)")
    ap.add_argument("--model", type=Path, help="the world model folder the policy was trained in")
    ap.add_argument("--score", type=Path, help="a `wfm-sim score` report folder that scored NAME")
    ap.add_argument("--command", help="the score command that wrote it, for the card")
    a = ap.parse_args()
    if a.model is None and a.score is None:
        ap.error("pass --model (copy the artifacts), --score (store the report and refresh the card), or both")
    print(ship(a.policy, a.name, a.model, a.score, a.command))


if __name__ == "__main__":
    main()
