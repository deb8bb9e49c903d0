"""Scene captions from simulator state, text-conditioned training and prompted generation."""

from __future__ import annotations

import numpy as np
import pytest

from wfm_sim.datasets import EpisodeReader, StoreError
from wfm_sim.envs import ImaginedVectorEnv
from wfm_sim.envs.captions import CAR_CAPTIONS, caption_text, car_caption, road_turn
from wfm_sim.envs.real import RealEnv
from wfm_sim.envs.sources import CarState, get_source
from wfm_sim.models import WorldModel
from wfm_sim.models.text import TextEncoder
from wfm_sim.models.world_model import resolve_pretrained
from wfm_sim.policies.driving import road_mask
from wfm_sim.rollout import record
from wfm_sim.synthetic.generate import GenerateConfig, generate, regenerate
from wfm_sim.training.loop import TrainConfig, train


def _arc_state(turn_left: bool, on_road: bool = True, backwards: bool = False) -> CarState:
    """A car at the start of a circular track driven counter-clockwise (left turns) or clockwise."""
    a = np.linspace(0, 2 * np.pi, 60, endpoint=False)
    track = 100 * np.stack((np.cos(a), np.sin(a)), 1)
    if not turn_left:
        track = track[::-1].copy()
    pos = track[0]
    tangent = track[1] - track[0]
    if backwards:
        tangent = -tangent
    angle = float(np.arctan2(-tangent[0], tangent[1]))  # heading 0 faces +y
    return CarState(pos, angle, np.zeros(2), track, on_road)


def test_captions_read_the_road_ahead_from_state():
    left, right = _arc_state(True), _arc_state(False)
    assert road_turn(left) > 0 > road_turn(right)  # > 0 turns left
    assert CAR_CAPTIONS[car_caption(left)] == "sharp left curve ahead"  # 12 of 60 points of a circle: 72 degrees
    assert CAR_CAPTIONS[car_caption(right)] == "sharp right curve ahead"
    # Driving the same track the other way round turns the other way.
    assert CAR_CAPTIONS[car_caption(_arc_state(True, backwards=True))] == "sharp right curve ahead"
    straight = CarState(np.zeros(2), 0.0, np.zeros(2), np.stack((np.zeros(40), np.arange(40.0) * 7), 1), True)
    assert CAR_CAPTIONS[car_caption(straight)] == "straight road"
    assert CAR_CAPTIONS[car_caption(_arc_state(True, on_road=False))] == "off the road on grass"
    assert caption_text([0, 5]) == ["straight road", "off the road on grass"]
    with pytest.raises(ValueError, match=r"caption ids must lie in \[0, 6\)"):
        caption_text([6])


def test_a_source_without_a_captioner_refuses_captions():
    assert get_source("carracing-front?captions").extras == {"caption": ((), "int8")}
    with pytest.raises(ValueError, match="has no captioner"):
        get_source("pusher").with_captions()


@pytest.fixture(scope="module")
def caption_store(tmp_path_factory):
    path = tmp_path_factory.mktemp("captions") / "cap.zarr"
    record("carracing-front?captions", path, episodes=3, policy="mixed", max_steps=14, size=16, progress=False)
    return path


def test_recorded_captions_are_the_state_captions_of_each_step(caption_store):
    r = EpisodeReader(caption_store)
    assert r.extras == ("caption",)
    ep = r.episode(1)
    assert ep.extras["caption"].dtype == np.int8 and len(ep.extras["caption"]) == len(ep)
    env = RealEnv("carracing-front?captions", 16)  # replay the episode's actions in the twin
    obs, info = env.reset(seed=ep.seed)
    states = []
    for a in ep.action:
        obs, *_, info = env.step(a)
        states.append(car_caption(info["privileged"]))
        assert info["caption"] == states[-1]
    np.testing.assert_array_equal(ep.extras["caption"], states)


def test_text_model_trains_on_captions_and_prompts_change_the_rollout(caption_store, tmp_path, square_store):
    out = tmp_path / "text"
    common = dict(preset="tiny", batch_size=2, eval_every=2, save_every=2, progress=False, num_workers=0)
    with pytest.raises(StoreError, match="no scene captions.*--captions"):
        train(TrainConfig("backbone", str(square_store), str(tmp_path / "bad"), text_encoder="tiny", steps=1, **common))
    logs = train(TrainConfig("backbone", str(caption_store), str(out), text_encoder="tiny", steps=2, **common))
    assert np.isfinite(logs["loss"]) and "val/ce_sequential" in logs
    assert WorldModel.read_config(out).backbone.text_dim == 64 and (out / "text_encoder" / "model.safetensors").is_file()
    env = ImaginedVectorEnv(2, str(out), dataset=str(caption_store), max_episode_steps=4, device="cpu", precision="fp32")
    assert env.text_encoder is not None  # loaded from the model folder

    def roll(prompt):
        _, info = env.reset(seed=1, options={} if prompt is None else {"prompt": prompt})
        frames = [env.step(np.tile([0.0, 0.5, 0.0], (2, 1)).astype(np.float32))[0] for _ in range(3)]
        return np.stack(frames), info

    left, info = roll("sharp left curve ahead")
    assert all(str(c).endswith("| prompt: sharp left curve ahead") for c in info["context"])  # context + prompt
    again, _ = roll("sharp left curve ahead")
    np.testing.assert_array_equal(left, again)
    assert not np.array_equal(left, roll("off the road on grass")[0])  # the text reaches the prediction
    plain, _ = roll(None)
    np.testing.assert_array_equal(plain, roll(None)[0])  # unprompted is deterministic too
    with pytest.raises(ValueError, match="one prompt or 2 prompts"):
        env.reset(seed=0, options={"prompt": ["a", "b", "c"]})
    limit = env.text_encoder.max_tokens  # a prompt past the encoder's reach is refused, not cut
    with pytest.raises(ValueError, match=rf"is \d+ tokens; this model's text encoder reads at most {limit}"):
        env.reset(seed=0, options={"prompt": "sharp left curve ahead " * 10})


def test_generate_with_a_prompt_records_it_and_regenerates(caption_store, tmp_path):
    out = tmp_path / "text"
    train(TrainConfig("backbone", str(caption_store), str(out), preset="tiny", text_encoder="tiny", steps=1,
                      batch_size=2, eval_every=100, progress=False, num_workers=0))
    cfg = GenerateConfig(model=str(out), episodes=2, horizon=3, starts=str(caption_store), envs=2, policy="random",
                         prompt="left curve ahead")
    assert generate(cfg, tmp_path / "g.zarr", progress=False)["episodes"] == 2
    r = EpisodeReader(tmp_path / "g.zarr")
    assert r.attrs["provenance"]["settings"]["prompt"] == "left curve ahead"
    assert (r.episode(0).extras["start_context"] >= 0).all()  # the real start context is still named
    again = regenerate(tmp_path / "g.zarr", 1)
    np.testing.assert_array_equal(again.obs["CAM_FRONT"], r.episode(1).obs["CAM_FRONT"])
    other = generate(GenerateConfig(**{**vars(cfg), "prompt": "off the road on grass"}), tmp_path / "h.zarr",
                     progress=False)
    assert other["episodes"] == 2
    assert not np.array_equal(EpisodeReader(tmp_path / "h.zarr").episode(1).obs["CAM_FRONT"],
                              r.episode(1).obs["CAM_FRONT"])


@pytest.mark.skipif("driving_text" not in __import__("wfm_sim.models", fromlist=["x"]).shipped_models(),
                    reason="the text-conditioned driving model is not shipped in this checkout")
def test_shipped_text_model_puts_the_car_on_grass_when_asked():
    """The shipped model's prompt decides the scene when it starts from text alone (the README's
    measure: the road share of the lower half)."""
    folder = resolve_pretrained("driving_text")
    assert ImaginedVectorEnv(1, "driving_text", device="cpu").text_encoder is not None  # loaded with the model
    model = WorldModel.from_pretrained(folder, device="cpu", precision="fp32")  # no contexts: start from text
    env = ImaginedVectorEnv(4, model, text_encoder=TextEncoder.of_model(folder), max_episode_steps=8, device="cpu")

    def road(prompt):
        obs, _ = env.reset(seed=0, options={"prompt": prompt})
        frames = [env.step(np.tile([0.0, 0.3, 0.0], (4, 1)).astype(np.float32))[0] for _ in range(3)]
        return road_mask(np.stack([obs] + frames))[..., 32:, :].mean()

    assert road("straight road") > 0.8 and road("off the road on grass") < 0.2
