"""The actor-critic: what the imagination trainer optimises and what then drives the real twin.

It reads one of two observations (``ActorCriticConfig.obs``):

* ``pixels``: every camera of the rig (stacked on channels, cameras in sorted order as
  Gymnasium's ``Dict`` space orders them) through a convolutional encoder;
* ``tokens``: the world model's token ids of the step (``(v, g, g)``), embedded (a learned
  table plus a projection of each id's FSQ code) and passed through an MLP: Dreamer's
  latent actor-critic. In imagination the env hands it the sampled ids, so no frame is ever
  decoded to pixels; in the real world it carries the model tokenizer's encoder
  (:class:`~wfm_sim.models.tokenizer.TokenEncoder`) and turns each real frame into the same
  ids. Only per-frame tokenizers qualify (a token must not depend on earlier frames).

The encoder feeds a policy head and a value head, and the policy acts in the env's own action space:

* Box actions: a diagonal Gaussian over pre-squash values ``u``; the env gets
  ``low + (tanh(u) + 1) / 2 * (high - low)``. Log-probabilities are taken on ``u`` (the tanh
  Jacobian cancels in PPO's ratio). Deterministic acting uses the mean.
* Discrete actions: a categorical over the logits; deterministic acting takes the argmax.

Its checkpoint (``config.json`` + ``model.safetensors``) records the spaces it was trained for,
so a policy for another rig or action space is refused by name instead of acting nonsense.

Dimension legend: :mod:`wfm_sim.dims`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.distributions import Categorical, Normal
from wfm_sim.policies.base import Policy

from wfm_sim import checkpoint as ckpt
from wfm_sim.models.limits import POLICY_LIMITS, check_limits
from wfm_sim.models.tokenizer import TokenEncoder, TokenizerConfig
from wfm_sim.models.world_model import load_state_strict

FORMAT = "wfm_sim.ActorCritic"


@dataclass(frozen=True)
class ActorCriticConfig:
    """Spaces the policy acts in, and its size."""

    cameras: tuple[str, ...] = ("CAM_FRONT",)
    """Camera names, sorted (the order of the env's ``Dict`` observation)."""
    image_size: int = 64
    action_kind: str = "box"
    """``box`` or ``discrete``."""
    action_dim: int = 3
    """Box: action features. Discrete: the number of actions."""
    low: tuple[float, ...] = (-1.0, 0.0, 0.0)
    high: tuple[float, ...] = (1.0, 1.0, 1.0)
    width: int = 32
    """Channels of the first conv layer."""
    hidden: int = 256
    init_log_std: float = -0.5
    trained_in: str = ""
    """The world model it was trained in (name and content hash), for its card."""
    obs: str = "pixels"
    """What it reads: 'pixels' (camera frames) or 'tokens' (the world model's token ids)."""
    tokenizer: TokenizerConfig | None = None
    """``obs='tokens'``: the world model's tokenizer, whose encoder the policy carries."""
    embed: int = 32
    """``obs='tokens'``: features per token."""

    def __post_init__(self):
        check_limits(self, ("image_size", "action_dim", "width", "hidden"), POLICY_LIMITS)
        if self.obs not in ("pixels", "tokens"):
            raise ValueError(f"obs must be 'pixels' or 'tokens', got {self.obs!r}")
        if (self.obs == "tokens") != (self.tokenizer is not None):
            raise ValueError("a token policy needs its world model's tokenizer config, and a pixel policy takes none; "
                             f"got obs={self.obs!r} with tokenizer={'set' if self.tokenizer else 'None'}")
        if self.tokenizer is not None:
            if not self.tokenizer.per_frame:
                raise ValueError("a token policy needs a per-frame tokenizer (temporal_downsample=1, temporal_kernel=1): "
                                 f"this one has {self.tokenizer.temporal_downsample}, {self.tokenizer.temporal_kernel}")
            if self.tokenizer.image_size != self.image_size:
                raise ValueError(f"image_size {self.image_size} differs from the tokenizer's {self.tokenizer.image_size}")
            if not 1 <= self.embed <= 1024:
                raise ValueError(f"embed must be 1..1024, got {self.embed}")
        if not 1 <= len(self.cameras) <= POLICY_LIMITS["cameras"][1]:
            raise ValueError(f"ActorCriticConfig.cameras must name 1..64 cameras, got {len(self.cameras)}")
        if self.action_kind not in ("box", "discrete"):
            raise ValueError(f"action_kind must be 'box' or 'discrete', got {self.action_kind!r}")
        if self.action_kind == "box" and not len(self.low) == len(self.high) == self.action_dim:
            raise ValueError(f"low/high must have action_dim={self.action_dim} entries, got {self.low}, {self.high}")
        if list(self.cameras) != sorted(self.cameras):
            raise ValueError(f"cameras must be sorted (the Dict space's order), got {list(self.cameras)}")

    @classmethod
    def for_spaces(cls, cameras, image_size: int, action_space, **kw) -> "ActorCriticConfig":
        """The config for an env with these cameras and this Gymnasium action space."""
        from gymnasium import spaces

        if isinstance(action_space, spaces.Discrete):
            return cls(tuple(sorted(cameras)), image_size, "discrete", int(action_space.n), (), (), **kw)
        if isinstance(action_space, spaces.Box) and len(action_space.shape) == 1:
            return cls(tuple(sorted(cameras)), image_size, "box", int(action_space.shape[0]),
                       tuple(float(x) for x in action_space.low), tuple(float(x) for x in action_space.high), **kw)
        raise ValueError(f"the actor-critic acts in Box (A,) or Discrete spaces, got {action_space}")


class ActorCritic(nn.Module, Policy):
    """Shared encoder (conv on pixels, or embeddings + MLP on tokens), Gaussian / categorical
    policy head, value head."""

    def __init__(self, cfg: ActorCriticConfig):
        super().__init__()
        self.cfg = cfg
        w, v = cfg.width, len(cfg.cameras)
        if cfg.obs == "tokens":
            tok = cfg.tokenizer
            n = v * tok.grid ** 2
            self.token_encoder = TokenEncoder(tok)  # frozen: the world model's, for real frames
            self.embed = nn.Embedding(tok.vocab_size, cfg.embed)
            self.code_proj = nn.Linear(len(tok.levels), cfg.embed)
            self.pos = nn.Parameter(torch.randn(n, cfg.embed) * 0.02)
            self.encoder = nn.Sequential(  # (b, n, e) -> (b, hidden)
                nn.Flatten(), nn.LayerNorm(n * cfg.embed), nn.Linear(n * cfg.embed, cfg.hidden), nn.SiLU(),
                nn.Linear(cfg.hidden, cfg.hidden), nn.SiLU())
        else:
            self.encoder = nn.Sequential(  # (b, 3V, 64, 64) -> (n, 4w * 4 * 4)
                nn.Conv2d(3 * v, w, 4, 2, 1), nn.SiLU(), nn.Conv2d(w, 2 * w, 4, 2, 1), nn.SiLU(),
                nn.Conv2d(2 * w, 4 * w, 4, 2, 1), nn.SiLU(), nn.Conv2d(4 * w, 4 * w, 4, 2, 1), nn.SiLU(),
                nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(4 * w * 16, cfg.hidden), nn.SiLU(),
            )
        self.pi = nn.Linear(cfg.hidden, cfg.action_dim)
        self.v = nn.Linear(cfg.hidden, 1)
        nn.init.zeros_(self.pi.weight)
        nn.init.zeros_(self.pi.bias)
        self.log_std = nn.Parameter(torch.full((cfg.action_dim,), cfg.init_log_std)) if cfg.action_kind == "box" else None
        if cfg.action_kind == "box":
            self.register_buffer("low", torch.tensor(cfg.low), persistent=False)
            self.register_buffer("high", torch.tensor(cfg.high), persistent=False)

    # ------------------------------------------------------------------ inputs
    def trainable_parameters(self) -> list[nn.Parameter]:
        """What an optimiser updates (a token policy's tokenizer encoder stays the world model's)."""
        return [p for p in self.parameters() if p.requires_grad]

    def observe(self, obs) -> torch.Tensor:
        """An env observation -> what :meth:`features` reads: ``(b, v, H, W, 3)`` uint8 frames for
        a pixel policy; ``(b, v, g, g)`` int64 ids for a token policy (frames are encoded)."""
        if self.cfg.obs == "tokens" and _is_ids(obs):
            return self.tokens(obs)
        frames = self.frames(obs)
        return self.token_encoder(frames) if self.cfg.obs == "tokens" else frames

    def tokens(self, obs) -> torch.Tensor:
        """Token ids ``(b, v, g, g)`` (numpy or torch), checked against the model's grid and vocabulary."""
        tok, dev = self.cfg.tokenizer, self.v.weight.device
        x = torch.as_tensor(obs if torch.is_tensor(obs) else np.asarray(obs), device=dev)
        want = (len(self.cfg.cameras), tok.grid, tok.grid)
        if x.ndim == 3:
            x = x[:, None]
        if tuple(x.shape[1:]) != want:
            raise ValueError(f"this policy takes (n, {', '.join(map(str, want))}) token ids (cameras "
                             f"{list(self.cfg.cameras)}, a {tok.grid}x{tok.grid} grid), got {tuple(x.shape)}")
        return x.long()

    def frames(self, obs) -> torch.Tensor:
        """An env observation (numpy or torch; one camera's array, or a dict by camera) ->
        ``(b, v, H, W, 3)`` uint8 on this module's device, checked against the trained rig."""
        dev = self.v.weight.device
        if isinstance(obs, dict):
            missing = [c for c in self.cfg.cameras if c not in obs]
            if missing or len(obs) != len(self.cfg.cameras):
                raise ValueError(f"this policy was trained on cameras {list(self.cfg.cameras)}; the observation has "
                                 f"{sorted(obs)}")
            x = torch.stack([torch.as_tensor(np.asarray(obs[c]) if not torch.is_tensor(obs[c]) else obs[c], device=dev)
                             for c in self.cfg.cameras], dim=1)
        else:
            x = torch.as_tensor(obs if torch.is_tensor(obs) else np.asarray(obs), device=dev)
            x = x[:, None] if x.ndim == 4 else x
        want = (len(self.cfg.cameras), self.cfg.image_size, self.cfg.image_size, 3)
        if tuple(x.shape[1:]) != want:
            raise ValueError(f"this policy takes (n, {', '.join(map(str, want))}) uint8 frames "
                             f"(cameras {list(self.cfg.cameras)}), got {tuple(x.shape)}")
        return x

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """What :meth:`observe` returned -> ``(b, hidden)`` features."""
        if self.cfg.obs == "tokens":  # (b, v, g, g) ids
            ids = x.flatten(1)  # (b, n)
            codes = self.token_encoder.fsq.indices_to_codes(ids, check=False).transpose(1, 2)  # (b, n, c)
            return self.encoder(self.embed(ids) + self.code_proj(codes) + self.pos)
        x = x.float().div(127.5).sub(1)  # (b, v, H, W, 3) in [-1, 1]
        x = x.permute(0, 1, 4, 2, 3).flatten(1, 2)  # (b, 3V, H, W)
        return self.encoder(x)

    # ------------------------------------------------------------------ heads
    def distribution(self, h: torch.Tensor):
        out = self.pi(h)
        if self.cfg.action_kind == "discrete":
            return Categorical(logits=out)
        return Normal(out, self.log_std.exp().expand_as(out))

    def value(self, h: torch.Tensor) -> torch.Tensor:
        return self.v(h).squeeze(-1)

    def to_env(self, u: torch.Tensor) -> torch.Tensor:
        """A sample of the distribution -> the env's action."""
        if self.cfg.action_kind == "discrete":
            return u.long()
        return self.low + (torch.tanh(u) + 1) / 2 * (self.high - self.low)

    def log_prob(self, dist, u: torch.Tensor) -> torch.Tensor:
        lp = dist.log_prob(u)
        return lp if self.cfg.action_kind == "discrete" else lp.sum(-1)

    def entropy(self, dist) -> torch.Tensor:
        e = dist.entropy()
        return e if self.cfg.action_kind == "discrete" else e.sum(-1)

    # ------------------------------------------------------------------ Policy interface
    def reset(self, seeds, rows=None, episodes=None) -> None:
        pass  # deterministic acting

    @torch.no_grad()
    def __call__(self, obs, info=None) -> np.ndarray:
        dist = self.distribution(self.features(self.observe(obs)))
        u = dist.probs.argmax(-1) if self.cfg.action_kind == "discrete" else dist.mean
        return self.to_env(u).cpu().numpy()

    def check_spaces(self, cameras, image_size: int, action_space) -> None:
        """Refuse an env whose rig or action space differs from the one this policy was trained for."""
        want = ActorCriticConfig.for_spaces(cameras, image_size, action_space)
        mine = (self.cfg.cameras, self.cfg.image_size, self.cfg.action_kind, self.cfg.action_dim, self.cfg.low, self.cfg.high)
        theirs = (want.cameras, want.image_size, want.action_kind, want.action_dim, want.low, want.high)
        if mine != theirs:
            raise ValueError(f"this policy acts on cameras {list(mine[0])} at {mine[1]}px with {mine[2]} actions "
                             f"(dim {mine[3]}, low {list(mine[4])}, high {list(mine[5])}); the env has cameras "
                             f"{list(theirs[0])} at {theirs[1]}px with {theirs[2]} actions (dim {theirs[3]}, low "
                             f"{list(theirs[4])}, high {list(theirs[5])}): use a policy trained for this model")

    def load_start(self, start: "ActorCritic") -> None:
        """Take ``start``'s trained weights (fine-tuning). A token policy keeps its own tokenizer
        encoder (the world model's it trains in), after checking that ``start``'s codes frames the
        same way: equal up to weight storage (int8 rounding), else its ids would mean other frames."""
        state = start.state_dict()
        if self.cfg.obs == "tokens":
            for k, mine in self.token_encoder.state_dict().items():
                theirs = state[f"token_encoder.{k}"]
                if mine.is_floating_point() and (theirs - mine).abs().max() > 0.02 * mine.abs().max().clamp_min(1e-6):
                    raise ValueError(f"the start policy's tokenizer encoder differs from this world model's (at {k}): "
                                     "its token ids would mean other frames; start from a policy trained in this model "
                                     "or one fine-tuned from it")
            state = {**state, **{f"token_encoder.{k}": v for k, v in self.token_encoder.state_dict().items()}}
        self.load_state_dict(state)

    # ------------------------------------------------------------------ checkpoints
    def save_pretrained(self, path: str | Path) -> Path:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        ckpt.save_tensors(path / "model.safetensors", {k: v.detach().cpu() for k, v in self.state_dict().items()},
                          {"format": FORMAT})
        ckpt.atomic_write_json(path / "config.json", {"format": FORMAT, "config": ckpt.to_dict(self.cfg)})
        return path

    @classmethod
    def from_pretrained(cls, path: str | Path, device: str = "cpu") -> "ActorCritic":
        meta = ckpt.read_json(Path(path) / "config.json", FORMAT)
        policy = cls(ckpt.from_dict(ActorCriticConfig, meta["config"]))
        load_state_strict(policy, ckpt.load_tensors(Path(path) / "model.safetensors"), Path(path))
        return policy.to(device).eval()


def _is_ids(obs) -> bool:
    """Integer arrays of token ids (a token env's observation), not uint8 frames or a dict of them."""
    if isinstance(obs, dict):
        return False
    if torch.is_tensor(obs):
        return obs.dtype in (torch.int32, torch.int64)
    return np.asarray(obs).dtype.kind == "i" and np.asarray(obs).dtype.itemsize >= 4

