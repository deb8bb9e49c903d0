"""The one place environment ids are registered (on ``import wfm_sim``).

Imagined ids play a world model; each has a real twin (``Real...``) that plays the simulator the
model learned, with equal observation and action spaces.
"""

from __future__ import annotations

IMAGINED = "wfm_sim.envs.imagined"
IMAGINED_STEPS = 200  # the registered episode limit of imagined ids (override with max_episode_steps=)
REAL = "wfm_sim.envs.real:RealEnv"

ENV_IDS = {
    "wfm_sim/Driving-v0": {"model": "driving"},
    "wfm_sim/Manipulation-v0": {"model": "manipulation"},
    "wfm_sim/WorldModel-v0": {},  # pass model=NAME_OR_FOLDER to gym.make
}
# Real twin id -> (source, recorded episode length): the twin of ENV_IDS' shipped models.
REAL_IDS = {
    "wfm_sim/RealDriving-v0": ("carracing-4cam", 250),
    "wfm_sim/RealManipulation-v0": ("metaworld-push", 50),
    "wfm_sim/Real-v0": (None, None),  # pass source=NAME to gym.make
}
TWINS = {"wfm_sim/Driving-v0": "wfm_sim/RealDriving-v0", "wfm_sim/Manipulation-v0": "wfm_sim/RealManipulation-v0"}


def register_envs() -> None:
    import gymnasium as gym

    for env_id, kwargs in ENV_IDS.items():
        if env_id not in gym.registry:
            # gym.make turns max_episode_steps into a TimeLimit (the single env then has no limit
            # of its own); make_vec passes it to the vector env. Either way it is the limit.
            gym.register(env_id, entry_point=f"{IMAGINED}:ImaginedEnv", vector_entry_point=f"{IMAGINED}:ImaginedVectorEnv",
                         kwargs=dict(kwargs), max_episode_steps=IMAGINED_STEPS)
    for env_id, (source, steps) in REAL_IDS.items():
        if env_id not in gym.registry:
            gym.register(env_id, entry_point=REAL, kwargs={} if source is None else {"source": source},
                         max_episode_steps=steps)
