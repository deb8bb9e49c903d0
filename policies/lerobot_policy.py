"""LeRobot policies (ACT, diffusion, ...) acting in wfm_sim's imagined and real envs.

LeRobot cannot share wfm_sim's Python environment (it pins another torch and huggingface-hub),
so the policy runs in its own process, started with the interpreter of an environment that has
LeRobot, and served by :mod:`wfm_sim.policies.lerobot_serve` (a file with no wfm_sim imports)
over a pipe: the way LeRobot's own asynchronous inference serves policies. Name it
``lerobot:FOLDER`` wherever a policy is accepted (``wfm-sim score --policies lerobot:FOLDER``)::

    python -m venv .venv-lerobot && .venv-lerobot/bin/pip install lerobot==0.4.4
    export WFM_SIM_LEROBOT_PYTHON=$PWD/.venv-lerobot/bin/python

**Keys.** A LeRobot policy reads ``observation.images.<name>``; by default ``<name>`` is the env's
camera of that name, which is what ``wfm-sim dataset export lerobot`` writes, so a policy
trained on an exported store needs no mapping. Another naming is declared in
``FOLDER/wfm_sim.json`` as ``{"cameras": {"observation.images.top": "CAM_FRONT"}}``. Policies
that read ``observation.state`` are refused: imagined envs predict frames, not proprioception.

**Batches.** The policy keeps one set of queues (action chunks, observation history) for the
whole batch, as in ``lerobot-eval``: ``reset`` clears them for every row, so rows should start
their episodes together (scoring does). Actions are clipped to the env's bounds.
"""

from __future__ import annotations

import io
import json
import os
import struct
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from wfm_sim.policies.base import Policy

SERVE = Path(__file__).with_name("lerobot_serve.py")
PREFIX = "lerobot:"


def lerobot_python() -> str:
    """The interpreter of the environment that has LeRobot: ``$WFM_SIM_LEROBOT_PYTHON``, else
    ``.venv-lerobot/bin/python`` in the working directory."""
    path = os.environ.get("WFM_SIM_LEROBOT_PYTHON") or str(Path.cwd() / ".venv-lerobot" / "bin" / "python")
    if not Path(path).is_file():
        raise FileNotFoundError(
            f"LeRobot policies run in an environment that has lerobot, and {path} does not exist: make one with "
            "`python -m venv .venv-lerobot && .venv-lerobot/bin/pip install lerobot==0.4.4`, or set "
            "WFM_SIM_LEROBOT_PYTHON to its python")
    return path


class LeRobotPolicy(Policy):
    """A pretrained LeRobot policy folder (``config.json`` with its ``type``, ``model.safetensors``,
    the saved pre- and post-processors), served from LeRobot's environment.

    Args:
        folder: what LeRobot's ``save_pretrained`` wrote (or ``lerobot-train``'s
            ``checkpoints/<step>/pretrained_model``).
        python: the interpreter of an environment with LeRobot (default: :func:`lerobot_python`).
        cameras: LeRobot image key -> env camera, over the default and ``FOLDER/wfm_sim.json``.
    """

    def __init__(self, folder: str | Path, python: str | None = None, cameras: dict[str, str] | None = None):
        self.folder = Path(folder)
        cfg_path = self.folder / "config.json"
        if not cfg_path.is_file() or not (self.folder / "model.safetensors").is_file():
            raise FileNotFoundError(f"{self.folder} is not a saved LeRobot policy (config.json and model.safetensors)")
        try:
            kind = json.loads(cfg_path.read_text()).get("type")
        except ValueError as e:
            raise ValueError(f"{cfg_path} is not valid JSON: {e}") from e
        if not kind:
            raise ValueError(f"{cfg_path} names no policy 'type': not a LeRobot policy config")
        declared = {}
        if (self.folder / "wfm_sim.json").is_file():
            declared = json.loads((self.folder / "wfm_sim.json").read_text()).get("cameras", {})
        self._log = tempfile.TemporaryFile()
        self.proc = subprocess.Popen([python or lerobot_python(), str(SERVE), str(self.folder)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log)
        info = self._ask(op="info")
        self.kind = str(info["type"])
        self.images = [str(k) for k in info["images"]]
        self.shapes = {k: tuple(int(x) for x in s) for k, s in zip(self.images, info["image_shapes"])}
        self.action_dim = int(info["action_dim"])
        if int(info["state_dim"]):
            self.close()
            raise ValueError(f"{self.folder}: this {self.kind} policy reads observation.state ({int(info['state_dim'])} "
                             "values); imagined envs predict frames, not proprioception: train it on images only")
        if not self.images:
            self.close()
            raise ValueError(f"{self.folder}: this {self.kind} policy reads no image; nothing in an env can drive it")
        self.camera_of = {k: k.removeprefix("observation.images.") for k in self.images} | declared | (cameras or {})
        self.low = self.high = None

    # ------------------------------------------------------------------ pipe
    def _ask(self, **request) -> dict:
        buf = io.BytesIO()
        np.savez(buf, **request)
        data = buf.getvalue()
        try:
            self.proc.stdin.write(struct.pack("<Q", len(data)) + data)
            self.proc.stdin.flush()
            head = self.proc.stdout.read(8)
            if len(head) < 8:
                raise BrokenPipeError
            (n,) = struct.unpack("<Q", head)
            with np.load(io.BytesIO(self.proc.stdout.read(n)), allow_pickle=False) as f:
                answer = {k: f[k] for k in f.files}
        except (BrokenPipeError, OSError) as e:
            raise RuntimeError(f"the LeRobot policy server for {self.folder} stopped ({str(e) or 'no answer'}); its "
                               f"log ends:\n{self._tail()}") from None
        if str(answer["error"]):
            raise RuntimeError(f"LeRobot policy {self.folder}: {answer['error']}")
        return answer

    def _tail(self, n: int = 2000) -> str:
        self._log.seek(0)
        return self._log.read().decode(errors="replace")[-n:]

    def close(self) -> None:
        if getattr(self, "proc", None) is not None and self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()

    def __del__(self):
        self.close()

    # ---------------------------------------------------------------- policy
    def check_spaces(self, cameras, image_size: int, action_space) -> None:
        missing = {k: c for k, c in self.camera_of.items() if k in self.images and c not in cameras}
        if missing:
            raise ValueError(f"{self.folder}: the policy reads {sorted(missing)}, mapped to cameras {sorted(missing.values())}, "
                             f"but the env has {list(cameras)}; declare the mapping in {self.folder}/wfm_sim.json "
                             '({"cameras": {"observation.images.X": "CAMERA"}})')
        for key, (_, h, w) in self.shapes.items():
            if (h, w) != (image_size, image_size):
                raise ValueError(f"{self.folder}: {key} is {h}x{w} pixels, the env's frames {image_size}x{image_size}")
        shape = getattr(action_space, "shape", None)
        if shape is None or len(shape) != 1 or shape[0] != self.action_dim:
            raise ValueError(f"{self.folder}: the policy outputs {self.action_dim} action values; the env's action "
                             f"space is {action_space}")
        self.cameras = list(cameras)
        self.low, self.high = np.asarray(action_space.low, np.float32), np.asarray(action_space.high, np.float32)

    def reset(self, seeds, rows=None, episodes=None) -> None:
        self._ask(op="reset")

    def __call__(self, obs, info=None) -> np.ndarray:
        if isinstance(obs, dict):
            frames = {k: np.asarray(obs[self.camera_of[k]], np.uint8) for k in self.images}
        elif len(self.images) == 1:  # a one-camera env's observation is the frames themselves
            frames = {self.images[0]: np.asarray(obs, np.uint8)}
        else:
            raise ValueError(f"{self.folder}: the policy reads {self.images}; the env gives one camera")
        action = self._ask(op="act", **frames)["action"]
        return action if self.low is None else np.clip(action, self.low, self.high)
