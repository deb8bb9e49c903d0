"""Tokens of every frame of a store, computed once with the frozen tokenizer and kept on disk.

Training the backbone then reads integer ids from memory instead of running the tokenizer
on every batch. The cache is keyed by the store's id and row count and by a digest of the
tokenizer's weights, so a retrained tokenizer or a grown store recomputes it.

Dimension legend: :mod:`wfm_sim.dims`.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from wfm_sim import checkpoint as ckpt
from wfm_sim.datasets.store import EpisodeReader
from wfm_sim.datasets.windows import WINDOW_EXTRAS, WindowDataset
from wfm_sim.models.world_model import WorldModel, to_video


def tokenizer_digest(model: WorldModel) -> str:
    h = hashlib.sha1()
    for k, v in sorted(model.tokenizer.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().float().cpu().numpy().tobytes())
    return h.hexdigest()[:16]


@torch.no_grad()
def store_tokens(model: WorldModel, data: str | Path, folder: str | Path, batch: int = 128,
                 progress: bool = True) -> np.ndarray:
    """``(b, v, g, g)`` int16 token ids for every committed row of ``data`` (cached in ``folder``)."""
    r = EpisodeReader(data)
    key = f"{r.attrs['store_id']}:{r.num_steps}:{tokenizer_digest(model)}:{','.join(model.cfg.cameras)}"
    path = Path(folder) / "tokens.safetensors"
    if path.is_file():
        from safetensors import safe_open

        with safe_open(str(path), "pt") as f:
            if (f.metadata() or {}).get("key") == key:
                return f.get_tensor("tokens").numpy()
    n, cams = r.num_steps, model.cfg.cameras
    g = model.cfg.tokenizer.grid
    out = np.zeros((n, len(cams), g, g), dtype=np.int16)
    bar = tqdm(total=n * len(cams), desc="tokenize store", unit="frame", disable=not progress)
    for v, cam in enumerate(cams):
        arr = r.arrays[f"obs/{cam}"]
        for s in range(0, n, batch):
            frames = torch.from_numpy(arr[s : min(n, s + batch)]).to(model.device)  # (b, H, W, 3) of one camera
            with model.autocast():
                out[s : s + len(frames), v] = model.tokenizer.encode(to_video(frames[:, None, None]))[0][:, 0].cpu().numpy()
            bar.update(len(frames))
    bar.close()
    Path(folder).mkdir(parents=True, exist_ok=True)
    ckpt.save_tensors(path, {"tokens": torch.from_numpy(out)}, {"key": key, "format": "wfm_sim.TokenCache"})
    return out


class TokenWindowDataset(WindowDataset):
    """:class:`WindowDataset` windows served from memory: cached tokens instead of frames."""

    def __init__(self, tokens: np.ndarray, *args, **kwargs):
        super().__init__(*args, **kwargs)
        r = EpisodeReader(self.path)
        n = r.num_steps
        self.tokens = tokens
        self.mem = {k: np.asarray(r.arrays[k][:n]) for k in ("action", "reward", "terminated")}
        for key in WINDOW_EXTRAS:
            if key in self.extras:
                self.mem[key] = np.asarray(r.arrays[key][:n])

    def __getitem__(self, i: int) -> dict[str, np.ndarray]:
        s = int(self.starts[i])
        e = s + self.frames
        item = {k: v[s:e] for k, v in self.mem.items()}
        item["tokens"] = self.tokens[s:e].astype(np.int64)
        item["reward"] = item["reward"].astype(np.float32)
        return item
