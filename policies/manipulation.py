"""Manipulation policies: Meta-World's scripted experts as a :class:`ScriptedPolicy`."""

from __future__ import annotations

import numpy as np

from wfm_sim.envs.sources import require
from wfm_sim.policies.base import ScriptedPolicy, SegmentSchedule


class MetaWorldExpert(ScriptedPolicy):
    """Meta-World's scripted expert for ``task`` plus Gaussian noise whose scale is drawn per
    episode in ``[0, max_noise]``: from clean demonstrations to heavy exploration, so the next
    frame depends on the action taken and not only on the motion already visible.

    Reads the arm's state vector (``info["privileged"]``, an
    :class:`~wfm_sim.envs.sources.ArmState`), so it runs only in a real twin.
    """

    def __init__(self, task: str = "push-v3", max_noise: float = 0.6, noise: float | None = None):
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


class MixedManipulation(MetaWorldExpert):
    """Manipulation data that teaches what actions do: the scripted expert, interrupted.

    Each episode draws its own schedule of segments from its seed: the expert with little noise
    (``expert``), with heavy noise (``noisy``, scale 0.6-1.5), at a fraction of its speed
    (``scaled``, actions times 0.2-0.7), holding each action for two steps (``repeat``), still
    (``hold``, zero action) and uniformly random (``random``). Recorded with the plain expert, the
    next frame is nearly decided by the frames before it, so a model learns the expert's typical
    motion and not what its actions do; in these episodes the same scene is followed by very
    different motions depending on the action, and pushes that go wrong are common.

    Args:
        task: Meta-World task whose expert is interrupted.
        horizon: steps a schedule covers (the source's episode length).
    """

    MODES = ("expert", "noisy", "scaled", "repeat", "hold", "random")
    WEIGHTS = (0.35, 0.20, 0.15, 0.10, 0.10, 0.10)

    stream = 13  # independent of the expert's own noise draws

    def __init__(self, task: str = "push-v3", horizon: int = 50):
        super().__init__(task, max_noise=0.3)
        self.segments = SegmentSchedule(self.MODES, self.WEIGHTS, horizon)
        self._last: dict[int, np.ndarray] = {}

    def reset(self, seeds, rows=None, episodes=None) -> None:
        super().reset(seeds, rows)
        for r in self._rows(seeds, rows):
            rng = self._rngs[r]

            def segment(mode, rng=rng):  # 5-20 steps; the noise scale or speed fraction
                length = int(rng.integers(5, 21))
                return length, float({"noisy": rng.uniform(0.6, 1.5), "scaled": rng.uniform(0.2, 0.7)}.get(mode, 0.0))

            first = "expert" if rng.uniform() < 0.5 else str(rng.choice(self.MODES, p=self.WEIGHTS))
            self.segments.draw(r, rng, first, segment)
            self._last[r] = np.zeros(4, np.float32)

    def act(self, row: int, state) -> np.ndarray:
        rng = self.rng(row)
        t, mode, scale = self.segments.next(row)
        expert = np.asarray(self._expert.get_action(state.state), np.float32)
        if mode == "expert":
            a = expert + rng.normal(0, self._noise[row], 4)
        elif mode == "noisy":
            a = expert + rng.normal(0, scale, 4)
        elif mode == "scaled":
            a = expert * scale
        elif mode == "repeat":
            a = self._last[row] if t % 2 else expert
        elif mode == "hold":
            a = np.zeros(4, np.float32)
        else:
            a = rng.uniform(-1, 1, 4)
        a = np.clip(a, -1, 1).astype(np.float32)
        self._last[row] = a
        return a
