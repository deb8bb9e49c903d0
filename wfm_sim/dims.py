"""The one dimension legend. Every shape comment in wfm_sim uses these letters, and no letter
means two things. A module cites it ("Dimension legend: :mod:`wfm_sim.dims`") instead of
writing its own.

Rows and time
    ``b``  batch rows: samples of a training batch, rows of a rollout, sub-envs of a vector env
    ``r``  the rows one call touches (a subset of ``b``)
    ``i``  episodes
    ``t``  video frames
    ``l``  latent frames (the tokenizer's time steps)
    ``f``  video frames per latent frame (temporal compression: a clip of ``1 + f*m`` frames
           gives ``1 + m`` latent frames; ``f`` actions per step)
    ``s``  steps of a rollout (the horizon)
    ``j``  policies of a set being scored
    ``u``  imagined samples per start state

Space
    ``v``  camera views
    ``H W``  pixel height and width
    ``h w``  token grid height and width
    ``c``  channels (pixels: 3; latents: the tokenizer's code dimension)

Tokens and the transformer
    ``n``  tokens of one latent frame, all views (``v*h*w``)
    ``q``  new positions of one forward chunk
    ``k``  key positions a query may attend
    ``K``  vocabulary (codebook) size
    ``d``  model width
    ``m``  attention heads
    ``g``  key/value heads (GQA)
    ``e``  head dimension
    ``p``  prompt (text) tokens

Actions
    ``a``  action features (a Box action's dimension)
"""

LEGEND = {
    "b": "batch rows", "r": "rows of one call", "i": "episodes", "t": "video frames",
    "l": "latent frames", "f": "video frames per latent frame", "s": "rollout steps", "j": "policies",
    "u": "samples per start", "o": "start states", "x": "branches of a start",
    "v": "camera views", "H": "pixel height", "W": "pixel width", "h": "token grid height",
    "w": "token grid width", "c": "channels", "n": "tokens per latent frame", "q": "new positions",
    "k": "key positions", "K": "vocabulary size", "d": "model width", "m": "attention heads",
    "g": "key/value heads", "e": "head dimension", "p": "prompt tokens", "a": "action features",
}
"""Letter -> meaning, for tools and tests that check shape comments."""
