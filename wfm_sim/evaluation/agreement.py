"""Does imagination rank policies the way reality does? Agreement between two score vectors.

Each function takes one score per policy in imagination (``imagined``) and in reality
(``real``), in the same policy order.

* Pearson r: linear agreement of the scores.
* Spearman rho: Pearson r of the ranks (ties share their average rank).
* MMRV (mean maximum rank violation, SIMPLER): for each policy i, the largest real-score gap
  ``|real_i - real_j|`` over the policies j that imagination orders differently from reality
  (a tie on one side and not the other counts as a violation); the mean over i. Lower is
  better; 0 means imagination never mis-orders two policies.
"""

from __future__ import annotations

import math

import numpy as np


def _pair(imagined, real) -> tuple[np.ndarray, np.ndarray]:
    x, y = np.asarray(imagined, np.float64), np.asarray(real, np.float64)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"need two score vectors of one length, got {x.shape} and {y.shape}")
    if len(x) < 2:
        raise ValueError("agreement needs at least 2 policies")
    return x, y


def pearson(imagined, real) -> float:
    """Pearson correlation; NaN when either side is constant (no ordering to agree with)."""
    x, y = _pair(imagined, real)
    dx, dy = x - x.mean(), y - y.mean()
    den = math.sqrt(float((dx**2).sum() * (dy**2).sum()))
    return float((dx * dy).sum() / den) if den > 0 else float("nan")


def ranks(v) -> np.ndarray:
    """Ranks from 1, ties sharing their average rank."""
    v = np.asarray(v, np.float64)
    order = np.argsort(v, kind="stable")
    r = np.empty(len(v))
    r[order] = np.arange(1, len(v) + 1)
    for value in np.unique(v):
        tied = v == value
        r[tied] = r[tied].mean()
    return r


def spearman(imagined, real) -> float:
    x, y = _pair(imagined, real)
    return pearson(ranks(x), ranks(y))


def mmrv(imagined, real) -> float:
    """Mean maximum rank violation (lower is better), in the units of the real scores."""
    x, y = _pair(imagined, real)
    worst = []
    for i in range(len(x)):
        violated = (x[i] > x) != (y[i] > y)
        worst.append(float(np.abs(y[i] - y)[violated].max()) if violated.any() else 0.0)
    return float(np.mean(worst))


def mean_ci(values, z: float = 1.96) -> tuple[float, float]:
    """Mean and the half-width of its normal-approximation 95% confidence interval."""
    v = np.asarray(values, np.float64)
    if len(v) < 2:
        return float(v.mean()) if len(v) else float("nan"), float("nan")
    return float(v.mean()), float(z * v.std(ddof=1) / math.sqrt(len(v)))


def agreement(imagined, real) -> dict[str, float]:
    """Pearson, Spearman, MMRV and the mean imagined-minus-real gap."""
    x, y = _pair(imagined, real)
    return {"pearson": pearson(x, y), "spearman": spearman(x, y), "mmrv": mmrv(x, y),
            "mean_gap": float((x - y).mean())}
