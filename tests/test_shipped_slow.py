"""The shipped models against their real twins, on episodes recorded now (``pytest -m slow``)."""

import numpy as np
import pytest

from wfm_sim.models import shipped_models

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif("manipulation" not in shipped_models(), reason="no shipped manipulation model")]


def test_shipped_manipulation_model_beats_repeat_last_on_fresh_real_episodes(tmp_path):
    pytest.importorskip("metaworld")
    from wfm_sim.evaluation.fidelity import EvalConfig, evaluate
    from wfm_sim.models import WorldModel
    from wfm_sim.rollout import record

    store = tmp_path / "fresh.zarr"
    record("metaworld-push", store, episodes=4, max_steps=20, seed=50_000, progress=False)  # seeds never trained on
    model = WorldModel.from_pretrained("manipulation", device="cpu", precision="fp32")
    report, _ = evaluate(model, str(store), EvalConfig(horizon=6, windows=16, modes=("parallel",),
                                                        decoders=("diffusion",)))
    model_psnr = np.asarray(report["results"]["parallel/diffusion"]["psnr_mean"])
    repeat = np.asarray(report["results"]["baseline/repeat_last"]["psnr_mean"])
    assert (model_psnr[2:] > repeat[2:]).all(), (model_psnr, repeat)
    assert report["controllability_delta_psnr"]["parallel/diffusion"] > 0
