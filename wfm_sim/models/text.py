"""T5 text encoder for prompt conditioning (Cosmos uses T5-XXL, 512 tokens, width 1024+).

Weights load only from a local folder (nothing is downloaded). A text-conditioned model folder
keeps its encoder beside its weights, in ``text_encoder/`` (the encoder's own ``config.json``,
``model.safetensors`` and tokenizer files), so a model and the encoder it was trained with
travel together; a model trained with ``backbone.text_dim = D`` needs an encoder whose
``d_model`` is D. ``TextEncoder.random`` builds a small T5 encoder with a byte-level tokenizer
from a seed: the shipped text-conditioned driving model uses one (frozen; the backbone's
cross-attention learns to read it), and a real T5 from a local folder works the same way.

Dimension legend: :mod:`wfm_sim.dims`.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import torch
from torch import nn

TEXT_FOLDER = "text_encoder"
"""Where a model folder keeps the text encoder it was trained with."""


def copy_text_encoder(src: str | Path, dst: str | Path) -> bool:
    """Copy a text-conditioned model's frozen encoder from model folder ``src`` into ``dst``
    (a copied, fine-tuned or shipped model must travel with it); False for other models."""
    enc = Path(src) / TEXT_FOLDER
    if not enc.is_dir():
        return False
    shutil.copytree(enc, Path(dst) / TEXT_FOLDER)
    return True


def _transformers():
    try:
        import transformers
    except ImportError as e:  # pragma: no cover - transformers is a core dependency
        raise ImportError("text conditioning needs `transformers`: pip install transformers") from e
    return transformers


class TextEncoder(nn.Module):
    """Wraps ``transformers.T5EncoderModel`` and its tokenizer.

    Args:
        model: a ``T5EncoderModel``.
        tokenizer: a matching tokenizer (e.g. ``T5TokenizerFast`` or ``ByT5Tokenizer``).
        max_tokens: prompts are cut to this many tokens.
    """

    def __init__(self, model, tokenizer, max_tokens: int = 64):
        super().__init__()
        self.model, self.tokenizer, self.max_tokens = model.eval(), tokenizer, max_tokens

    @property
    def dim(self) -> int:
        return self.model.config.d_model

    @classmethod
    def from_pretrained(cls, path: str | Path, max_tokens: int = 64) -> "TextEncoder":
        """Load a T5 encoder and tokenizer from a local folder (never from a hub)."""
        path = Path(path)
        if not path.is_dir():
            raise FileNotFoundError(f"T5 encoder folder {path} not found; pass a local folder with a saved T5 model")
        tf = _transformers()
        model = tf.T5EncoderModel.from_pretrained(str(path), local_files_only=True, use_safetensors=True)
        tok = tf.AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        return cls(model, tok, max_tokens)

    @classmethod
    def random(cls, d_model: int = 32, layers: int = 1, seed: int = 0, max_tokens: int = 32) -> "TextEncoder":
        """A tiny randomly initialised T5 encoder with a byte-level tokenizer (tests, demos)."""
        tf = _transformers()
        torch.manual_seed(seed)
        cfg = tf.T5Config(vocab_size=384, d_model=d_model, d_kv=8, d_ff=2 * d_model, num_layers=layers,
                          num_heads=max(1, d_model // 8), decoder_start_token_id=0)
        return cls(tf.T5EncoderModel(cfg), tf.ByT5Tokenizer(), max_tokens)

    def save_pretrained(self, path: str | Path) -> Path:
        """Write the encoder (safetensors) and its tokenizer to folder ``path`` (replaced whole)."""
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        self.model.save_pretrained(str(tmp), safe_serialization=True)
        self.tokenizer.save_pretrained(str(tmp))
        (tmp / "max_tokens.txt").write_text(str(self.max_tokens))
        shutil.rmtree(path, ignore_errors=True)
        tmp.rename(path)
        return path

    @classmethod
    def of_model(cls, folder: str | Path) -> "TextEncoder | None":
        """The text encoder saved in a model folder, or None when it has none."""
        path = Path(folder) / TEXT_FOLDER
        if not path.is_dir():
            return None
        limit = path / "max_tokens.txt"
        return cls.from_pretrained(path, int(limit.read_text()) if limit.is_file() else 64)

    @classmethod
    def named(cls, name: str) -> "TextEncoder":
        """``'tiny'`` (a 2-layer, 64-wide T5 encoder with a byte tokenizer, seed 0) or a local T5 folder."""
        if name == "tiny":
            return cls.random(d_model=64, layers=2, seed=0, max_tokens=32)
        return cls.from_pretrained(name)

    @torch.no_grad()
    def forward(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Encode prompts to ``(b, p, d)`` fp32 embeddings and a ``(b, p)`` bool mask."""
        if isinstance(prompts, str) or not all(isinstance(p, str) for p in prompts):
            raise TypeError("prompts must be a list of strings")
        lengths = [len(ids) for ids in self.tokenizer(list(prompts))["input_ids"]]
        long = [(p, n) for p, n in zip(prompts, lengths) if n > self.max_tokens]
        if long:  # cutting it would condition the model on a prompt nobody wrote
            p, n = long[0]
            raise ValueError(f"prompt {p[:60]!r}{'...' if len(p) > 60 else ''} is {n} tokens; this model's text "
                             f"encoder reads at most {self.max_tokens}: shorten it")
        batch = self.tokenizer(list(prompts), padding=True, truncation=True, max_length=self.max_tokens,
                               return_tensors="pt")
        device = next(self.model.parameters()).device
        ids, mask = batch["input_ids"].to(device), batch["attention_mask"].to(device)
        out = self.model(input_ids=ids, attention_mask=mask).last_hidden_state
        return out.float(), mask.bool()
