"""Serve a pretrained LeRobot policy to wfm_sim over a pipe, from LeRobot's own environment.

LeRobot and wfm_sim cannot share one Python environment (LeRobot pins another torch and
huggingface-hub), so :class:`wfm_sim.policies.lerobot_policy.LeRobotPolicy` starts this file with the
interpreter of an environment that has LeRobot, and talks to it through stdin / stdout. This
file imports nothing from wfm_sim. It loads the policy as ``lerobot-eval`` does (the policy class
of ``config.json``'s type, ``from_pretrained``, and the saved pre- and post-processors with their
normalisation statistics) and runs ``select_action`` under ``torch.inference_mode``.

Protocol: each message is an 8-byte little-endian length and an ``.npz`` archive (no pickles:
both sides load with ``allow_pickle=False``). Requests carry ``op``:

* ``info``: the answer holds ``type``, ``images`` (the visual input keys), ``image_shapes``
  (``(k, 3)``: C, H, W), ``state_dim`` (0 without a state input) and ``action_dim``;
* ``reset``: clears the policy's queues (action chunks, observation history);
* ``act``: the request holds each visual key as ``(b, H, W, 3)`` uint8 and, with a state input,
  ``observation.state`` ``(b, S)`` float32; the answer holds ``action`` ``(b, A)`` float32.

Every answer holds ``error`` (a string, empty when the request succeeded).

    python policies/lerobot_serve.py POLICY_FOLDER
"""

import io
import os
import struct
import sys
import traceback

import numpy as np

# Run as a script, this file's folder comes first on sys.path; nothing there may stand in for lerobot.
sys.path = [p for p in sys.path if os.path.realpath(p or ".") != os.path.dirname(os.path.realpath(__file__))]

def _read(stream) -> dict | None:
    head = stream.read(8)
    if len(head) < 8:
        return None
    (n,) = struct.unpack("<Q", head)
    with np.load(io.BytesIO(stream.read(n)), allow_pickle=False) as f:
        return {k: f[k] for k in f.files}


def _writer(stream):
    def write(**arrays) -> None:
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        data = buf.getvalue()
        stream.write(struct.pack("<Q", len(data)) + data)
        stream.flush()

    return write


def _load(folder: str):
    from lerobot.configs.policies import PreTrainedConfig
    from lerobot.policies.factory import get_policy_class, make_pre_post_processors

    cfg = PreTrainedConfig.from_pretrained(folder)
    cfg.device = "cpu"
    policy = get_policy_class(cfg.type).from_pretrained(folder, config=cfg)
    policy.eval()
    pre, post = make_pre_post_processors(cfg, pretrained_path=folder,
                                         preprocessor_overrides={"device_processor": {"device": "cpu"}})
    return cfg, policy, pre, post


def main() -> None:
    import torch

    _write = _writer(os.fdopen(os.dup(1), "wb"))
    sys.stdout = sys.stderr  # LeRobot's prints and logs must never reach the protocol stream
    requests = sys.stdin.buffer
    cfg, policy, pre, post = _load(sys.argv[1])
    images = list(cfg.image_features)
    state = cfg.robot_state_feature
    for msg in iter(lambda: _read(requests), None):
        op = str(msg.get("op", ""))
        try:
            if op == "info":
                _write(error="", type=cfg.type, images=np.array(images, dtype=str),
                       image_shapes=np.array([cfg.image_features[k].shape for k in images], np.int64).reshape(-1, 3),
                       state_dim=np.int64(state.shape[0] if state else 0),
                       action_dim=np.int64(cfg.output_features["action"].shape[0]))
            elif op == "reset":
                policy.reset()
                _write(error="")
            elif op == "act":
                batch = {k: torch.from_numpy(msg[k]).permute(0, 3, 1, 2).float().div(255.0) for k in images}
                b = len(next(iter(batch.values())))
                if state:
                    batch["observation.state"] = torch.from_numpy(msg["observation.state"]).float()
                batch = pre(batch)
                # ACT reads observation.state's device even without a state input (lerobot 0.4.4).
                batch.setdefault("observation.state", torch.zeros(b, 0))
                with torch.inference_mode():
                    action = post(policy.select_action(batch))
                _write(error="", action=action.detach().cpu().numpy().astype(np.float32).reshape(b, -1))
            else:
                _write(error=f"unknown op {op!r} (info, reset, act)")
        except Exception as e:  # noqa: BLE001 - one bad request answers with its error; the server keeps serving
            traceback.print_exc()
            _write(error=f"{type(e).__name__}: {e}")


if __name__ == "__main__":
    main()
