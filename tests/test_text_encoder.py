"""The offline MiniLM text encoder: no network, deterministic, cached, meaningful similarities."""

from __future__ import annotations

import socket

import numpy as np
import pytest
import torch

import gen3d.models.text as text
from gen3d.errors import UserError
from gen3d.models.text import EMBED_DIM, MAX_TOKENS, TextEmbedding, TextEncoder


def _refuse_network(*args, **kwargs):
    raise AssertionError("the text encoder tried to reach the network")


@pytest.fixture(scope="module")
def encoder():
    """One loaded model for the module, loaded with every socket connection refused."""
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("HF_HUB_OFFLINE", raising=False)
        patch.delenv("TRANSFORMERS_OFFLINE", raising=False)
        patch.setattr(socket.socket, "connect", _refuse_network)
        patch.setattr(socket, "create_connection", _refuse_network)
        enc = TextEncoder()
        enc.encode(["a red cube"])
        yield enc


def _cos(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(a @ b)


def test_shapes_mask_and_pooled_match_sentence_transformers(encoder):
    prompts = ["a red cube", "a small blue cone with a yellow sphere on top", ""]
    emb = encoder.encode(prompts)
    assert emb.tokens.shape == (3, MAX_TOKENS, EMBED_DIM) and emb.tokens.dtype == torch.float32
    assert emb.mask.dtype == torch.bool and emb.pooled.shape == (3, EMBED_DIM)
    lengths = emb.mask.sum(1).tolist()
    assert lengths == [5, 12, 2]  # [CLS] words [SEP]; "" is [CLS] [SEP]
    assert torch.all(emb.mask[:, :2]) and not emb.mask[0, 5:].any()
    assert emb.tokens[0, 5:].abs().sum() == 0 and emb.tokens[0, :5].abs().sum() > 0
    torch.testing.assert_close(emb.pooled.norm(dim=1), torch.ones(3))
    reference = encoder.model.encode(prompts, normalize_embeddings=True, convert_to_tensor=True)
    torch.testing.assert_close(emb.pooled, reference.cpu(), atol=1e-5, rtol=0)


def test_same_prompt_same_bits_whatever_else_is_encoded(encoder):
    first = encoder.encode(["a purple cone"])
    fresh = TextEncoder(model=encoder.model)  # shares the weights, not the cache
    mixed = fresh.encode(["a green capsule", "a purple cone", "a pink cube"])
    assert mixed.mask.sum(1).tolist() == [5, 5, 5]  # one token count: encoded in one batch
    assert torch.equal(mixed.tokens[1], first.tokens[0]) and torch.equal(mixed.pooled[1], first.pooled[0])
    assert torch.equal(encoder.encode(["a purple cone"]).tokens, first.tokens)


def test_distinct_captions_and_similarity_order(encoder):
    emb = encoder.encode(["a red cube", "a cube that is red", "a blue torus", "a red sphere"])
    p = emb.pooled
    assert len({tuple(row.tolist()) for row in p}) == 4
    assert _cos(p[0], p[1]) > _cos(p[0], p[2]) + 0.2
    assert _cos(p[0], p[3]) > _cos(p[0], p[2])


def test_empty_embedding_and_cat(encoder):
    empty = encoder.empty(2)
    assert torch.equal(empty.tokens[0], empty.tokens[1]) and empty.mask.sum().item() == 4
    both = TextEmbedding.cat([encoder.encode(["a red cube"]), empty])
    assert len(both) == 3 and torch.equal(both.pooled[1], encoder.encode([""]).pooled[0])


def test_disk_cache_serves_prompts_without_loading_the_model(encoder, tmp_path, monkeypatch):
    prompts = ["a large orange cone", "a pink cube with a green sphere on top", ""]
    expected = encoder.encode(prompts)
    encoder.save_cache(tmp_path / "text.npz")
    monkeypatch.setattr(text, "_load_model", _refuse_network)
    cached = TextEncoder(cache_file=tmp_path / "text.npz").encode(prompts)
    for key in ("tokens", "mask", "pooled"):
        assert torch.equal(getattr(cached, key), getattr(expected, key))
    with pytest.raises(AssertionError, match="network"):
        TextEncoder(cache_file=tmp_path / "text.npz").encode(["a prompt never cached"])


def test_bad_cache_file_is_a_user_error(tmp_path):
    bad = tmp_path / "bad.npz"
    np.savez(bad, prompts=np.array(["x"]))
    with pytest.raises(UserError, match="bad.npz"):
        TextEncoder(cache_file=bad)


def test_lru_keeps_the_most_recently_used_prompts(encoder, tmp_path):
    small = TextEncoder(max_cached=2, model=encoder.model)
    small.encode(["one", "two"])
    small.encode(["one"])
    small.encode(["three"])
    small.save_cache(tmp_path / "lru.npz")
    assert np.load(tmp_path / "lru.npz")["prompts"].tolist() == ["one", "three"]


def test_precomputed_cache_captions_need_no_model(encoder, tmp_path, monkeypatch):
    from gen3d.shapeworld.dataset import ShapeWorldDataset, build_cache
    from gen3d.training.data import precompute_text_embeddings

    build_cache(tmp_path / "c", n_scenes=2, views_per_scene=1, size=8, captions_per_scene=1)
    path = precompute_text_embeddings(tmp_path / "c", TextEncoder(model=encoder.model))
    captions = ShapeWorldDataset(tmp_path / "c", views=1).unique_captions()
    monkeypatch.setattr(text, "_load_model", _refuse_network)
    cached = TextEncoder(cache_file=path).encode(captions)
    assert torch.equal(cached.pooled, encoder.encode(captions).pooled)
