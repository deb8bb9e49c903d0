"""Policies by name: what ``--policy`` accepts on every command.

* ``random``: uniform actions within the action space;
* ``road``: :class:`~wfm_sim.policies.RoadCentroidDriver` (pixels, driving rigs);
* ``road-explore``: :class:`~wfm_sim.policies.driving.RoadExplorer`, ``road`` with steering noise
  and random actions held several steps (pixels: real twins and imagination alike);
* ``offroad``: :class:`~wfm_sim.policies.driving.OffRoadExcursion`, a scenario: ``road``, a swerve
  off the road, and the recovery (pixels);
* ``driver``: :class:`~wfm_sim.policies.TrackFollower` with 0.15 steering noise (scripted,
  real CarRacing only);
* ``mixed``: on CarRacing :class:`~wfm_sim.policies.MixedDriver`, the track follower interrupted
  by swerves off the road, random actions, braking and coasting; on Meta-World
  :class:`~wfm_sim.policies.manipulation.MixedManipulation`, the expert interrupted by heavy
  noise, slowed and repeated actions, stillness and random actions (scripted, real twins only);
* ``mixed-v2``: CarRacing's ``mixed`` with two control errors added, driving straight while the
  road bends and steering late (``MixedDriver(control_errors=True)``);
* ``branching``: :class:`~wfm_sim.policies.driving.BranchingDriver`, the track follower
  interrupted by random actions held 4 steps each: actions independent of the state, for models
  that must learn what an action does (scripted, real CarRacing only);
* ``expert``: :class:`~wfm_sim.policies.MetaWorldExpert` for the source's task (scripted, real
  Meta-World only);
* ``const:A0,A1,...``: :class:`~wfm_sim.policies.base.ConstantPolicy`, one action at every step
  (``const:-1,0.5,0`` steers hard left at half gas on CarRacing);
* a ``.npy`` file: an open-loop plan ``(T, A)`` or ``(episodes, T, A)``;
* a folder with ``config.json`` + ``model.safetensors``: a saved :class:`~wfm_sim.policies.ConvPolicy`
  or :class:`~wfm_sim.policies.ActorCritic` (``wfm-sim train policy``);
* ``lerobot:FOLDER``: a pretrained LeRobot policy (ACT, diffusion, ...) served from LeRobot's own
  environment (:class:`~wfm_sim.policies.lerobot_policy.LeRobotPolicy`);
* ``module:callable``: a Python entry point; calling it with no arguments returns a policy;
* the name of a policy shipped in the package (:func:`shipped_policies`), e.g. ``carracing-dyna``,
  the one-camera CarRacing driver trained only in imagination (its card:
  ``wfm_sim/pretrained/policies/carracing-dyna/README.md``).
"""

from __future__ import annotations

import importlib
from pathlib import Path

import numpy as np

from wfm_sim.envs.sources import metaworld_task
from wfm_sim.models.world_model import PRETRAINED_DIR
from wfm_sim.policies.actor_critic import FORMAT, ActorCritic
from wfm_sim.policies.base import ConstantPolicy, ConvPolicy, PlanPolicy, Policy, RandomPolicy, as_policy
from wfm_sim.policies.lerobot_policy import PREFIX as LEROBOT_PREFIX
from wfm_sim.policies.lerobot_policy import LeRobotPolicy
from wfm_sim.policies.driving import (BranchingDriver, MixedDriver, OffRoadExcursion, RoadCentroidDriver, RoadExplorer,
                                      TrackFollower)
from wfm_sim.policies.manipulation import MetaWorldExpert, MixedManipulation

NAMES = ("random", "road", "road-explore", "offroad", "driver", "mixed", "mixed-v2", "branching", "expert", "expert-clean")
SCRIPTED = ("driver", "mixed", "mixed-v2", "branching", "expert", "expert-clean")
"""Names of the scripted policies: they read the real simulator's state, so they never run in imagination."""
SHIPPED_POLICIES = PRETRAINED_DIR / "policies"


def shipped_policies() -> list[str]:
    """Names of the policies shipped inside the package (``wfm_sim/pretrained/policies/<name>``)."""
    if not SHIPPED_POLICIES.is_dir():
        return []
    return sorted(p.name for p in SHIPPED_POLICIES.iterdir() if (p / "config.json").is_file())


def policy_path(name: str) -> Path:
    """``name`` as a path: the folder or file it names, else the shipped policy of that name."""
    path = Path(name)
    if not path.exists() and name in shipped_policies():
        return SHIPPED_POLICIES / name
    return path


def make_policy(name: str, space=None, source: str | None = None, camera: str | None = None):
    """Build the policy ``name`` (see the module docstring) for an env with action space ``space``.

    Args:
        name: a policy name, a ``.npy`` plan, a ConvPolicy folder or ``module:callable``.
        space: the env's single action space (for ``random``).
        source: the recording source (``carracing-4cam``, ``metaworld-push``...) for scripted experts.
        camera: the camera ``road`` reads (default CAM_FRONT).
    """
    if name == "random":
        if space is None:
            raise ValueError("the random policy needs the env's action space")
        return RandomPolicy(space)
    if name == "road":
        return RoadCentroidDriver(camera=camera or "CAM_FRONT")
    if name == "road-explore":
        return RoadExplorer(camera=camera or "CAM_FRONT")
    if name == "offroad":
        return OffRoadExcursion(camera=camera or "CAM_FRONT")
    if name == "driver":
        if source is not None and not source.startswith("carracing"):
            raise ValueError(f"'driver' drives CarRacing; source {source!r} has no track to follow")
        return TrackFollower(noise=0.15)
    if name == "mixed":
        if source is not None and source.startswith("metaworld-"):
            return MixedManipulation(metaworld_task(source))
        if source is not None and not source.startswith("carracing"):
            raise ValueError(f"'mixed' is scripted for CarRacing and Meta-World; source {source!r} is neither")
        return MixedDriver()
    if name == "mixed-v2":
        if source is not None and not source.startswith("carracing"):
            raise ValueError(f"'mixed-v2' is scripted for CarRacing; source {source!r} is not")
        return MixedDriver(control_errors=True)
    if name == "branching":
        if source is not None and not source.startswith("carracing"):
            raise ValueError(f"'branching' is scripted for CarRacing; source {source!r} is not")
        return BranchingDriver()
    if name in ("expert", "expert-clean"):  # clean: no exploration noise (labels for behaviour cloning)
        if source is None or not source.startswith("metaworld-"):
            raise ValueError(f"{name!r} is Meta-World's scripted expert; source {source!r} is not a Meta-World task")

        return MetaWorldExpert(metaworld_task(source), noise=0.0 if name == "expert-clean" else None)
    if name.startswith("const:"):
        return _constant(name, space)
    if name.startswith(LEROBOT_PREFIX):
        return LeRobotPolicy(name[len(LEROBOT_PREFIX):])
    path = policy_path(name)
    if path.suffix == ".npy":
        if not path.is_file():
            raise FileNotFoundError(f"no plan file {path}")
        try:
            plan = np.load(path, allow_pickle=False)
        except (ValueError, OSError, EOFError) as e:  # empty, truncated or not .npy
            raise ValueError(f"plan file {path} is not a readable .npy array ({e}); save one with "
                             "numpy.save(path, actions) of shape (T, A) or (episodes, T, A)") from None
        try:
            return PlanPolicy(plan)
        except ValueError as e:
            raise ValueError(f"plan file {path}: {e}") from None
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"{path} is a folder but not a saved policy (no config.json)")

        text = (path / "config.json").read_text(errors="replace")
        if f'"{FORMAT}"' in text:
            return ActorCritic.from_pretrained(path)
        if '"wfm_sim.SB3Policy"' in text:  # the real-twin PPO baseline (wfm-sim baseline)
            from wfm_sim.rl.real_ppo import SB3PixelPolicy

            return SB3PixelPolicy.from_pretrained(path)
        return ConvPolicy.from_pretrained(path)
    if ":" in name and not path.exists():
        return _entry_point(name)
    raise ValueError(f"unknown policy {name!r}: use one of {list(NAMES)}, a shipped policy {shipped_policies()}, "
                     "a .npy plan, a ConvPolicy folder or module:callable")


def _entry_point(spec: str) -> Policy:
    module, _, attr = spec.partition(":")
    try:
        obj = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as e:
        raise ValueError(f"cannot load policy entry point {spec!r}: {e}") from e
    policy = obj() if isinstance(obj, type) or not hasattr(obj, "reset") else obj
    if not callable(policy):
        raise ValueError(f"policy entry point {spec!r} gave {type(policy).__name__}, which is not callable")
    return as_policy(policy)


def _constant(name: str, space) -> ConstantPolicy:
    """``const:A0,A1,...``, checked against the action space when one is given."""
    try:
        action = np.array([float(v) for v in name[len("const:"):].split(",")], np.float32)
    except ValueError:
        raise ValueError(f"{name!r}: a constant policy is const: and comma-separated numbers, e.g. const:-1,0.5,0") from None
    if space is not None:
        if hasattr(space, "n"):
            raise ValueError(f"{name!r}: constant policies take continuous (Box) actions; this env's are discrete")
        if tuple(action.shape) != tuple(space.shape):
            raise ValueError(f"{name!r} gives {len(action)} action values; this env takes {space.shape[0]}")
        if not (np.all(action >= space.low) and np.all(action <= space.high)):
            raise ValueError(f"{name!r} lies outside the action space [{space.low.tolist()}, {space.high.tolist()}]")
    return ConstantPolicy(action)
