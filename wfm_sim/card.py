"""Model cards: what a shipped model was trained on, how, for how long, and how well it does."""

from __future__ import annotations

import json
from pathlib import Path

from wfm_sim.models.world_model import WorldModel


def _last_lines(path: Path) -> tuple[dict, dict]:
    """Last training line and last line with held-out metrics of a metrics.jsonl."""
    last, val = {}, {}
    for line in path.read_text().splitlines():
        d = json.loads(line)
        last = d
        if any(k.startswith("val/") for k in d):
            val = d
    return last, val


def training_summary(run: Path) -> dict:
    """Steps, wall time, config and last held-out metrics of each component trained in ``run``
    (a tokenizer taken with ``--tokenizer-from`` is read from the run it came from)."""
    out = {}
    for comp in ("tokenizer", "backbone", "decoder"):
        path = run / "train_state" / comp / "metrics.jsonl"
        if not path.is_file() and comp == "tokenizer":
            backbone = run / "train_state" / "backbone" / "state.json"
            source = json.loads(backbone.read_text()).get("extra", {}).get("config", {}).get("tokenizer_from") \
                if backbone.is_file() else None
            donor = training_summary(Path(source)) if source else {}
            if "tokenizer" in donor:
                out["tokenizer"] = donor["tokenizer"]
            continue
        if path.is_file():
            last, val = _last_lines(path)
            state = json.loads((run / "train_state" / comp / "state.json").read_text())
            out[comp] = {"steps": last.get("step"), "elapsed_s": state.get("extra", {}).get("elapsed_s"),
                         "config": state.get("extra", {}).get("config", {}),
                         "held_out": {k[4:]: round(v, 4) for k, v in val.items() if k.startswith("val/")}}
    return out


def model_card(model: WorldModel, name: str, data: dict, training: dict, report: dict, commands: list[str]) -> str:
    c = model.cfg
    n = lambda m: sum(p.numel() for p in m.parameters()) / 1e6  # noqa: E731
    gpu = [comp for comp, t in training.items() if str(t.get("config", {}).get("device", "")).startswith("cuda")]
    where = "on CPU" if not gpu else f"on CPU, except the {' and '.join(gpu)} (trained on a GPU)"
    lines = [f"# {name}", "", f"World model of `{c.source_env}` ({', '.join(c.cameras)}; {c.tokenizer.image_size}x"
             f"{c.tokenizer.image_size} frames at {c.fps:g} Hz), trained by wfm_sim {where}.", "",
             "## Architecture", "",
             f"- tokenizer: {n(model.tokenizer):.2f}M params, {c.tokenizer.grid}x{c.tokenizer.grid} tokens per view, "
             f"FSQ {list(c.tokenizer.levels)} ({c.tokenizer.vocab_size} codes)",
             f"- backbone: {n(model.backbone):.2f}M params, width {c.backbone.dim}, depth {c.backbone.depth}, "
             f"context {c.backbone.max_frames} frames x {c.geometry.tokens_per_frame + 1} positions",
             f"- diffusion decoder: {n(model.decoder):.2f}M params, residual over the {c.decoder.residual.replace('_', ' ')}, "
             f"previous frame as a noise-augmented hint, {c.decoder.steps} Euler step(s) by default"
             if model.decoder is not None else "- no diffusion decoder",
             "", "## Data", "", "```", json.dumps(data, indent=2), "```", "", "## Training", "", "```", *commands, "```", ""]
    for comp, t in training.items():
        wall = f"{t['elapsed_s'] / 60:.0f} min wall time" if t["elapsed_s"] else "wall time not recorded"
        lines.append(f"- {comp}: {t['steps']} steps, {wall}; held-out: "
                     + ", ".join(f"{k} {v}" for k, v in t["held_out"].items()))
    hf = report.get("horizon_frames", report["horizon"])  # PSNR / SSIM are per frame
    unseen = report.get("split") == "all"
    lines += ["", "## Open-loop fidelity (" + (f"`{Path(str(report['data'])).name}`, episodes never used in training"
                                               if unseen else "held-out episodes") + ")", "",
              f"{report['windows']} windows, context {report['context_frames']} frames, horizon {report['horizon']}"
              + (f" steps of {report['frames_per_step']} frames" if report.get("frames_per_step", 1) > 1 else "") + ", "
              f"sampling {report['sampling']}, parallel decoding in {report['parallel_steps']} steps.", "",
              "| method | " + " | ".join(f"PSNR@{h}" for h in range(1, hf + 1)) + " |",
              "| --- |" + " --- |" * hf]
    for k, r in report["results"].items():
        lines.append(f"| {k} | " + " | ".join(f"{v:.2f}" for v in r["psnr_mean"]) + " |")
    lines += ["", "| method | " + " | ".join(f"SSIM@{h}" for h in range(1, hf + 1)) + " |",
              "| --- |" + " --- |" * hf]
    for k, r in report["results"].items():
        lines.append(f"| {k} | " + " | ".join(f"{v:.3f}" for v in r["ssim_mean"]) + " |")
    lines += ["", "Controllability (mean PSNR with true minus shuffled actions): "
              + ", ".join(f"{k} {v:+.2f} dB" for k, v in report["controllability_delta_psnr"].items()), "",
              "Decoding real frames from their own tokens: "
              + ", ".join(f"{k} {v['psnr']:.2f} dB / SSIM {v['ssim']:.3f}" for k, v in report["decoder_reconstruction"].items()),
              "", "Heads along the rollout: " + ", ".join(
                  f"{k}: " + ", ".join(f"{m} {r[m]:.3f}" for m in ("reward_mae", "terminated_acc", "success_acc") if m in r)
                  for k, r in report["results"].items() if "reward_mae" in r), ""]
    return "\n".join(lines)


# ------------------------------------------------------------------ sections generated from reports

def counterfactual_section(report: dict) -> str:
    """The card section of a counterfactual report (``wfm-sim evaluate --counterfactual``)."""
    s, cfg = report["summary"], report["config"]
    lines = ["## Counterfactual report (does the model know what actions do?)", "",
             f"{cfg['starts']} real start states (seeds {cfg['start_seed']}+, never used in training, after "
             f"{cfg['lead']} steps of the scripted policy), {cfg['branches']} action branches each "
             f"({cfg['policy_branches']} the scripted policy going on, the others random, held {cfg['hold']} steps), "
             f"played in the real twin `{report['source']}` and imagined from the same context; probes trained on "
             f"{cfg['probe_starts']} other starts' real branches. Figures at horizon {s['at']}:", "",
             "| figure | value | target |", "| --- | --- | --- |",
             f"| action discrimination (0.5: actions ignored) | {s['discrimination']:.2f} | >= 0.95 |",
             f"| spread between branches, imagined / real | {s['spread_ratio']:.2f} | 1 |"]
    if "inverse_dynamics_kept" in s:
        lines += [f"| inverse-dynamics R2 on real frames | {s['inverse_dynamics_real_r2']:.2f} | |",
                  f"| inverse-dynamics R2 on imagined frames | {s['inverse_dynamics_imagined_r2']:.2f} | >= 80 % of real |"]
    for name, e in report["events"].items():
        if "agreement" in e:
            t = s["at"] - 1
            lines.append(f"| {name} agreement, imagined vs real (rates {e['real_rate'][t]:.2f} real, "
                         f"{e['imagined_rate'][t]:.2f} imagined; probe on real frames "
                         f"{e['probe_on_real_agreement'][t]:.2f}) | {e['agreement'][t]:.2f} | >= 0.90 |")
    lines += ["", f"Discrimination per step 1..{report['horizon']}: "
              + " ".join(f"{v:.2f}" for v in report["discrimination"]), "",
              f"Command: `wfm-sim evaluate {report['model']} --counterfactual --horizon {report['horizon']}` "
              f"(report: `counterfactual.json` beside this card)."]
    return "\n".join(lines)


def use_section(reports: dict) -> str:
    """Intended use and limitations, read off the stored reports (``eval.json``, ``counterfactual.json``)."""
    ev, cf = reports.get("eval.json"), reports.get("counterfactual.json")
    lines = ["## Intended use", "",
             "A simulator to train and test against: an imagined Gymnasium environment "
             "(`wfm_sim.envs.ImaginedVectorEnv(n, MODEL)`) for RL in imagination, scoring policies and plans "
             "before they run for real (`wfm-sim score`), and synthetic data with provenance (`wfm-sim generate`). "
             "Research on world models at laptop scale; not for decisions about real vehicles or robots.", "",
             "## Limitations", ""]
    if ev:
        base = ev["results"]["baseline/repeat_last"]["psnr_mean"]
        best = max((r["psnr_mean"][0], k) for k, r in ev["results"].items() if not k.startswith(("baseline", "shuffled")))
        lines.append(f"- Open loop, the best method ({best[1]}) makes {best[0]:.2f} dB at horizon 1 against "
                     f"{base[0]:.2f} dB for repeating the last frame (`eval.json`).")
    if cf:
        s = cf["summary"]
        lines.append(f"- Actions: at horizon {s['at']}, imagined branches of different actions are told apart "
                     f"{s['discrimination']:.0%} of the time (50 %: actions ignored; target 95 %; `counterfactual.json`).")
        for name, e in cf["events"].items():
            if "agreement" in e:
                t = s["at"] - 1
                lines.append(f"- `{name}` happens in {e['real_rate'][t]:.0%} of real branches by step {s['at']} and "
                             f"in {e['imagined_rate'][t]:.0%} of imagined ones (agreement {e['agreement'][t]:.0%}).")
    lines.append("- 64-pixel frames: objects of a few pixels (a puck, a goal marker) may not survive tokenization.")
    return "\n".join(lines)


def _policy_row(score: dict, name: str) -> dict:
    rows = [r for r in score["policies"] if r["policy"] == name]
    if not rows:
        raise ValueError(f"score.json holds no policy named {name!r} (it scored {[r['policy'] for r in score['policies']]})")
    return rows[0]


def policy_score_section(score: dict, name: str) -> str:
    """The card section of a policy's stored score report (``wfm-sim score``, kept as ``score.json``)."""
    c = score["config"]
    lines = ["## Score (real simulator, seeds never used in training or selection)", "",
             f"{c['starts']} start seeds from {c['start_seed']} in the real twin `{score['source']}`, "
             f"{c['horizon']} steps each; imagined returns from the same starts in the world model "
             f"`{score['model']}` ({c['samples']} sample(s) per start):", "",
             "| policy | real return, mean +- std | 95 % interval of the mean | imagined return |",
             "| --- | --- | --- | --- |"]
    for r in sorted(score["policies"], key=lambda r: -r["real_return"]):
        lo, hi = r["real_return"] - r["real_return_ci"], r["real_return"] + r["real_return_ci"]
        label = f"**{r['policy']}** (this policy)" if r["policy"] == name else r["policy"]
        imagined = f"{r['imagined_return']:.1f}" if "imagined_return" in r else "- (runs in the real simulator only)"
        lines.append(f"| {label} | {r['real_return']:.1f} +- {r['real_return_std']:.1f} | {lo:.1f} .. {hi:.1f} | "
                     f"{imagined} |")
    lines += ["", f"Command: `{score['command']}` (report: `score.json` beside this card)."] if "command" in score else []
    return "\n".join(lines)


def policy_card_header(name: str, score: dict) -> str:
    """The Hub card header of a policy: the reinforcement-learning model-index of its real return."""
    r = _policy_row(score, name)
    metrics = [{"type": "mean_reward", "name": "real return (mean +- std)",
                "value": f"{r['real_return']:.2f} +/- {r['real_return_std']:.2f}"}]
    if "imagined_return" in r:
        metrics.append({"type": "mean_reward", "name": f"imagined return in {score['model']}",
                        "value": f"{r['imagined_return']:.2f} +/- {r['imagined_return_std']:.2f}"})
    header = {"license": "apache-2.0", "library_name": "wfm_sim",
              "tags": ["reinforcement-learning", "model-based-rl", "world-model", "gymnasium", "CarRacing-v3"],
              "model-index": [{"name": name, "results": [{
                  "task": {"type": "reinforcement-learning", "name": "reinforcement-learning"},
                  "dataset": {"name": f"{score['source']} seeds {score['config']['start_seed']}+", "type": "real-twin"},
                  "metrics": metrics}]}]}
    return "---\n" + _yaml(header) + "---"


def card_header(name: str, reports: dict) -> str:
    """The Hugging Face Hub card header (YAML): license, tags, and a ``model-index`` of the stored reports' figures."""
    ev, cf = reports.get("eval.json"), reports.get("counterfactual.json")
    results = []
    if ev:
        metrics = [{"type": "psnr", "name": f"PSNR at horizon {h} ({k})", "value": round(r["psnr_mean"][h - 1], 2)}
                   for k, r in ev["results"].items() for h in (1, ev.get("horizon_frames", ev["horizon"]))]
        results.append({"task": {"type": "video-prediction", "name": "open-loop next-frame prediction"},
                        "dataset": {"name": ("unseen episodes of " if ev.get("split") == "all" else "held-out episodes of ")
                                    + Path(str(ev["data"])).name, "type": "wfm_sim-store"},
                        "metrics": metrics})
    if cf:
        s = cf["summary"]
        metrics = [{"type": "accuracy", "name": f"action discrimination at horizon {s['at']}",
                    "value": round(s["discrimination"], 3)}]
        metrics += [{"type": "accuracy", "name": f"{k[: -len('_agreement')]} agreement at horizon {s['at']}",
                     "value": round(v, 3)} for k, v in s.items() if k.endswith("_agreement")]
        results.append({"task": {"type": "counterfactual", "name": "counterfactual branches against the real twin"},
                        "dataset": {"name": f"{cf['source']} seeds {cf['config']['start_seed']}+", "type": "real-twin"},
                        "metrics": metrics})
    header = {"license": "apache-2.0", "library_name": "wfm_sim",
              "tags": ["world-model", "video-prediction", "gymnasium", "simulation", "robotics"],
              "model-index": [{"name": name, "results": results}]}
    return "---\n" + _yaml(header) + "---"


def _yaml(obj, indent: int = 0) -> str:
    """A small YAML writer for the card header (dicts, lists, strings, numbers)."""
    pad, out = " " * indent, []
    if isinstance(obj, dict):
        for k, v in obj.items():
            if isinstance(v, (dict, list)) and v:
                out.append(f"{pad}{k}:\n{_yaml(v, indent + 2)}")
            else:
                out.append(f"{pad}{k}: {json.dumps(v)}\n")
    else:
        for v in obj:
            body = _yaml(v, indent + 2) if isinstance(v, (dict, list)) else f"{pad}  {json.dumps(v)}\n"
            out.append(f"{pad}- {body.lstrip()}")
    return "".join(out)


SECTIONS = {"counterfactual": ("counterfactual.json", counterfactual_section)}
"""Card sections generated from a report stored in the model folder: name -> (file, renderer)."""
REPORTS = ("eval.json", "counterfactual.json", "score.json")


def put_section(card: str, name: str, body: str) -> str:
    """``card`` with its generated section ``name`` replaced by ``body`` (appended if absent)."""
    start, end = f"<!-- generated: {name} (wfm_sim.card.refresh_card) -->", f"<!-- end: {name} -->"
    block = f"{start}\n{body}\n{end}"
    if start in card and end in card:
        head, rest = card.split(start, 1)
        return head + block + rest.split(end, 1)[1]
    return card.rstrip("\n") + "\n\n" + block + "\n"


def read_header(card: str) -> dict | None:
    """The YAML header of a card as data (the subset :func:`_yaml` writes), or None."""
    import yaml

    if not card.startswith("---\n"):
        return None
    return yaml.safe_load(card[4 : card.index("\n---", 3)])


def render_card(folder: str | Path, text: str) -> str:
    """``text`` (a card) with its header and generated sections rewritten from ``folder``'s reports."""
    folder = Path(folder)
    reports = {f: json.loads((folder / f).read_text()) for f in REPORTS if (folder / f).is_file()}
    if text.startswith("---\n"):
        text = text[text.index("\n---", 3) + 4 :].lstrip("\n")
    if "score.json" in reports and "eval.json" not in reports:  # a policy's card
        text = policy_card_header(folder.name, reports["score.json"]) + "\n\n" + text
        return put_section(text, "score", policy_score_section(reports["score.json"], folder.name))
    text = card_header(folder.name, reports) + "\n\n" + text
    text = put_section(text, "use", use_section(reports))
    for name, (file, render) in SECTIONS.items():
        if file in reports:
            text = put_section(text, name, render(reports[file]))
    return text


def refresh_card(folder: str | Path) -> Path:
    """Rewrite ``folder/README.md``'s header and generated sections from the reports stored beside it."""
    card = Path(folder) / "README.md"
    card.write_text(render_card(folder, card.read_text()))
    return card
