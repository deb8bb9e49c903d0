"""Stable-Baselines3 on the batched imagined env: its ``VecEnv`` interface over one model call per step.

``gym.make`` gives SB3 one imagined env at a time (``DummyVecEnv`` steps them one by one); this
adapter hands it the whole :class:`~wfm_sim.envs.ImaginedVectorEnv`, so ``n_envs`` rollouts
cost one batched world-model step::

    from stable_baselines3 import PPO
    from wfm_sim.rl.sb3 import SB3VecEnv

    venv = SB3VecEnv(ImaginedVectorEnv(16, "driving", obs_mode="tokens", max_episode_steps=15, autoreset_mode="same_step"))
    PPO("MlpPolicy", venv, n_steps=64).learn(10_000)

SB3 semantics: an episode that ends is reset within the same ``step`` (the env runs with
``same_step`` autoreset), its last observation is in ``infos[i]["terminal_observation"]`` and
a time-limit end sets ``infos[i]["TimeLimit.truncated"]``.
"""

from __future__ import annotations

import numpy as np

try:
    from stable_baselines3.common.vec_env.base_vec_env import VecEnv
except ImportError as e:  # pragma: no cover - the [rl] extra is optional
    raise ImportError("the Stable-Baselines3 adapter needs stable-baselines3: pip install 'wfm-sim[rl]'") from e


def _row(obs, i: int):
    return {k: np.asarray(v[i]) for k, v in obs.items()} if isinstance(obs, dict) else np.asarray(obs[i])


class SB3VecEnv(VecEnv):
    """SB3's ``VecEnv`` over an :class:`~wfm_sim.envs.ImaginedVectorEnv` (made with ``same_step``
    autoreset here if it was not)."""

    def __init__(self, env):
        from gymnasium.vector import AutoresetMode

        if env.metadata.get("autoreset_mode") != AutoresetMode.SAME_STEP:
            raise ValueError("SB3VecEnv needs an ImaginedVectorEnv made with autoreset_mode='same_step' "
                             "(SB3 resets finished episodes within the step)")
        self.env = env
        super().__init__(env.num_envs, env.single_observation_space, env.single_action_space)
        self._actions = None
        self._seeds: list[int] | None = None

    def reset(self):
        seeds = self._seeds
        self._seeds = None
        obs, _ = self.env.reset(seed=seeds)
        return self._numpy(obs)

    def step_async(self, actions) -> None:
        self._actions = np.asarray(actions)

    def step_wait(self):
        obs, reward, term, trunc, info = self.env.step(self._actions)
        obs = self._numpy(obs)
        done = np.asarray(term) | np.asarray(trunc)
        infos: list[dict] = [{} for _ in range(self.num_envs)]
        final = info.get("final_obs")
        for i in np.flatnonzero(done):
            last = None if final is None else final[i]  # the row's own observation (dict or array)
            infos[i]["terminal_observation"] = self._numpy(last) if last is not None else _row(obs, i)
            infos[i]["TimeLimit.truncated"] = bool(trunc[i]) and not bool(term[i])
        return obs, np.asarray(reward, np.float32), done, infos

    def _numpy(self, obs):
        if obs is None:
            return None
        if isinstance(obs, dict):
            return {k: self._numpy(v) for k, v in obs.items()}
        return obs.cpu().numpy() if hasattr(obs, "cpu") else np.asarray(obs)

    def seed(self, seed: int | None = None):
        self._seeds = None if seed is None else [seed + i for i in range(self.num_envs)]
        return self._seeds

    def close(self) -> None:
        self.env.close()

    def get_attr(self, attr_name, indices=None):
        return [getattr(self.env, attr_name) for _ in self._indices(indices)]

    def set_attr(self, attr_name, value, indices=None) -> None:
        raise AttributeError("the imagined env's attributes are fixed at construction")

    def env_method(self, method_name, *args, indices=None, **kwargs):
        raise AttributeError(f"the imagined vector env has no per-env methods ({method_name!r})")

    def env_is_wrapped(self, wrapper_class, indices=None):
        return [False for _ in self._indices(indices)]

    def get_images(self):
        frame = self.env.render()
        return [frame] if frame is not None else []

    def _indices(self, indices):
        if indices is None:
            return range(self.num_envs)
        return [indices] if isinstance(indices, int) else indices
