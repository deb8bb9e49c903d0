"""Train a policy only inside a world model (actor-critic in imagination), resumable.

The recipe of IRIS / DIAMOND / Dreamer: every iteration starts ``num_envs`` imagined rollouts
from *real* context frames (a store's episodes or the contexts shipped with the model), runs
them for a short ``horizon`` (15 steps by default, so model errors have little time to
compound), bootstraps the return beyond it with a learned value, and updates the policy with
PPO on GAE(lambda) advantages. The real simulator is never stepped here.

Guard against exploiting model errors: the model's own uncertainty, its mean token entropy of
the predicted frame, is subtracted from the reward (``uncertainty_penalty`` per nat), and an
imagined rollout whose entropy exceeds ``max_entropy``, or whose uncertainty exceeds
``max_uncertainty`` (the reward ensemble's spread with ``uncertainty='ensemble'``), ends there
(terminated, no bootstrap): a policy gains nothing by steering into frames the model cannot predict.

The policy reads decoded frames (``obs='pixels'``) or the sampled token ids themselves
(``obs='tokens'``, a latent actor-critic: no frame is decoded in imagination, and the policy
carries the tokenizer's encoder to the real world). A token run may start from a pixel
policy: it is distilled on the store's real frames first (:mod:`~wfm_sim.rl.distill`,
``distill.json``, and the distilled start in ``distilled/``).

On disk (``out``): ``policy/`` (the :class:`~wfm_sim.policies.ActorCritic`, loadable by every
``--policy`` flag), ``run.json`` (the config, checked on ``--resume``), ``metrics.jsonl``
(one line per iteration) and ``train_state/`` (weights, optimizer, RNGs, iteration). A run
killed mid-iteration resumes from its last saved iteration and repeats nothing after it.

Dimension legend: :mod:`wfm_sim.dims`.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from wfm_sim import checkpoint as ckpt
from wfm_sim.device import autocast, autocast_dtype
from wfm_sim.envs.imagined import ImaginedVectorEnv
from wfm_sim.models.limits import check_numbers
from wfm_sim.models.world_model import resolve_pretrained
from wfm_sim.policies.actor_critic import ActorCritic, ActorCriticConfig
from wfm_sim.training.state import load_train_state, save_train_state

RUN_FORMAT = "wfm_sim.ImaginationRL"


@dataclass(frozen=True)
class ImaginationRLConfig:
    """An actor-critic trained in a world model's imagined env."""

    model: str
    """Shipped model name or model folder (needs reward and termination heads)."""
    out: str
    """Run folder: policy/, run.json, metrics.jsonl, train_state/."""
    data: str | None = None
    """Store whose real episodes start the imagined rollouts (default: the model's shipped contexts)."""
    iterations: int = 100
    num_envs: int = 16
    horizon: int = 15
    """Imagined steps per rollout before the value bootstraps."""
    gamma: float = 0.98
    lam: float = 0.95
    lr: float = 3e-4
    epochs: int = 4
    minibatches: int = 4
    clip: float = 0.2
    entropy_coef: float = 1e-3
    value_coef: float = 0.5
    max_grad_norm: float = 0.5
    uncertainty_penalty: float = 0.0
    """Reward minus this times the model's uncertainty (``uncertainty``) at each imagined step."""
    uncertainty: str = "entropy"
    """What the penalty reads: 'entropy' (mean token entropy of the predicted frame, nats) or
    'ensemble' (the spread of the model's reward-ensemble heads, reward units: MOPO's penalty;
    the model needs ``reward_ensemble`` heads, see ``wfm-sim train heads --reward-ensemble``)."""
    max_entropy: float | None = None
    """End an imagined rollout (terminated) where the token entropy exceeds this."""
    max_uncertainty: float | None = None
    """End an imagined rollout (terminated, no bootstrap) where the uncertainty (``uncertainty``)
    exceeds this: MOReL's halt, a stop at the edge of the data instead of a per-step tax on it."""
    reward_scale: float = 1.0
    """Rewards are multiplied by this for the update (logs stay in env units)."""
    obs: str = "pixels"
    """What the policy reads: 'pixels' (frames decoded from the model's tokens, as a camera would
    show them) or 'tokens' (the sampled token ids themselves: no pixel decoding in imagination, a
    latent actor-critic; in the real world the policy encodes frames with the model's tokenizer)."""
    decoder: str = "token"
    parallel_steps: int = 4
    width: int = 32
    init_policy: str | None = None
    """A saved ActorCritic folder or shipped policy name to start from (fine-tuning; the same rig and action space)."""
    select_source: str | None = None
    """A real twin (``wfm-sim collect`` source): every ``select_every`` iterations the policy plays
    ``select_starts`` full validation episodes there, and the best by real return is kept in
    ``best/`` (``best.json``). Imagination rewards exploiting the model; real validation is
    what says when to stop. The real steps it used are logged."""
    select_every: int = 25
    select_starts: int = 6
    select_seed: int = 1_000_000
    """First validation seed (never a test seed)."""
    seed: int = 0
    device: str = "auto"
    precision: str = "auto"
    save_every: int = 5
    progress: bool = True

    def __post_init__(self):
        for name in ("iterations", "num_envs", "horizon", "epochs", "minibatches", "save_every", "parallel_steps",
                     "select_every", "select_starts"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        check_numbers(self, positive=("lr", "clip", "max_grad_norm", "reward_scale", "max_entropy",
                                          "max_uncertainty"),
                      nonnegative=("entropy_coef", "value_coef", "uncertainty_penalty"), unit=("gamma", "lam"))
        if self.uncertainty not in ("entropy", "ensemble"):
            raise ValueError(f"uncertainty must be 'entropy' or 'ensemble', got {self.uncertainty!r}")
        if self.obs not in ("pixels", "tokens"):
            raise ValueError(f"obs must be 'pixels' or 'tokens', got {self.obs!r}")
        if (self.num_envs * self.horizon) % self.minibatches:
            raise ValueError(f"num_envs * horizon ({self.num_envs * self.horizon}) must divide into {self.minibatches} minibatches")

    def fingerprint(self) -> dict:
        """What must match for ``resume`` (the iteration count may grow; logging may change)."""
        d = asdict(self)
        for k in ("iterations", "progress", "save_every", "device", "precision", "out"):
            d.pop(k)
        return d


def gae(rewards, values, terminated, last_value, gamma: float, lam: float):
    """Generalised advantage estimation over ``(s, b)`` rollouts (Schulman et al. 2016).

    ``terminated[t]``: the rollout ended after step t (no bootstrap past it). Returns
    ``(advantages, returns)``, both ``(s, b)``.
    """
    T = rewards.shape[0]
    adv = torch.zeros_like(rewards)
    running = torch.zeros_like(last_value)
    for t in reversed(range(T)):
        nxt = last_value if t == T - 1 else values[t + 1]
        alive = 1.0 - terminated[t].float()
        delta = rewards[t] + gamma * nxt * alive - values[t]
        running = delta + gamma * lam * alive * running
        adv[t] = running
    return adv, adv + values


class ImaginationTrainer:
    """PPO on the batched imagined env; see the module docstring."""

    def __init__(self, cfg: ImaginationRLConfig, resume: bool = False):
        self.cfg, self.out = cfg, Path(cfg.out)
        self._check_run_folder(resume)
        self.env = ImaginedVectorEnv(cfg.num_envs, cfg.model, dataset=cfg.data, decoder=cfg.decoder,
                                     parallel_steps=cfg.parallel_steps, max_episode_steps=None, obs_mode=cfg.obs,
                                     autoreset_mode="same_step", device=cfg.device, precision=cfg.precision,
                                     torch_obs=True)
        trained = self.env.model.trained
        if trained is not None and "backbone" not in trained:
            raise ValueError(f"{cfg.model} has no trained reward or termination heads (its backbone was never trained, "
                             f"trained: {list(trained)}): run `wfm-sim train backbone` on a store with rewards first")
        if cfg.uncertainty == "ensemble" and not self.env.model.cfg.backbone.reward_ensemble:
            raise ValueError(f"--uncertainty ensemble needs a model with reward-ensemble heads; {cfg.model} has none: "
                             f"fit them with `wfm-sim train heads --data STORE --out MODEL --reward-ensemble 4`")
        self.device = next(self.env.model.parameters()).device
        # The policy's encoder runs in the model's precision (bf16 autocast where the machine has
        # it natively, fp32 master weights); its heads, log-probabilities and losses stay fp32.
        self.amp = autocast_dtype(self.device, cfg.precision)
        tok = self.env.model.cfg.tokenizer
        if cfg.obs == "tokens" and not tok.per_frame:
            raise ValueError(f"--obs tokens needs a per-frame tokenizer (a token must not depend on earlier frames); "
                             f"{cfg.model}'s has temporal_downsample={tok.temporal_downsample}, temporal_kernel="
                             f"{tok.temporal_kernel}: use --obs pixels")
        ac = ActorCriticConfig.for_spaces(self.env.cameras, tok.image_size, self.env.single_action_space,
                                          width=cfg.width, obs=cfg.obs, tokenizer=tok if cfg.obs == "tokens" else None,
                                          trained_in=f"{cfg.model} ({ckpt.content_hash(resolve_pretrained(cfg.model))})")
        torch.manual_seed(cfg.seed)
        self.policy = ActorCritic(ac).to(self.device)
        if cfg.obs == "tokens":  # the real world's frames become the ids this model's rollouts sample
            self.policy.token_encoder.copy_from(self.env.model.tokenizer)
        self.opt = torch.optim.Adam(self.policy.trainable_parameters(), lr=cfg.lr, eps=1e-5)
        self.gen = torch.Generator(device="cpu").manual_seed(cfg.seed)
        self.iteration = 0
        if resume and (self.out / "train_state" / "state.json").is_file():
            self._load()
            return
        if resume:  # killed before its first save: it starts again at iteration 0, its log with it
            (self.out / "metrics.jsonl").unlink(missing_ok=True)
        distilled = None
        if cfg.init_policy is not None:
            start = load_init_policy(cfg.init_policy, ac)
            if start.cfg.obs == ac.obs:
                self.policy.load_start(start)
            else:  # a pixel policy starts a token run: distilled on the store's real frames
                if cfg.data is None:
                    raise ValueError(f"--init-policy {cfg.init_policy} reads pixels and this run reads tokens: it is "
                                     "distilled on real frames, so pass --data STORE (the model's simulator)")
                from wfm_sim.rl.distill import distill, store_frames

                self.policy.to("cpu")
                distilled = distill(self.policy, start, *store_frames(cfg.data, ac.cameras), seed=cfg.seed,
                                    progress=cfg.progress)
                self.policy.to(self.device)
        self._claim_run_folder()
        if distilled is not None:  # the start itself, to score beside what PPO makes of it
            self.policy.save_pretrained(self.out / "distilled")
            ckpt.atomic_write_json(self.out / "distill.json", {"teacher": cfg.init_policy, "data": cfg.data,
                                                                **distilled})

    # ------------------------------------------------------------------ run folder
    def _check_run_folder(self, resume: bool) -> None:
        run = self.out / "run.json"
        if resume:
            if not run.is_file():
                raise ValueError(f"--resume: {self.out} holds no policy run; start without --resume")
            mine = json.loads(json.dumps(self.cfg.fingerprint()))
            saved = {**{k: v for k, v in ckpt.field_defaults(self.cfg).items() if k in mine},
                     **ckpt.read_json(run, RUN_FORMAT)["config"]}
            diff = sorted(k for k in set(saved) | set(mine) if saved.get(k) != mine.get(k))
            if diff:
                raise ValueError(f"--resume with a different config: {', '.join(f'{k}: run has {saved.get(k)!r}, given {mine.get(k)!r}' for k in diff)}")
        elif run.is_file():
            raise ValueError(f"{self.out} holds a policy run already: pass --resume to continue it, or another --out")
        elif self.out.exists() and not self.out.is_dir():
            raise ValueError(f"--out {self.out} is a file; a policy run needs a folder")

    def _claim_run_folder(self) -> None:
        """Written only once every check has passed: a refused run leaves no folder behind."""
        self.out.mkdir(parents=True, exist_ok=True)
        ckpt.atomic_write_json(self.out / "run.json", {"format": RUN_FORMAT, "config": self.cfg.fingerprint()})

    def _save(self) -> None:
        self.policy.save_pretrained(self.out / "policy")
        save_train_state(self.out / "train_state", self.policy, self.opt, self.iteration,
                         {"generator": self.gen.get_state().tolist()})

    def _load(self) -> None:
        self.iteration, extra = load_train_state(self.out / "train_state", self.policy, self.opt)
        self.gen.set_state(torch.tensor(extra["generator"], dtype=torch.uint8))
        # Metrics past the saved iteration belong to work that is being redone: drop them.
        log = self.out / "metrics.jsonl"
        if log.is_file():
            keep = [x for x in log.read_text().splitlines() if x.strip() and json.loads(x)["iteration"] <= self.iteration]
            ckpt.atomic_write_bytes(log, ("\n".join(keep) + "\n" if keep else "").encode())

    # ------------------------------------------------------------------ one iteration
    @torch.no_grad()
    def collect(self) -> dict:
        """``horizon`` imagined steps from fresh real contexts, with the current policy."""
        cfg, n = self.cfg, self.cfg.num_envs
        seeds = [cfg.seed * 1_000_003 + self.iteration * n + i for i in range(n)]
        obs, _ = self.env.reset(seed=seeds)
        buf = {k: [] for k in ("obs", "u", "logp", "value", "reward", "raw_reward", "terminated", "entropy",
                               "uncertainty")}
        for _ in range(cfg.horizon):
            x = self.policy.observe(obs)
            h = self._features(x)
            dist = self.policy.distribution(h)
            u = _sample(dist, self.gen, self.policy.cfg.action_kind)
            action = self.policy.to_env(u)
            obs, reward, term, _, info = self.env.step(action.cpu().numpy())
            ent = torch.as_tensor(np.asarray(info.get("entropy", np.zeros(n)), np.float32))
            reward = torch.as_tensor(np.asarray(reward, np.float32))
            term = torch.as_tensor(np.asarray(term, bool))
            if cfg.max_entropy is not None:
                term = term | (ent > cfg.max_entropy)
            unc = ent if cfg.uncertainty == "entropy" else torch.as_tensor(np.asarray(info["reward_std"], np.float32))
            if cfg.max_uncertainty is not None:
                term = term | (unc > cfg.max_uncertainty)
            buf["obs"].append(x.cpu())
            buf["u"].append(u.cpu())
            buf["logp"].append(self.policy.log_prob(dist, u).cpu())
            buf["value"].append(self.policy.value(h).cpu())
            buf["raw_reward"].append(reward)
            buf["reward"].append((reward - cfg.uncertainty_penalty * unc) * cfg.reward_scale)
            buf["terminated"].append(term)
            buf["entropy"].append(ent)
            buf["uncertainty"].append(unc)
        last = self.policy.value(self._features(self.policy.observe(obs))).cpu()
        out = {k: torch.stack(v) for k, v in buf.items()}  # (s, b, ...)
        out["adv"], out["ret"] = gae(out["reward"], out["value"], out["terminated"], last, cfg.gamma, cfg.lam)
        return out

    def _features(self, x: torch.Tensor) -> torch.Tensor:
        with autocast(self.device, self.amp):
            return self.policy.features(x).float()

    def update(self, roll: dict) -> dict:
        cfg = self.cfg
        flat = {k: v.flatten(0, 1) for k, v in roll.items()}  # (s*b, ...)
        adv = (flat["adv"] - flat["adv"].mean()) / (flat["adv"].std() + 1e-8)
        total = len(adv)
        logs = {"pg_loss": 0.0, "v_loss": 0.0, "policy_entropy": 0.0, "clip_frac": 0.0}
        count = 0
        for _ in range(cfg.epochs):
            perm = torch.randperm(total, generator=self.gen)
            for idx in perm.chunk(cfg.minibatches):
                h = self._features(flat["obs"][idx].to(self.device))
                dist = self.policy.distribution(h)
                logp = self.policy.log_prob(dist, flat["u"][idx].to(self.device))
                ratio = (logp - flat["logp"][idx].to(self.device)).exp()
                a = adv[idx].to(self.device)
                pg = -torch.min(ratio * a, ratio.clamp(1 - cfg.clip, 1 + cfg.clip) * a).mean()
                v_loss = (self.policy.value(h) - flat["ret"][idx].to(self.device)).pow(2).mean()
                ent = self.policy.entropy(dist).mean()
                loss = pg + cfg.value_coef * v_loss - cfg.entropy_coef * ent
                self.opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(self.policy.trainable_parameters(), cfg.max_grad_norm)
                self.opt.step()
                logs["pg_loss"] += pg.item()
                logs["v_loss"] += v_loss.item()
                logs["policy_entropy"] += ent.item()
                logs["clip_frac"] += ((ratio - 1).abs() > cfg.clip).float().mean().item()
                count += 1
        return {k: v / count for k, v in logs.items()}

    def train(self) -> dict:
        """Run to ``cfg.iterations``; returns the last iteration's log."""
        cfg = self.cfg
        log_path = self.out / "metrics.jsonl"
        bar = tqdm(total=cfg.iterations, initial=self.iteration, desc="train policy (imagination)", unit="it",
                   disable=not cfg.progress)
        last: dict = {}
        try:
            while self.iteration < cfg.iterations:
                t0 = time.perf_counter()
                roll = self.collect()
                t1 = time.perf_counter()
                logs = self.update(roll)
                self.iteration += 1
                steps = cfg.num_envs * cfg.horizon
                last = {"iteration": self.iteration, "imagined_steps": self.iteration * steps,
                        "imagined_reward_per_step": float(roll["raw_reward"].mean()),
                        "imagined_return_per_rollout": float(roll["raw_reward"].sum(0).mean()),
                        "terminated_frac": float(roll["terminated"].float().mean()),
                        "token_entropy": float(roll["entropy"].mean()),
                        "uncertainty": float(roll["uncertainty"].mean()),
                        "imagined_steps_per_s": steps / max(t1 - t0, 1e-9), "seconds": time.perf_counter() - t0,
                        **logs}
                selecting = cfg.select_source is not None and (self.iteration % cfg.select_every == 0
                                                                or self.iteration == cfg.iterations)
                if selecting:
                    last.update(self.select())
                with open(log_path, "a") as f:
                    f.write(json.dumps(last) + "\n")
                if self.iteration % cfg.save_every == 0 or self.iteration == cfg.iterations or selecting:
                    self._save()
                bar.update(1)
                bar.set_postfix(ret=f"{last['imagined_return_per_rollout']:.2f}", sps=f"{last['imagined_steps_per_s']:.0f}")
        finally:
            bar.close()
        return last


    def select(self) -> dict:
        """Play the validation episodes in the real twin; keep the policy in ``best/`` if it beats
        the best so far (ties keep the earlier one). Returns the log entries."""
        from wfm_sim.rl.real_ppo import evaluate_real

        cfg = self.cfg
        seeds = list(range(cfg.select_seed, cfg.select_seed + cfg.select_starts))
        returns, steps = evaluate_real(self.policy, cfg.select_source, seeds, self.policy.cfg.image_size,
                                       with_steps=True)
        best_file = self.out / "best.json"
        best = json.loads(best_file.read_text()) if best_file.is_file() else None
        val = float(np.mean(returns))
        used = steps + (best["validation_real_steps"] if best else 0)
        if best is None or val > best["val_real_return"]:
            self.policy.save_pretrained(self.out / "best")
            best = {"iteration": self.iteration, "val_real_return": val, "val_real_return_std": float(np.std(returns)),
                    "val_seeds": seeds}
        best["validation_real_steps"] = used
        ckpt.atomic_write_json(best_file, best)
        return {"val_real_return": val, "val_real_return_std": float(np.std(returns)), "validation_real_steps": used,
                "best_iteration": best["iteration"]}


def load_init_policy(name: str, needs: ActorCriticConfig) -> ActorCritic:
    """The ActorCritic a run starts from (a folder or a shipped name), refused unless it acts on
    the cameras, action count, observation and width of ``needs``."""
    from wfm_sim.policies.registry import policy_path

    start = ActorCritic.from_pretrained(policy_path(name))  # a folder or a shipped name (carracing-dyna)
    distils = start.cfg.obs == "pixels" and needs.obs == "tokens"  # carried over by distillation
    mine = (start.cfg.cameras, start.cfg.image_size, start.cfg.action_dim, start.cfg.obs, start.cfg.width)
    theirs = (needs.cameras, needs.image_size, needs.action_dim, needs.obs, needs.width)
    if mine[:3] != theirs[:3] or (not distils and mine[3:] != theirs[3:]):
        raise ValueError(f"--init-policy {name} acts on cameras {list(start.cfg.cameras)} at {start.cfg.image_size}px "
                         f"with {start.cfg.action_dim} actions from {start.cfg.obs} at width {start.cfg.width}; this run "
                         f"needs {list(needs.cameras)} at {needs.image_size}px, {needs.action_dim} actions from "
                         f"{needs.obs}, width {needs.width}")
    if needs.obs == "tokens" and not distils and start.cfg.tokenizer != needs.tokenizer:
        raise ValueError(f"--init-policy {name} reads the tokens of another tokenizer ({start.cfg.tokenizer}); this "
                         f"model's is {needs.tokenizer}")
    return start


def _sample(dist, gen: torch.Generator, kind: str) -> torch.Tensor:
    """A sample drawn from ``gen`` (on CPU, so runs repeat across devices)."""
    if kind == "discrete":
        probs = dist.probs.float().cpu()
        return torch.multinomial(probs, 1, generator=gen).squeeze(-1).to(dist.probs.device)
    noise = torch.randn(dist.mean.shape, generator=gen).to(dist.mean.device)
    return dist.mean + dist.stddev * noise


def train_policy(cfg: ImaginationRLConfig, resume: bool = False) -> dict:
    """Train (or resume) an imagination policy; returns the last iteration's log."""
    return ImaginationTrainer(cfg, resume).train()


__all__ = ["ImaginationRLConfig", "ImaginationTrainer", "gae", "load_init_policy", "train_policy"]
