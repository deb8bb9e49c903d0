"""Export a trained run as a shipped model: int8 weights, real held-out contexts, the evaluation
of the shipped artifact itself (JSON, plot, side-by-side mp4) and a model card.

    python scripts/ship_model.py RUN_DIR NAME --data STORE [--eval-data UNSEEN] [--steps 1]

``--eval-data`` evaluates on a store the model never saw (all of its episodes; the shipped
contexts come from it too) instead of the held-out split of ``--data``.

Writes wfm_sim/pretrained/NAME/{config.json, model.safetensors, contexts.safetensors, README.md}
and docs/eval_NAME.{png,mp4}.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
from collections import Counter
from dataclasses import replace
from pathlib import Path

from wfm_sim.card import model_card, training_summary
from wfm_sim.datasets.split import load_split
from wfm_sim.datasets.store import EpisodeReader
from wfm_sim.envs.captions import CAR_CAPTIONS
from wfm_sim.envs.contexts import ContextBank
from wfm_sim.evaluation.fidelity import EvalConfig, evaluate
from wfm_sim.evaluation.report import summary_table, write_report
from wfm_sim.models import SamplingConfig, WorldModel
from wfm_sim.models.text import TEXT_FOLDER, copy_text_encoder

ROOT = Path(os.environ.get("WFM_SIM_SHIP_ROOT") or Path(__file__).resolve().parents[1])
"""Where wfm_sim/pretrained/NAME and docs/eval_NAME.* are written: this checkout, or
``$WFM_SIM_SHIP_ROOT`` (the documentation tests run the examples there, never over the shipped models)."""


def recorded_with(reader: EpisodeReader) -> str:
    """How the store's episodes were collected, counted per policy from their keys (source/policy/...)."""
    keys = [k.split("/") for k in reader.episode_keys if k.count("/") >= 1]
    if not keys:
        return f"wfm-sim collect {reader.attrs.get('source')} (policy {reader.attrs.get('policy')})"
    counts = Counter(f"{k[0]} --policy {k[1]}" for k in keys)
    return "; ".join(f"wfm-sim collect {what}: {n} episodes" for what, n in counts.items())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("run")
    ap.add_argument("name")
    ap.add_argument("--data", required=True, help="the training store (its held-out episodes are used)")
    ap.add_argument("--steps", type=int, default=1, help="default diffusion steps of the shipped decoder")
    ap.add_argument("--contexts", type=int, default=12)
    ap.add_argument("--windows", type=int, default=48)
    ap.add_argument("--temperature", type=float, default=1.0)
    ap.add_argument("--storage", default="int8")
    ap.add_argument("--eval-data", default=None, help="a store the model never saw: evaluate on all of it")
    args = ap.parse_args()

    run, out = Path(args.run), ROOT / "wfm_sim" / "pretrained" / args.name
    saved = WorldModel.read_config(run)
    model = WorldModel.from_pretrained(run, device="cpu", precision="fp32")
    # A run whose diffusion decoder was never trained ships without one (token decode only).
    untrained = model.trained is not None and "decoder" not in model.trained
    decoder = None if saved.decoder is None or untrained else replace(saved.decoder, steps=args.steps)
    if decoder is None:
        model.decoder = None
    model.cfg = replace(saved, name=args.name, decoder=decoder)
    shutil.rmtree(out, ignore_errors=True)
    model.save_pretrained(out, storage=args.storage)
    copy_text_encoder(run, out)
    reader = EpisodeReader(args.data)
    shutil.copy(run / "split.json", out / "split.json")
    if args.eval_data:  # a store the model never saw: all of it
        held_out, split, which = args.eval_data, None, "all"
        episodes = list(range(min(args.contexts, EpisodeReader(held_out).num_episodes)))
    else:  # the episodes training held out
        held_out, split, which = args.data, load_split(run, args.data), "val"
        episodes = list(split.val[: args.contexts])
    bank = ContextBank.from_store(held_out, model.cfg.cameras, model.cfg.context_video_frames, per_episode=1,
                                  episodes=episodes)
    bank.save(out)

    shipped = WorldModel.from_pretrained(out, device="cpu", precision="fp32")
    cfg = EvalConfig(horizon=8, windows=args.windows, split=which, sampling=SamplingConfig(temperature=args.temperature))
    report, videos = evaluate(shipped, held_out, cfg, split)
    report["model"] = args.name
    paths = write_report(report, videos, run / "eval_shipped", fps=model.cfg.fps / 2)
    (ROOT / "docs").mkdir(parents=True, exist_ok=True)
    shutil.copy(paths["plot"], ROOT / "docs" / f"eval_{args.name}.png")
    shutil.copy(paths["video"], ROOT / "docs" / f"eval_{args.name}.mp4")
    (out / "eval.json").write_text(json.dumps(report, indent=2) + "\n")
    summary = reader.summary()
    data = {k: summary[k] for k in ("episodes", "frames", "cameras", "fps", "source_env", "episode_length")}
    data["recorded_with"] = recorded_with(reader)
    train = training_summary(run)
    cmds = [f"wfm-sim train {c} --data {t['config'].get('data', args.data)} --out {t['config'].get('out', run)} " + " ".join(
        f"--{k.replace('_', '-')} {v}" for k, v in t["config"].items()
        if (k in ("preset", "steps", "batch_size", "lr", "tokenizer_from", "text_encoder") and v)
        or (k == "device" and str(v).startswith("cuda")))
        for c, t in train.items()]
    cmds.append(f"python scripts/ship_model.py {run} {args.name} --data {args.data} --steps {args.steps}"
                + (f" --eval-data {args.eval_data}" if args.eval_data else ""))
    card = model_card(shipped, args.name, data, train, report, cmds)
    if (out / TEXT_FOLDER).is_dir():
        card += ("\n## Text conditioning\n\nTrained on scene captions recorded from simulator state "
                 "(`wfm-sim collect ... --captions`); its frozen T5 text encoder ships in `text_encoder/` and the "
                 "imagined env loads it. Prompts it was trained with: " + ", ".join(f'"{c}"' for c in CAR_CAPTIONS) +
                 ". Prompt control is measured in the README (Scenario control by text, "
                 "`scripts/prompt_control.py`). The fidelity figures above are unprompted.\n")
    (out / "README.md").write_text(card)
    print(summary_table(report))
    sizes = {p.name: p.stat().st_size for p in out.iterdir()}
    print("shipped", out, sizes)


if __name__ == "__main__":
    main()
