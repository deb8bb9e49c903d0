"""Manipulation policies: Meta-World's scripted experts as a :class:`ScriptedPolicy`."""

from __future__ import annotations

import numpy as np

from wfm_sim.policies.base import ScriptedPolicy


class MetaWorldExpert(ScriptedPolicy):
    """Meta-World's scripted expert for ``task`` plus Gaussian noise whose scale is drawn per
    episode in ``[0, max_noise]``: from clean demonstrations to heavy exploration, so the next
    frame depends on the action taken and not only on the motion already visible.

    Reads the arm's state vector (``info["privileged"]``, an
    :class:`~wfm_sim.envs.sources.ArmState`), so it runs only in a real twin.
    """

    def __init__(self, task: str = "push-v3", max_noise: float = 0.6, noise: float | None = None):
        from wfm_sim.envs.sources import require

        require("metaworld")
        from metaworld.policies import ENV_POLICY_MAP

        if task not in ENV_POLICY_MAP:
            raise ValueError(f"Meta-World has no scripted expert for {task!r}")
        super().__init__()
        self.task, self.max_noise, self.fixed_noise = task, max_noise, noise
        self._expert = ENV_POLICY_MAP[task]()
        self._noise: dict[int, float] = {}

    def reset(self, seeds, rows=None, episodes=None) -> None:
        super().reset(seeds, rows)
        for r in self._rows(seeds, rows):
            self._noise[r] = self.fixed_noise if self.fixed_noise is not None else self._rngs[r].uniform(0, self.max_noise)

    def act(self, row: int, state) -> np.ndarray:
        a = self._expert.get_action(state.state) + self.rng(row).normal(0, self._noise[row], 4)
        return np.clip(a, -1, 1).astype(np.float32)
