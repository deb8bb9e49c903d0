"""Training state on disk without pickle: tensors in safetensors, everything else in JSON.

A train-state folder holds ``state.safetensors`` (module weights, optimizer moments, RNG
states) and ``state.json`` (step, optimizer hyper-parameters, scalar RNG state), both replaced
atomically so a run killed mid-save resumes from the previous checkpoint.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch

from wfm_sim import checkpoint as ckpt
from wfm_sim.models.world_model import load_state_strict

FORMAT = "wfm_sim.TrainState"


def _flatten_optimizer(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    sd = opt.state_dict()
    tensors, scalars = {}, {}
    for pid, st in sd["state"].items():
        for k, v in st.items():
            if isinstance(v, torch.Tensor):
                tensors[f"optim/{pid}/{k}"] = v
            else:
                scalars[f"{pid}/{k}"] = v
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], meta: dict) -> dict:
    state: dict[int, dict] = {}
    for key, v in tensors.items():
        if key.startswith("optim/"):
            _, pid, k = key.split("/", 2)
            state.setdefault(int(pid), {})[k] = v
    for key, v in meta["scalars"].items():
        pid, k = key.split("/", 1)
        state.setdefault(int(pid), {})[k] = v
    return {"state": state, "param_groups": meta["param_groups"]}


def save_train_state(folder: Path, module: torch.nn.Module, opt: torch.optim.Optimizer, step: int,
                     extra: dict | None = None) -> None:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {f"module/{k}": v for k, v in module.state_dict().items()}
    opt_t, opt_meta = _flatten_optimizer(opt)
    tensors.update(opt_t)
    tensors["rng/torch"] = torch.get_rng_state()
    np_state = np.random.get_state()
    ckpt.save_tensors(folder / "state.safetensors", tensors, {"format": FORMAT})
    ckpt.atomic_write_json(folder / "state.json", {
        "format": FORMAT, "step": step, "optimizer": opt_meta, "extra": extra or {},
        "rng_numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]], "rng_python": _py_state(),
    })


def _py_state():
    v, state, g = random.getstate()
    return [v, list(state), g]


def load_train_state(folder: Path, module: torch.nn.Module, opt: torch.optim.Optimizer) -> tuple[int, dict]:
    """Restore module, optimizer and RNGs in place; returns ``(step, extra)``."""
    folder = Path(folder)
    meta = ckpt.read_json(folder / "state.json", FORMAT)
    missing = [k for k in ("step", "optimizer", "rng_numpy", "rng_python") if k not in meta]
    if missing:
        raise ValueError(f"{folder / 'state.json'} lacks {missing}: not a complete train state (a corrupt or "
                         "hand-edited file?); remove the train_state folder to start over")
    step = meta.get("step")
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise ValueError(f"{folder / 'state.json'} gives step {step!r}: expected a whole number >= 0 (a corrupt state?)")
    tensors = ckpt.load_tensors(folder / "state.safetensors")
    module_sd = {k[len("module/"):]: v for k, v in tensors.items() if k.startswith("module/")}

    load_state_strict(module, module_sd, folder / "state.safetensors")
    opt.load_state_dict(_unflatten_optimizer(tensors, meta["optimizer"]))
    torch.set_rng_state(tensors["rng/torch"])
    n = meta["rng_numpy"]
    np.random.set_state((n[0], np.asarray(n[1], dtype=np.uint32), *n[2:]))
    v, state, g = meta["rng_python"]
    random.setstate((v, tuple(state), g))
    return int(meta["step"]), meta.get("extra", {})
