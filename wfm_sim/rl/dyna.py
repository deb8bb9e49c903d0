"""The Dyna loop as one command: policy in imagination, real score, real data, world-model update.

Each iteration ``i`` (folder ``out/iter_<i>``):

1. **world model**: iteration 0 uses ``model``; later ones copy the previous model and fine-tune
   its backbone (reward and termination heads included) on all real data so far, so the model
   learns the states the current policy actually reaches;
2. **policy**: an :class:`~wfm_sim.rl.imagination.ImaginationTrainer` run in that model,
   starting from the previous iteration's policy weights;
3. **score**: the policy played from ``score_starts`` real start states in both worlds (full
   episodes); imagined and real returns go to ``out/dyna.jsonl``, rewritten whole from the
   iterations' score marks, so a kill can neither lose nor repeat a line;
4. **collect**: ``collect_episodes`` real episodes with the policy (plus Gaussian exploration
   noise) appended to ``data``, under keys that name the run and iteration.

**Selection.** After every score, ``best.json`` names the iteration whose policy made the
highest real return on the validation starts (``score_seed``), with its policy and model
folders. With ``test_starts``, the loop ends by scoring that policy once on the test seeds
(``test_seed``..., refused if they overlap the validation or collection seeds) into
``test.json``: the test figures are read after the choice is made and never feed it.

Every stage records its completion, so a run killed anywhere resumes at the stage it was in:
real episodes already collected are skipped (episode keys), a policy run resumes from its last
saved iteration, and nothing finished is redone. The real simulator is used for data and
scores only, never for gradient steps.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from wfm_sim import checkpoint as ckpt
from wfm_sim.datasets.store import EpisodeReader
from wfm_sim.envs.sources import get_source
from wfm_sim.envs.spaces import action_space
from wfm_sim.evaluation.scoring import ScoreConfig, check_rig, score_policies
from wfm_sim.evaluation.starts import check_store_rig
from wfm_sim.models import WorldModel
from wfm_sim.models.limits import check_numbers
from wfm_sim.models.text import copy_text_encoder
from wfm_sim.models.world_model import resolve_pretrained
from wfm_sim.policies.actor_critic import ActorCritic, ActorCriticConfig
from wfm_sim.policies.base import SeededPolicy
from wfm_sim.rl.imagination import ImaginationRLConfig, ImaginationTrainer, load_init_policy
from wfm_sim.rollout.record import record
from wfm_sim.training.loop import TrainConfig, train


@dataclass(frozen=True)
class DynaConfig:
    """``wfm-sim dyna`` flags."""

    model: str
    """The starting world model (a folder or shipped name)."""
    source: str
    """The real simulator the model learned (``wfm-sim collect`` source)."""
    data: str
    """The real store the model was trained on; collected episodes are appended to it."""
    out: str
    iterations: int = 3
    collect_episodes: int = 20
    collect_noise: float = 0.3
    """Std of the Gaussian noise added to the policy's actions while collecting (clipped to bounds)."""
    wm_steps: int = 400
    wm_batch: int = 16
    wm_lr: float = 2e-4
    policy_iterations: int = 40
    num_envs: int = 32
    horizon: int = 15
    parallel_steps: int = 2
    reward_scale: float = 0.1
    uncertainty_penalty: float = 0.2
    uncertainty: str = "entropy"
    """What the penalty reads: 'entropy' (token entropy) or 'ensemble' (the spread of the model's
    reward-ensemble heads, which every world-model update refits with the rest of the backbone)."""
    max_uncertainty: float | None = None
    """End an imagined rollout where that uncertainty exceeds this (MOReL's halt; default: never)."""
    obs: str = "pixels"
    """What the policy reads: 'pixels' or 'tokens' (the model's token ids: a latent actor-critic,
    no pixel decoding in imagination; see ``wfm-sim train policy --obs``)."""
    init_policy: str | None = None
    """Start iteration 0's policy from this saved ActorCritic folder or shipped policy name
    (default: a fresh policy); later iterations start from the one before."""
    score_starts: int = 5
    score_seed: int = 1_000_000
    """First validation seed: every iteration is scored (and the best chosen) on these."""
    test_starts: int = 0
    """After the loop, score the chosen policy on this many test seeds (0: skip)."""
    test_seed: int = 3_000_000
    seed: int = 0
    progress: bool = True

    def __post_init__(self):
        for name in ("iterations", "collect_episodes", "wm_steps", "wm_batch", "policy_iterations", "num_envs",
                     "horizon", "parallel_steps", "score_starts"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        check_numbers(self, positive=("wm_lr", "reward_scale", "max_uncertainty"), nonnegative=("collect_noise", "uncertainty_penalty"))
        if self.uncertainty not in ("entropy", "ensemble"):
            raise ValueError(f"uncertainty must be 'entropy' or 'ensemble', got {self.uncertainty!r}")
        if self.obs not in ("pixels", "tokens"):
            raise ValueError(f"obs must be 'pixels' or 'tokens', got {self.obs!r}")
        if self.test_starts < 0:
            raise ValueError(f"test-starts must be >= 0, got {self.test_starts}")
        if self.test_starts:
            test = range(self.test_seed, self.test_seed + self.test_starts)
            for name, used in (("validation (score-seed)", range(self.score_seed, self.score_seed + self.score_starts)),
                               ("collection", range(self.collect_seed(0), self.collect_seed(self.iterations)))):
                if test.start < used.stop and used.start < test.stop:
                    raise ValueError(f"the test seeds [{test.start}, {test.stop}) overlap the {name} seeds "
                                     f"[{used.start}, {used.stop}): choose a --test-seed apart from both")

    def collect_seed(self, iteration: int) -> int:
        """First seed of the real episodes collected in ``iteration`` (each iteration's block is 10,000 wide)."""
        return self.seed * 100_000 + 10_000 * (iteration + 1)


class NoisyPolicy(SeededPolicy):
    """A policy's actions plus Gaussian noise (per-episode generators), clipped to the bounds."""

    stream = 13

    def __init__(self, policy, sigma: float, low, high):
        super().__init__()
        self.policy, self.sigma = policy, float(sigma)
        self.low, self.high = np.asarray(low, np.float32), np.asarray(high, np.float32)

    def __call__(self, obs, info=None) -> np.ndarray:
        a = np.asarray(self.policy(obs, info), np.float32)
        noise = np.stack([self.rng(i).normal(0, self.sigma, a.shape[1:]) for i in range(len(a))]).astype(np.float32)
        return np.clip(a + noise, self.low, self.high)


def _done(folder: Path, stage: str) -> bool:
    return (folder / f".{stage}.done").is_file()


def _mark(folder: Path, stage: str, info: dict | None = None) -> None:
    ckpt.atomic_write_json(folder / f".{stage}.done", info or {})


def _logged(out: Path) -> list[dict]:
    """Every finished iteration's log line, read from its score mark (the one record of it), in order."""
    marks = [(int(f.parent.name[5:]), f) for f in out.glob("iter_*/.score.done") if f.parent.name[5:].isdigit()]
    return [json.loads(f.read_text()) for _, f in sorted(marks)]


def _write_log(out: Path, logs: list[dict]) -> None:
    """``dyna.jsonl`` rewritten whole from the marks: a kill anywhere can neither lose nor repeat a line."""
    ckpt.atomic_write_bytes(out / "dyna.jsonl", "".join(json.dumps(x) + "\n" for x in logs).encode())
    if logs:
        plot_dyna(logs, out / "dyna.png")


def run_dyna(cfg: DynaConfig) -> list[dict]:
    """Run (or resume) the loop; returns one log line per finished iteration."""
    out = Path(cfg.out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file; a Dyna run needs a folder")
    run_file = out / "dyna.json"
    mine = ckpt.run_settings(cfg, run_file, "Dyna run", free=("iterations", "test_starts", "test_seed"))
    # Every check before the run folder is made: a refused run leaves nothing behind.
    src = get_source(cfg.source)
    model = WorldModel.from_pretrained(cfg.model, device="cpu", precision="fp32")
    check_rig(model, cfg.source, 2)
    if cfg.uncertainty == "ensemble" and not model.cfg.backbone.reward_ensemble:
        raise ValueError(f"--uncertainty ensemble needs a model with reward-ensemble heads; {cfg.model} has none: "
                         f"fit them with `wfm-sim train heads --data {cfg.data} --out MODEL --reward-ensemble 4`")
    check_store_rig(EpisodeReader(cfg.data), cfg.source, tuple(model.cfg.cameras), model.cfg.tokenizer.image_size,
                    f"Dyna appends {cfg.source} episodes to it")
    if cfg.init_policy is not None:  # refused here, before the run folder exists
        tok = model.cfg.tokenizer
        load_init_policy(cfg.init_policy, ActorCriticConfig.for_spaces(
            model.cfg.cameras, tok.image_size, action_space(src.action_space), width=ImaginationRLConfig.width,
            obs=cfg.obs, tokenizer=tok if cfg.obs == "tokens" else None))
    del model
    out.mkdir(parents=True, exist_ok=True)
    ckpt.atomic_write_json(run_file, mine)
    logs = _logged(out)
    _write_log(out, logs)  # also mends a log an older version wrote twice
    if logs:
        _write_best(out, logs)  # a kill between a score and its best.json loses nothing
    prev_model, prev_policy = str(resolve_pretrained(cfg.model)), None
    for it in range(cfg.iterations):
        folder = out / f"iter_{it}"
        folder.mkdir(exist_ok=True)
        model_dir = folder / "model"
        # 1. the world model: fine-tuned on all real data from the previous one
        if it == 0:
            model_dir = Path(prev_model)
        elif not _done(folder, "model"):
            shutil.rmtree(model_dir, ignore_errors=True)
            model_dir.mkdir()
            for name in ("config.json", "model.safetensors"):
                shutil.copy(Path(prev_model) / name, model_dir / name)
            copy_text_encoder(prev_model, model_dir)
            train(TrainConfig("backbone", cfg.data, str(model_dir), steps=cfg.wm_steps, batch_size=cfg.wm_batch,
                              lr=cfg.wm_lr, eval_every=cfg.wm_steps, save_every=max(1, cfg.wm_steps // 4),
                              seed=cfg.seed + it, progress=cfg.progress, num_workers=0,
                              resume=(model_dir / "train_state" / "backbone" / "state.json").is_file()))
            _mark(folder, "model")
        # 2. the policy, in imagination only
        rl = ImaginationRLConfig(str(model_dir), str(folder / "policy_run"), data=cfg.data,
                                 iterations=cfg.policy_iterations, num_envs=cfg.num_envs, horizon=cfg.horizon,
                                 parallel_steps=cfg.parallel_steps, reward_scale=cfg.reward_scale,
                                 uncertainty_penalty=cfg.uncertainty_penalty, uncertainty=cfg.uncertainty,
                                 max_uncertainty=cfg.max_uncertainty, obs=cfg.obs, seed=cfg.seed + it,
                                 init_policy=cfg.init_policy if it == 0 else None,
                                 progress=cfg.progress, device="cpu")
        if not _done(folder, "policy"):
            resume = (folder / "policy_run" / "train_state" / "state.json").is_file()
            trainer = ImaginationTrainer(rl, resume=resume)
            if prev_policy is not None and not resume:
                trainer.policy.load_start(ActorCritic.from_pretrained(prev_policy))
            trainer.train()
            _mark(folder, "policy")
        policy_dir = folder / "policy_run" / "policy"
        policy = ActorCritic.from_pretrained(policy_dir)
        # 3. the policy scored in both worlds, from the same real starts
        if not _done(folder, "score"):
            model = WorldModel.from_pretrained(model_dir, device="cpu")
            sc = ScoreConfig(starts=cfg.score_starts, start_seed=cfg.score_seed, samples=1, horizon=src.max_steps - 1,
                             batch=cfg.score_starts, real_batch=min(cfg.score_starts, 5), videos=0)
            rep = score_policies(model, cfg.source, {"policy": policy}, sc, progress=False)
            row = next(r for r in rep["policies"] if r["policy"] == "policy")
            line = {"iteration": it, "real_return": row["real_return"], "real_return_std": row["real_return_std"],
                    "imagined_return": row["imagined_return"], "starts": cfg.score_starts,
                    "data_episodes": _episodes(cfg.data), "real_steps": EpisodeReader(cfg.data).num_steps}
            _mark(folder, "score", line)
            logs = _logged(out)
            _write_log(out, logs)
            _write_best(out, logs)
        # 4. real data with the current policy (never a gradient step in the real simulator)
        if not _done(folder, "collect"):
            a = src.action_space
            noisy = NoisyPolicy(policy, cfg.collect_noise, a["low"], a["high"])
            record(cfg.source, cfg.data, cfg.collect_episodes, policy=noisy, size=policy.cfg.image_size,
                   seed=cfg.collect_seed(it), progress=cfg.progress,
                   tag=f"dyna-{out.name}-it{it}")
            _mark(folder, "collect")
        prev_model, prev_policy = str(model_dir), str(policy_dir)
    if cfg.test_starts and not (out / "test.json").is_file():
        score_test(cfg, out, src.max_steps - 1)
    return logs


def best_iteration(logs: list[dict]) -> dict:
    """The log line of the iteration with the highest validation real return (the earliest on ties)."""
    return max(logs, key=lambda x: (x["real_return"], -x["iteration"]))


def _write_best(out: Path, logs: list[dict]) -> None:
    b = best_iteration(logs)
    folder = out / f"iter_{b['iteration']}"
    model = folder / "model" if (folder / "model" / "config.json").is_file() else Path(json.loads(
        (out / "dyna.json").read_text())["model"])
    ckpt.atomic_write_json(out / "best.json", {**b, "chosen_by": "validation real return (score-seed)",
                                               "policy": str(folder / "policy_run" / "policy"),
                                               "model": str(resolve_pretrained(str(model)))})


def score_test(cfg: DynaConfig, out: Path, horizon: int) -> dict:
    """The chosen policy (``best.json``) on the test seeds, in both worlds, into ``test.json``."""
    best = json.loads((out / "best.json").read_text())
    model = WorldModel.from_pretrained(best["model"], device="cpu")
    sc = ScoreConfig(starts=cfg.test_starts, start_seed=cfg.test_seed, samples=1, horizon=horizon,
                     batch=min(cfg.test_starts, 32), real_batch=min(cfg.test_starts, 5), videos=0)
    rep = score_policies(model, cfg.source, {"policy": ActorCritic.from_pretrained(best["policy"])}, sc, progress=False)
    row = next(r for r in rep["policies"] if r["policy"] == "policy")
    result = {"iteration": best["iteration"], "test_seed": cfg.test_seed, "test_starts": cfg.test_starts,
              "real_return": row["real_return"], "real_return_std": row["real_return_std"],
              "imagined_return": row["imagined_return"], "real_steps": best.get("real_steps")}
    ckpt.atomic_write_json(out / "test.json", result)
    return result


def plot_dyna(logs: list[dict], path: Path) -> Path:
    """Real and imagined return of each iteration's policy (mean and std over the real starts)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    it = [r["iteration"] for r in logs]
    real = np.array([r["real_return"] for r in logs])
    std = np.array([r["real_return_std"] for r in logs])
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(it, [r["imagined_return"] for r in logs], "o--", label="imagined (world model)")
    ax.errorbar(it, real, yerr=std, fmt="o-", capsize=3, label="real simulator")
    ax.set_xlabel("Dyna iteration")
    ax.set_ylabel(f"return over {logs[-1]['starts']} real starts")
    ax.set_xticks(it)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    tmp = path.with_name(path.stem + ".partial.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)
    return path


def _episodes(store: str) -> int:
    return EpisodeReader(store).num_episodes
