"""Gymnasium environments whose every frame comes from the world model.

Dimension legend: :mod:`wfm_sim.dims` (``b`` sub-envs, ``v`` cameras, ``f`` frames per step).
"""

from __future__ import annotations

from pathlib import Path

import gymnasium as gym
import numpy as np
import torch
from gymnasium.vector import AutoresetMode, VectorEnv

from wfm_sim.envs.contexts import ContextBank
from wfm_sim.envs.inputs import batch_context
from wfm_sim.envs.spaces import check_actions, model_action_space, pixel_space, token_space
from wfm_sim.models.rollout import Rollout
from wfm_sim.models.sampling import SamplingConfig
from wfm_sim.models.text import TextEncoder
from wfm_sim.models.world_model import WorldModel, resolve_pretrained
from wfm_sim.viz import mosaic

OBS_MODES = ("pixels", "tokens")
OBS_FRAMES = ("last", "all")
_NUMPY_DTYPES = {torch.uint8: np.uint8, torch.int64: np.int64}
"""Observation dtypes, for reading them back from the step's one host copy."""
PROMPT_SEP = " | prompt: "
"""Joins a prompted start's context origin and its prompt in ``info["context"]``."""


def autoreset(mode: str | AutoresetMode) -> AutoresetMode:
    """``AutoresetMode`` from an enum or a name like 'next_step', 'SameStep', 'disabled'."""
    if isinstance(mode, AutoresetMode):
        return mode
    key = str(mode).replace("_", "").lower()
    for m in AutoresetMode:
        if m.value.lower() == key:
            return m
    raise ValueError(f"autoreset_mode must be one of {[m.value for m in AutoresetMode]} (or next_step/same_step/disabled), got {mode!r}")


class ImaginedVectorEnv(VectorEnv):
    """N imagined environments stepped together: one batched model call per step.

    ## Description
    A learned world model (video tokenizer + causal transformer + decoder) plays the simulator
    it was trained on. ``reset`` starts every sub-env from real context frames (a dataset
    episode, the contexts shipped with the model, or frames you pass); ``step`` predicts the
    next frame of every camera, the reward and the termination.

    ## Time
    One env step is one latent frame of the model: with a tokenizer that compresses k frames
    into one (Cosmos' 1 + k*m layout; k = ``cfg.frames_per_step``), a step takes k actions
    and predicts k frames per camera. Contexts hold ``1 + k*m`` frames (frame 0 is coded
    alone) and the ``k*m`` per-frame actions between them; ``max_episode_steps`` counts steps,
    so an episode of S steps is ``k*S`` frames. For per-frame models k = 1 and all of this
    reduces to one action, one frame.

    ## Observation Space
    ``pixels``: one camera ``Box(0, 255, (H, W, 3), uint8)``; several cameras a ``Dict`` keyed
    by camera name. With ``obs_frames='all'`` each camera gives all k frames of the step,
    ``(k, H, W, 3)`` oldest first (after a reset: the context's last k frames, its first frame
    repeated in front when it is shorter); the default ``'last'`` gives the newest only.
    ``tokens``: ``Box(0, vocab-1, (V, g, g), int64)``, the step's latent frame, skipping pixel
    decoding.

    ## Action Space
    From the model config: ``Box(low, high, (A,), float32)`` or ``Discrete(n)``; for k > 1
    ``Box`` of shape ``(f, a)`` or ``MultiDiscrete([K] * f)``, one action per predicted frame.
    Out-of-bound, NaN or mis-shaped actions raise.

    ## Rewards
    The model's reward head for the action just taken.

    ## Episode End
    Terminated when the termination head fires; truncated after ``max_episode_steps``.

    ## Determinism
    ``reset(seed=s)`` seeds one ``torch.Generator`` per sub-env (sub-env i gets ``s + i``): the
    same seeds, actions and batch layout (number of sub-envs, which rows step together) give
    bit-identical rollouts, and a row's result does not depend on what the other rows hold.
    A sub-env of a batch of N is *not* promised to equal a single env with the same seed: CPU
    and GPU matmul kernels sum in a different order for other batch sizes, the last bits
    differ, and sampled tokens can then diverge.

    ## Arguments
    num_envs, model (shipped name or folder, or a WorldModel), dataset (store for contexts),
    decoder ('token' | 'diffusion'), diffusion_steps, mode ('sequential' | 'parallel'),
    parallel_steps, obs_mode ('pixels' | 'tokens'), obs_frames ('last' | 'all'), max_episode_steps, autoreset_mode
    ('next_step' | 'same_step' | 'disabled'), sampling (SamplingConfig), device, precision,
    torch_obs (keep tensors on the model's device), render_mode ('rgb_array').
    """

    metadata = {"render_modes": ["rgb_array"], "autoreset_mode": AutoresetMode.NEXT_STEP}

    def __init__(self, num_envs: int = 1, model: str | Path | WorldModel | None = None, *,
                 dataset: str | Path | None = None, decoder: str = "token", diffusion_steps: int | None = None,
                 mode: str = "parallel", parallel_steps: int = 8, obs_mode: str = "pixels", obs_frames: str = "last",
                 max_episode_steps: int | None = 200, autoreset_mode: str | AutoresetMode = AutoresetMode.NEXT_STEP,
                 sampling: SamplingConfig | None = None, device: str = "auto", precision: str = "auto",
                 torch_obs: bool = False, render_mode: str | None = None, text_encoder=None):
        if model is None:
            raise ValueError("pass model=: a shipped model name ('driving', 'manipulation') or a model folder")
        if obs_mode not in OBS_MODES:
            raise ValueError(f"obs_mode must be one of {OBS_MODES}, got {obs_mode!r}")
        if obs_frames not in OBS_FRAMES:
            raise ValueError(f"obs_frames must be one of {OBS_FRAMES}, got {obs_frames!r}")
        self.obs_frames = obs_frames
        if max_episode_steps is not None and (not isinstance(max_episode_steps, (int, np.integer)) or max_episode_steps < 1):
            raise ValueError(f"max_episode_steps must be a positive integer or None (no limit), got {max_episode_steps!r}")
        if int(num_envs) < 1:
            raise ValueError(f"num_envs must be >= 1, got {num_envs}")
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode must be None or 'rgb_array', got {render_mode!r}")
        self.model = model if isinstance(model, WorldModel) else WorldModel.from_pretrained(model, device, precision)
        self.model.eval()
        c = self.model.cfg
        self.cfg, self.num_envs = c, int(num_envs)
        self.decoder, self.diffusion_steps, self.obs_mode = decoder, diffusion_steps, obs_mode
        self.max_episode_steps, self.torch_obs, self.render_mode = max_episode_steps, torch_obs, render_mode
        self.metadata = {**self.metadata, "autoreset_mode": autoreset(autoreset_mode), "render_fps": c.fps}
        self.cameras, self.context_frames = c.cameras, c.context_frames
        folder = None if isinstance(model, WorldModel) else resolve_pretrained(model)
        self.contexts = (ContextBank.from_store(dataset, c.cameras, c.context_video_frames) if dataset is not None
                         else ContextBank.load(folder) if folder is not None else None)
        if self.contexts is not None and self.contexts.frames.shape[3:5] != (c.tokenizer.image_size,) * 2:
            raise ValueError(f"context frames are {self.contexts.frames.shape[3]}px, the model takes "
                             f"{c.tokenizer.image_size}px: start from a store recorded at the model's frame size")
        if text_encoder is None and c.backbone.text_dim and folder is not None:
            text_encoder = TextEncoder.of_model(folder)  # the encoder the model was trained with
        self.text_encoder = text_encoder
        if text_encoder is not None and c.backbone.text_dim != text_encoder.dim:
            raise ValueError(f"the model takes {c.backbone.text_dim}-d text embeddings, the encoder gives {text_encoder.dim}")
        # Per-row prompt buffers (filled by reset(options={"prompt": ...})) live in the rollout.
        self.rollout = Rollout(self.model, self.num_envs, mode, sampling or SamplingConfig(), parallel_steps, decoder,
                               diffusion_steps, decode=obs_mode == "pixels",
                               prompt_tokens=0 if text_encoder is None else text_encoder.max_tokens)
        """The imagined rows behind the sub-envs (read-only use: step and reset through the env)."""
        self._build_spaces()
        n = self.num_envs
        self._steps = np.zeros(n, dtype=np.int64)
        self._done = np.zeros(n, dtype=bool)
        self._reset_once = False
        self._row_context: dict[int, tuple] = {}  # caller contexts, reused by autoresets
        self._row_rngs = [np.random.default_rng(i) for i in range(n)]

    # ----------------------------------------------------------------- spaces
    def _build_spaces(self) -> None:
        c = self.cfg
        if self.obs_mode == "tokens":
            obs = token_space(c.cameras, c.tokenizer.grid, c.tokenizer.vocab_size)
        else:
            obs = pixel_space(c.cameras, c.tokenizer.image_size,
                              c.frames_per_step if self.obs_frames == "all" else None)
        act = model_action_space(c)
        self.single_observation_space, self.single_action_space = obs, act
        self.observation_space = gym.vector.utils.batch_space(obs, self.num_envs)
        self.action_space = gym.vector.utils.batch_space(act, self.num_envs)

    # ------------------------------------------------------------------ reset
    def reset(self, *, seed: int | list[int] | None = None, options: dict | None = None):
        if options is not None and not isinstance(options, dict):
            raise TypeError(f"reset options must be a dict (context, frames/actions, episode, prompt, reset_mask), "
                            f"got {type(options).__name__}")
        options = dict(options or {})
        mask = options.pop("reset_mask", None)
        if isinstance(seed, (np.integer, int)) and not isinstance(seed, bool):
            seed = int(seed)
        elif seed is not None and not (isinstance(seed, (list, tuple, np.ndarray)) and all(
                isinstance(x, (int, np.integer)) and not isinstance(x, bool) for x in seed)):
            raise TypeError(f"seed must be an int, a list of {self.num_envs} ints or None, got {seed!r}")
        if seed is not None and (min(np.atleast_1d(seed)) < 0 or max(np.atleast_1d(seed)) >= 2**63):
            raise ValueError(f"seeds must lie in [0, 2**63), got {seed!r}")
        rows = np.arange(self.num_envs) if mask is None else np.flatnonzero(np.asarray(mask, dtype=bool))
        if mask is not None and np.asarray(mask).shape != (self.num_envs,):
            raise ValueError(f"reset_mask must be a bool array of shape ({self.num_envs},)")
        if isinstance(seed, int) or (seed is None and not self._reset_once):
            base = seed if seed is not None else int(np.random.SeedSequence().generate_state(1)[0])
            seeds = [base + i for i in range(self.num_envs)]
        elif seed is None:
            seeds = None
        else:
            if len(seed) != self.num_envs:
                raise ValueError(f"seed list must have {self.num_envs} entries, got {len(seed)}")
            seeds = list(seed)
        if seeds is not None:
            super().reset(seed=seeds[0])
            for i in rows:
                self._row_rngs[i] = np.random.default_rng(seeds[i])
        infos = self._reset_rows(rows, options, None if seeds is None else [seeds[i] for i in rows])
        self._reset_once = True
        return self._obs_all(), infos

    def _reset_rows(self, rows: np.ndarray, options: dict, seeds: list[int] | None, keep_text: bool = False) -> dict:
        prompts = None
        if "prompt" in options:
            prompts = self._set_prompts(rows, options.pop("prompt"))
            if not {"frames", "context", "episode"} & set(options) and self.contexts is None:
                return self._reset_from_prompt(rows, prompts, seeds)
        elif self.text_encoder is not None and not keep_text:
            self._set_prompts(rows, None)  # a reset without a prompt is unprompted
        frames, actions, origin = batch_context(self, rows, options, self._row_rngs)
        if prompts is not None:
            origin = [f"{o}{PROMPT_SEP}{p}" for o, p in zip(origin, prompts)]
        for j, i in enumerate(rows):  # remember caller contexts; dataset contexts are re-drawn
            if "frames" in options or "context" in options:
                self._row_context[int(i)] = ("frames", frames[j].numpy(), actions[j].numpy())
            else:
                self._row_context.pop(int(i), None)
        self.rollout.reset(rows, frames, actions if frames.shape[1] > 1 else None, seeds)
        self._steps[rows] = 0
        self._done[rows] = False
        return {"context": np.asarray(origin, dtype=object), "_context": np.isin(np.arange(self.num_envs), rows)}

    def _context_options(self, rows: np.ndarray) -> dict:
        """Reset options for autoresetting ``rows``: each row's last caller context, if it had one."""
        ctx = [self._row_context.get(int(i)) for i in rows]
        if any(c is None for c in ctx):
            return {}
        if ctx[0][0] == "prompt":
            return {"prompt": [c[1] for c in ctx]}
        return {"frames": np.stack([c[1] for c in ctx]), "actions": np.stack([c[2] for c in ctx])}

    def _set_prompts(self, rows: np.ndarray, prompts) -> list[str] | None:
        """Condition ``rows`` on ``prompts`` (one string, or one per row); None: no prompt."""
        if self.text_encoder is None:
            if prompts is None:
                return None
            raise ValueError("a prompt needs a text-conditioned model (backbone.text_dim > 0) and its text encoder: "
                             "a model folder with text_encoder/, or text_encoder= when making the env")
        if prompts is None:
            self.rollout.set_prompt(rows, None)  # a zero vector at token 0 means "no prompt"
            return None
        prompts = [prompts] * len(rows) if isinstance(prompts, str) else list(prompts)
        if len(prompts) != len(rows) or not all(isinstance(p, str) for p in prompts):
            raise ValueError(f"give one prompt or {len(rows)} prompts (strings), got {prompts!r}")
        self.rollout.set_prompt(rows, *self.text_encoder(prompts))
        return prompts

    def _reset_from_prompt(self, rows: np.ndarray, prompts: list[str], seeds: list[int] | None) -> dict:
        """Start ``rows`` from their prompt alone (no context): frame 0 generated from the text."""
        if seeds is None:
            seeds = [int(self._row_rngs[i].integers(2**31)) for i in rows]
        for i, p in zip(rows, prompts):
            self._row_context[int(i)] = ("prompt", p)
        self.rollout.reset_from_prompt(rows, seeds)
        self._steps[rows] = 0
        self._done[rows] = False
        return {"context": np.asarray([f"prompt: {p}" for p in prompts], dtype=object),
                "_context": np.isin(np.arange(self.num_envs), rows)}

    # ------------------------------------------------------------------- step
    def step(self, actions):
        if not self._reset_once:
            raise RuntimeError("step() called before reset(): call reset(seed=...) first")
        a = check_actions(self.single_action_space, actions, (self.num_envs,), f"actions (num_envs={self.num_envs})")
        act = torch.as_tensor(a, device=self.model.device).reshape((self.num_envs,) + self.model.action_shape)
        n = self.num_envs
        reward = np.zeros(n, np.float32)
        terminated, truncated = np.zeros(n, bool), np.zeros(n, bool)
        mode = self.metadata["autoreset_mode"]
        infos: dict = {}
        to_reset = np.flatnonzero(self._done) if mode == AutoresetMode.NEXT_STEP else np.zeros(0, int)
        if mode == AutoresetMode.DISABLED and self._done.any():
            raise RuntimeError(f"sub-envs {np.flatnonzero(self._done).tolist()} ended; reset them with "
                               "reset(options={'reset_mask': mask}) before stepping (autoreset_mode=DISABLED)")
        if to_reset.size:
            infos.update(self._reset_rows(to_reset, self._context_options(to_reset), None, keep_text=True))
        rows = np.setdiff1d(np.arange(n), to_reset)
        obs = None
        if rows.size:
            all_rows = rows.size == n
            out = self.rollout.step(act if all_rows else act[torch.as_tensor(rows, device=act.device)],
                                    None if all_rows else rows)
            fields = [out.reward.float(), out.entropy.float(), out.terminated.float()]
            if out.success is not None:
                fields.append(out.success.float())
            if out.reward_std is not None:
                fields.append(out.reward_std.float())
            stats, obs = self._handover(torch.stack(fields, 1))
            reward[rows], ent_rows = stats[:, 0], stats[:, 1]
            if not (np.isfinite(reward[rows]).all() and np.isfinite(ent_rows).all()):
                raise RuntimeError(f"the world model produced non-finite rewards or token probabilities for sub-envs "
                                   f"{rows[~(np.isfinite(reward[rows]) & np.isfinite(ent_rows))].tolist()}: its weights "
                                   "or inputs are corrupt (reload the model; check the context frames)")
            terminated[rows] = stats[:, 2] > 0
            self._steps[rows] += 1
            if self.max_episode_steps is not None:
                truncated[rows] = (self._steps[rows] >= self.max_episode_steps) & ~terminated[rows]
            mask = np.isin(np.arange(n), rows)
            ent = np.zeros(n, np.float32)
            ent[rows] = ent_rows
            infos.update({"entropy": ent, "_entropy": mask})  # every value an (n,) array with its mask (Gymnasium vector info)
            if out.success is not None:
                succ = np.zeros(n, bool)
                succ[rows] = stats[:, 3] > 0
                infos.update({"success": succ, "_success": mask})
            if out.reward_std is not None:
                spread = np.zeros(n, np.float32)
                spread[rows] = stats[:, -1]
                infos.update({"reward_std": spread, "_reward_std": mask})
        self._done = terminated | truncated
        if mode == AutoresetMode.SAME_STEP and self._done.any():
            ended = np.flatnonzero(self._done)
            final = self._obs_all()
            finals = np.empty(n, dtype=object)  # filled per row: np.array(list) would build an object array of pixels
            for i in ended:
                finals[i] = self._index_obs(final, i)
            infos["final_obs"] = finals
            infos["_final_obs"] = self._done.copy()
            infos.update(self._reset_rows(ended, self._context_options(ended), None, keep_text=True))
            self._done[:] = False
            obs = None
        return obs if obs is not None else self._obs_all(), reward, terminated, truncated, infos

    # ------------------------------------------------------------ observations
    def _obs_tensor(self) -> torch.Tensor:
        """The observations of every sub-env on the model's device: ``(b, v, h, w)`` tokens,
        ``(b, v, H, W, 3)`` frames or, with ``obs_frames='all'``, ``(b, v, f, H, W, 3)``."""
        if self.obs_mode == "tokens":
            return self.rollout.last_tokens()
        if self.obs_frames == "all":
            return self.rollout.group_frames.transpose(1, 2)
        return self.rollout.frames

    def _handover(self, stats: torch.Tensor) -> tuple[np.ndarray, object]:
        """Bring a step's per-row float32 stats and every observation to the caller in ONE
        device-to-host copy (the step's only sync): both ride in one byte buffer."""
        src = self._obs_tensor()
        if self.torch_obs:
            return stats.cpu().numpy(), self._format_obs(src.clone())
        parts = [stats.contiguous(), src.contiguous()]
        flat = torch.cat([p.reshape(-1).view(torch.uint8) for p in parts]).cpu().numpy()
        split = stats.numel() * 4
        host_stats = flat[:split].view(np.float32).reshape(stats.shape)
        obs = flat[split:].view(_NUMPY_DTYPES[src.dtype]).reshape(src.shape)  # a fresh buffer: no aliasing
        return host_stats, self._format_obs(obs)

    def _format_obs(self, frames):
        if self.obs_mode == "tokens":
            return frames
        if len(self.cameras) == 1:
            return frames[:, 0]
        return {cam: frames[:, i] for i, cam in enumerate(self.cameras)}

    def _obs_all(self):
        src = self._obs_tensor()
        # Copies: on CPU .numpy() would alias the buffer the next step overwrites.
        return self._format_obs(src.clone() if self.torch_obs else src.cpu().numpy().copy())

    @staticmethod
    def _index_obs(obs, i):
        return {k: v[i] for k, v in obs.items()} if isinstance(obs, dict) else obs[i]

    def render(self):
        if self.render_mode != "rgb_array":
            return None
        if self.obs_mode == "tokens":
            frames = self.rollout.decode().cpu().numpy()
        else:
            frames = self.rollout.frames.cpu().numpy()
        return tuple(mosaic(list(f), list(self.cameras)) for f in frames)

    def close_extras(self, **kwargs):
        self.rollout = None


class ImaginedEnv(gym.Env):
    """One imagined environment: the ``num_envs=1`` case of :class:`ImaginedVectorEnv`.

    Takes the same arguments (without ``num_envs``/``autoreset_mode``); see that class for the
    spaces, rewards and episode end.
    """

    metadata = {"render_modes": ["rgb_array"]}

    def __init__(self, model=None, render_mode: str | None = None, max_episode_steps: int | None = None, **kwargs):
        # No limit of its own by default: gym.make wraps it in a TimeLimit of the registered (or
        # given) max_episode_steps. Constructed directly, pass max_episode_steps for a limit.
        self._vec = ImaginedVectorEnv(1, model, autoreset_mode=AutoresetMode.DISABLED, render_mode=render_mode,
                                      max_episode_steps=max_episode_steps, **kwargs)
        self.observation_space = self._vec.single_observation_space
        self.action_space = self._vec.single_action_space
        self.render_mode = render_mode
        self.metadata = {**self.metadata, "render_fps": self._vec.cfg.fps}

    @property
    def model(self) -> WorldModel:
        return self._vec.model

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        obs, info = self._vec.reset(seed=seed, options=options)  # checks the seed and options first
        super().reset(seed=seed)
        return self._first(obs), {k: v[0] for k, v in info.items() if not k.startswith("_")}

    def step(self, action):
        if self._vec._done[0]:
            raise RuntimeError("the episode has ended (terminated or truncated): call reset() before step()")
        batched = check_actions(self.action_space, action, (), "action")[None]  # one message for every bad action
        obs, r, term, trunc, info = self._vec.step(batched)
        info = {k: (v[0] if isinstance(v, np.ndarray) else v) for k, v in info.items() if not k.startswith("_")}
        return self._first(obs), float(r[0]), bool(term[0]), bool(trunc[0]), info

    @staticmethod
    def _first(obs):
        return {k: v[0] for k, v in obs.items()} if isinstance(obs, dict) else obs[0]

    def render(self):
        frames = self._vec.render()
        return None if frames is None else frames[0]
