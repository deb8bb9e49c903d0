"""What each trainable component learns from an episode store, behind one interface.

A :class:`Task` names its module, builds train / held-out window datasets, turns a
:class:`~wfm_sim.records.Batch` into a loss, and scores held-out batches. The one generic loop
in :mod:`wfm_sim.training.loop` drives all three.

Dimension legend: :mod:`wfm_sim.dims`.
"""

from __future__ import annotations

import math

import torch
from einops import rearrange

from wfm_sim.datasets.split import Split
from wfm_sim.datasets.windows import WindowDataset, collate
from wfm_sim.envs.captions import CAR_CAPTIONS
from wfm_sim.metrics import psnr_signed as psnr
from wfm_sim.models import rng
from wfm_sim.models.text import TextEncoder
from wfm_sim.models.world_model import WorldModel, to_video
from wfm_sim.records import Batch, LossAndLogs, host_logs
from wfm_sim.training.token_cache import TokenWindowDataset, store_tokens

COMPONENTS = ("tokenizer", "backbone", "decoder")
"""The model's parts, each with its own weights and config section."""
HEADS = "heads"
"""A trainable that is not a part: the backbone's reward / termination / success heads alone."""


class Task:
    """Base class: one trainable part of a :class:`WorldModel`."""

    name = ""

    def __init__(self, model: WorldModel, data: str, split: Split, folder=None, cache_folder=None,
                 progress: bool = True):
        """``folder``: the model folder (where a text model's encoder lives); ``cache_folder``:
        where the backbone's per-frame token cache lives (None: tokenize per batch);
        ``progress``: a progress bar while that cache is computed."""
        self.model, self.data, self.split = model, data, split
        self.folder, self.cache_folder, self.progress = folder, cache_folder, progress
        self._tokens = None  # the token cache, computed on first use
        self._table = None  # caption embeddings, computed on first use

    @property
    def module(self) -> torch.nn.Module:
        return getattr(self.model, self.name)

    def window(self) -> int:
        raise NotImplementedError

    def dataset(self, split: str) -> WindowDataset:
        return WindowDataset(self.data, self.window(), split=split, cameras=self.model.cfg.cameras, episodes=self.split)

    collate = staticmethod(collate)

    def loss(self, batch: Batch, generator: torch.Generator) -> LossAndLogs:
        raise NotImplementedError

    @torch.no_grad()
    def evaluate(self, batch: Batch, generator: torch.Generator) -> dict[str, float]:
        return host_logs(self.loss(batch, generator).logs)


class TokenizerTask(Task):
    """Reconstruction of clips of ``1 + k`` frames (single frames for per-frame tokenizers)."""

    name = "tokenizer"

    def window(self) -> int:
        k = self.model.cfg.tokenizer.temporal_downsample
        return 1 if k == 1 else 1 + k

    def loss(self, batch, generator):
        return self.model.tokenizer(to_video(batch.obs))


class BackboneTask(Task):
    """Next-token + masked-token cross-entropy and reward / termination / success heads.

    Tokens come from the frozen tokenizer, computed per batch. Windows hold ``T`` latent
    frames: ``T`` frames for per-frame tokenizers, ``1 + k*T`` frames otherwise (the last latent
    frame only supplies the actions of the one before).
    """

    name = "backbone"

    def window(self) -> int:
        k, t = self.model.cfg.tokenizer.temporal_downsample, self.model.cfg.backbone.max_frames
        return t if k == 1 else 1 + k * t

    def dataset(self, split: str) -> WindowDataset:
        tk = self.model.cfg.tokenizer
        if self.cache_folder is None or not tk.per_frame:
            return super().dataset(split)

        if self._tokens is None:
            self._tokens = store_tokens(self.model, self.data, self.cache_folder, progress=self.progress)
        return TokenWindowDataset(self._tokens, self.data, self.window(), split=split, cameras=self.model.cfg.cameras,
                                  episodes=self.split)

    def _inputs(self, batch: Batch):
        m = self.model
        k, T = m.cfg.tokenizer.temporal_downsample, m.cfg.backbone.max_frames
        if batch.tokens is not None:
            tokens = batch.tokens[:, :T]
        else:
            with torch.no_grad(), m.autocast():
                b = batch.obs.shape[0]
                tokens = m.tokenizer.encode(to_video(batch.obs))[0]
                tokens = rearrange(tokens, "(b v) t h w -> b t v h w", b=b)[:, :T]
        if k == 1:
            actions = batch.action.unsqueeze(2)
            reward, terminated, success = batch.reward, batch.terminated, batch.success
        else:
            actions = rearrange(batch.action[:, : k * T], "b (t k) ... -> b t k ...", k=k)
            reward = rearrange(batch.reward[:, : k * T], "b (t k) -> b t k", k=k).sum(-1)
            terminated = rearrange(batch.terminated[:, : k * T], "b (t k) -> b t k", k=k).any(-1)
            success = None if batch.success is None else rearrange(batch.success[:, : k * T], "b (t k) -> b t k", k=k)[..., -1]
        return tokens, actions, reward, terminated, success

    text_dropout = 0.15
    """Share of training windows seen without their caption (the env's unprompted case)."""

    def _text(self, batch: Batch, generator: torch.Generator | None):
        """Caption embeddings ``(b, s, e)`` and mask for text-conditioned models: each window's
        caption after its first action; in training, a ``text_dropout`` share gets no text."""
        if not self.model.cfg.backbone.text_dim:
            return None, None
        if batch.caption is None:
            raise ValueError("this text-conditioned model trains on stores with scene captions (collect --captions)")
        if self._table is None:
            self._table = caption_table(self.model, self.folder)
        emb, mask = self._table
        ids = batch.caption[:, 0].to(emb.device).long()
        if generator is not None and self.model.backbone.training:
            drop = rng.draw(generator, 2, (ids.shape[0],), ids.device) < self.text_dropout
            ids = torch.where(drop.to(ids.device), torch.full_like(ids, len(emb) - 1), ids)
        return emb[ids], mask[ids]

    def loss(self, batch, generator):
        tokens, actions, reward, terminated, success = self._inputs(batch)
        text, text_mask = self._text(batch, generator)
        return self.model.backbone(tokens, actions, reward, terminated, success, text=text, text_mask=text_mask,
                                   generator=generator)

    @torch.no_grad()
    def evaluate(self, batch, generator):
        logs = host_logs(self.loss(batch, generator).logs)
        tokens, actions, reward, terminated, success = self._inputs(batch)
        text, text_mask = self._text(batch, None)
        heads = self.model.backbone
        ids, acts = heads.sequence(tokens, actions)
        pos = torch.arange(ids.shape[1], device=ids.device).expand(ids.shape[0], -1)
        h = heads.forward_chunk(ids, acts, pos, "sequential", text=text, text_mask=text_mask)
        out = heads.heads(h[:, heads.action_slots(tokens.shape[1], ids.device)])
        return {**logs, **head_metrics(out, reward, terminated, success)}


def head_metrics(out: dict, reward, terminated, success) -> dict[str, float]:
    """Reward error and termination / success accuracy of head predictions ``out`` against targets."""
    logs = {"terminated_acc": ((out["terminated_logit"] > 0) == terminated).float().mean().item(),
            "reward_mae": (out["reward"] - reward).abs().mean().item()}
    if success is not None and "success_logit" in out:
        logs["success_acc"] = ((out["success_logit"] > 0) == success).float().mean().item()
    return logs


def caption_table(model: WorldModel, folder) -> tuple[torch.Tensor, torch.Tensor]:
    """Embeddings ``(n + 1, s, e)`` and masks of every scene caption id, then of no prompt (a
    zero vector with one visible slot, what the imagined env uses when unprompted)."""
    encoder = TextEncoder.of_model(folder) if folder is not None else None
    if encoder is None:
        raise ValueError(f"this model takes text (text_dim={model.cfg.backbone.text_dim}) but its folder has no "
                         "text_encoder/: create it with `train ... --text-encoder tiny`")
    emb, mask = encoder(list(CAR_CAPTIONS))
    emb = torch.cat((emb, torch.zeros_like(emb[:1])))
    none = torch.zeros_like(mask[:1])
    none[:, 0] = True
    return emb.to(model.device), torch.cat((mask, none)).to(model.device)


class HeadsTask(BackboneTask):
    """The reward / termination / success heads alone, on the frozen trunk.

    The backbone's own training reads its heads from the hidden states it trains on, and half of
    those see masked frames (the MaskGIT rows); imagination reads them after whole frames. This
    task refits the heads on exactly what imagination reads: whole frames, half the rows with the
    frame-causal (parallel) mask and half token-causal. The trunk runs without gradients, so a
    step costs about a third of a backbone step: cheap enough to recalibrate a model's reward on
    new data on a CPU.
    """

    name = HEADS

    @property
    def module(self) -> torch.nn.Module:
        return self.model.backbone

    def _hidden(self, batch: Batch):
        tokens, actions, reward, terminated, success = self._inputs(batch)
        text, text_mask = self._text(batch, None)
        net = self.model.backbone
        b, t = tokens.shape[:2]
        ids, acts = net.sequence(tokens, actions)
        pos = torch.arange(ids.shape[1], device=ids.device).expand(b, -1)
        slots = net.action_slots(t, ids.device)
        half = (b + 1) // 2
        hidden = []
        with torch.no_grad():
            for mode, rows in (("parallel", slice(0, half)), ("sequential", slice(half, b))):
                if rows.start == rows.stop:
                    continue
                h = net.forward_chunk(ids[rows], acts[rows], pos[rows], mode, text=None if text is None else text[rows],
                                      text_mask=None if text_mask is None else text_mask[rows])
                hidden.append(h[:, slots])
        return torch.cat(hidden), reward, terminated, success

    def loss(self, batch, generator):
        h, reward, terminated, success = self._hidden(batch)
        loss, logs = self.model.backbone.head_loss(h, reward, terminated, success, None)
        return LossAndLogs(loss=loss, logs=logs)

    @torch.no_grad()
    def evaluate(self, batch, generator):
        h, reward, terminated, success = self._hidden(batch)
        loss, logs = self.model.backbone.head_loss(h, reward, terminated, success, None)
        return {**host_logs({**logs, "heads_loss": loss}), **head_metrics(self.model.backbone.heads(h), reward, terminated, success)}


class DecoderTask(Task):
    """EDM loss on one latent frame's frames given its tokens, the tokenizer's decode and the
    frame before: windows of 2 frames per-frame, ``1 + k`` frames (frame 0, then one group of
    ``k`` decoded jointly) for a tokenizer grouping ``k`` frames."""

    name = "decoder"

    def window(self) -> int:
        if self.model.decoder is None:
            raise ValueError("this model has no diffusion decoder to train")
        return 1 + self.model.cfg.tokenizer.temporal_downsample

    def _inputs(self, batch: Batch):
        m = self.model
        video = to_video(batch.obs)  # ((b v), 3, 1 + k, H, W)
        with torch.no_grad(), m.autocast():
            if m.cfg.tokenizer.per_frame:
                tokens = m.tokenizer.encode(video[:, :, 1:])[0]  # per-frame: frame 1 alone
                token_decode = m.tokenizer.decode(tokens, check=False).float()
            else:  # frame 0 alone, then the group: its tokens and decode see frame 0 (causal)
                both = m.tokenizer.encode(video)[0]  # ((b v), 2, h, w)
                tokens, token_decode = both[:, -1:], m.tokenizer.decode(both, check=False).float()[:, :, 1:]
        return video[:, :, 1:], tokens[:, 0], token_decode, video[:, :, 0]

    def loss(self, batch, generator):
        target, tokens, token_decode, prev = self._inputs(batch)
        return self.model.decoder(target, tokens, token_decode, prev, generator=generator)

    @torch.no_grad()
    def evaluate(self, batch, generator):
        logs = host_logs(self.loss(batch, generator).logs)
        target, tokens, token_decode, prev = self._inputs(batch)
        logs["psnr_token_decode"] = _clip_psnr(token_decode, target)
        for steps in sorted({1, self.model.decoder.cfg.steps}):
            out = self.model.decoder.sample(tokens, token_decode, prev, steps=steps, generator=generator)
            logs[f"psnr_diffusion_{steps}step"] = _clip_psnr(out, target)
        return logs


def _clip_psnr(pred: torch.Tensor, target: torch.Tensor) -> float:
    """Mean PSNR over every frame of ``(b, 3, t, H, W)`` clips."""
    return psnr(rearrange(pred, "b c t h w -> (b t) c h w"), rearrange(target, "b c t h w -> (b t) c h w")).mean().item()


TASKS = {"tokenizer": TokenizerTask, "backbone": BackboneTask, "decoder": DecoderTask, HEADS: HeadsTask}


def lr_at(step: int, base: float, warmup: int, total: int) -> float:
    """Linear warm-up then cosine decay to 10% of ``base``."""
    if step < warmup:
        return base * (step + 1) / warmup
    frac = min(1.0, (step - warmup) / max(1, total - warmup))
    return base * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))


def frozen_except(model: WorldModel, name: str) -> None:
    """Train only component ``name`` (or the backbone's head MLPs alone, ``HEADS``); the others stay
    fixed (and in eval mode)."""
    for comp in COMPONENTS:
        mod = getattr(model, comp)
        if mod is None:
            continue
        mod.requires_grad_(comp == name)
        mod.train(comp == name)
    if name == HEADS:
        for head in (model.backbone.head_reward, model.backbone.head_done, model.backbone.head_reward_ens):
            head.requires_grad_(True)
            head.train()


__all__ = ["TASKS", "Task", "frozen_except", "lr_at", "psnr", "to_video"]
