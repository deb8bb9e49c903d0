"""The project's metrics against the libraries users trust, on fixed inputs: PSNR and SSIM against
torchmetrics, Pearson and Spearman against scipy.stats, MMRV against SIMPLER's definition."""

import numpy as np
import pytest
import torch

from wfm_sim.evaluation.agreement import mmrv, pearson, spearman
from wfm_sim.metrics import psnr, ssim

tm = pytest.importorskip("torchmetrics.functional.image")
stats = pytest.importorskip("scipy.stats")


def _frames(seed: int, shape=(3, 32, 48, 3)):
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, shape, dtype=np.uint8)
    noisy = np.clip(base.astype(int) + rng.integers(-40, 41, shape), 0, 255).astype(np.uint8)
    return torch.from_numpy(base), torch.from_numpy(noisy)


def test_psnr_and_ssim_match_torchmetrics():
    for seed in range(3):
        a, b = _frames(seed)
        x, y = (t.permute(0, 3, 1, 2).double() / 255 for t in (a, b))
        want_psnr = tm.peak_signal_noise_ratio(y, x, data_range=1.0, reduction="none", dim=(1, 2, 3))
        want_ssim = tm.structural_similarity_index_measure(y, x, data_range=1.0, reduction="none")
        torch.testing.assert_close(psnr(b, a).double(), want_psnr, atol=1e-5, rtol=0)
        torch.testing.assert_close(ssim(b, a).double(), want_ssim, atol=1e-5, rtol=0)


def test_pearson_and_spearman_match_scipy_and_mmrv_matches_simpler():
    rng = np.random.default_rng(0)
    imagined, real = rng.normal(size=12), rng.normal(size=12)
    real[3] = real[7]  # a tie: Spearman ranks ties by their mean rank, as scipy does
    assert pearson(imagined, real) == pytest.approx(stats.pearsonr(imagined, real).statistic, abs=1e-10)
    assert spearman(imagined, real) == pytest.approx(stats.spearmanr(imagined, real).statistic, abs=1e-10)

    def simpler_mmrv(sim, real):  # SIMPLER (Li et al. 2024), eq. 1, written from the paper
        n = len(sim)
        return sum(max(abs(real[i] - real[j]) * ((sim[i] < sim[j]) != (real[i] < real[j])) for j in range(n))
                   for i in range(n)) / n

    sim, rl = [0.1, 0.5, 0.3, 0.9, 0.2], [0.0, 0.6, 0.7, 0.8, 0.1]
    assert mmrv(sim, rl) == pytest.approx(simpler_mmrv(sim, rl))
