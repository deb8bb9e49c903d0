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
    lines += ["", "## Open-loop fidelity (held-out episodes)", "",
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


SECTIONS = {"counterfactual": ("counterfactual.json", counterfactual_section)}
"""Card sections generated from a report stored in the model folder: name -> (file, renderer)."""


def put_section(card: str, name: str, body: str) -> str:
    """``card`` with its generated section ``name`` replaced by ``body`` (appended if absent)."""
    start, end = f"<!-- generated: {name} (wfm_sim.card.refresh_card) -->", f"<!-- end: {name} -->"
    block = f"{start}\n{body}\n{end}"
    if start in card and end in card:
        head, rest = card.split(start, 1)
        return head + block + rest.split(end, 1)[1]
    return card.rstrip("\n") + "\n\n" + block + "\n"


def refresh_card(folder: str | Path) -> Path:
    """Rewrite the generated sections of ``folder/README.md`` from the reports stored beside it."""
    folder = Path(folder)
    card = folder / "README.md"
    text = card.read_text()
    for name, (file, render) in SECTIONS.items():
        if (folder / file).is_file():
            text = put_section(text, name, render(json.loads((folder / file).read_text())))
    card.write_text(text)
    return card
