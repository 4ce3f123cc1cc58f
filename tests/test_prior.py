"""The bundled shapeworld-mv prior: interface shapes, observed views, folder round trips, shipped weights."""

from __future__ import annotations

import pytest
import torch

from gen3d.errors import UserError
from gen3d.models.autoencoder import AEConfig, build_autoencoder
from gen3d.models.multiview import MultiViewDenoiser, MVConfig
from gen3d.models.prior import Observed, load_prior
from gen3d.models.shapeworld_prior import (
    ASSETS,
    ShapeWorldPrior,
    export_prior,
    load,
    plucker_maps,
)
from gen3d.models.text import TextEncoder
from gen3d.shapeworld.scenes import eval_cameras

TINY_MV = MVConfig(channels=(16, 32, 32), heads=2, emb_dim=32, groups=4)


@pytest.fixture(scope="module")
def text() -> TextEncoder:
    return TextEncoder()


@pytest.fixture(scope="module")
def tiny(text) -> ShapeWorldPrior:
    """A random-init prior whose zero-initialised output layers are randomised, so every input matters."""
    torch.manual_seed(0)
    ae = build_autoencoder(AEConfig(block_out_channels=(8, 16, 16), norm_num_groups=4))
    net = MultiViewDenoiser(TINY_MV)
    with torch.no_grad():
        for p in net.parameters():
            if not p.any():
                p.normal_(0, 0.05)
    return ShapeWorldPrior(ae, net, text)


def test_shapes_of_encode_decode_condition_sample(tiny):
    cams = eval_cameras(64)[[0, 2, 4, 6]]
    rgba = torch.rand(4, 4, 64, 64)
    latents = tiny.encode(rgba)
    assert latents.shape == (4, 4, 16, 16)
    decoded = tiny.decode(latents)
    assert decoded.shape == (4, 4, 64, 64) and 0 <= float(decoded.min()) and float(decoded.max()) <= 1
    cond, uncond = tiny.condition("a red cube", cams)
    assert cond["views"] == 4 and cond["plucker"].shape == (4, 6, 16, 16)
    assert cond["text_tokens"].shape == (4, 24, 384) and cond["obs_latents"].shape == (4, 0, 4, 16, 16)
    assert not torch.equal(cond["text_pooled"], uncond["text_pooled"])
    out = tiny.sample("a red cube", cams, steps=2, generator=torch.Generator().manual_seed(0))
    assert out.shape == (4, 4, 64, 64)
    again = tiny.sample("a red cube", cams, steps=2, generator=torch.Generator().manual_seed(0))
    assert torch.equal(out, again)  # seeded: bit-identical


def test_observed_views_enter_with_mask_and_change_the_output(tiny):
    cams = eval_cameras(64)
    observed = Observed(torch.rand(2, 4, 64, 64), cams[[0, 4]])
    cond, uncond = tiny.condition("a blue torus", cams[[1, 2, 3, 5]], observed)
    assert cond["obs_latents"].shape == (4, 2, 4, 16, 16)
    assert torch.equal(cond["obs_mask"], torch.ones(4, 2)) and torch.equal(uncond["obs_mask"], torch.zeros(4, 2))
    assert torch.allclose(cond["obs_plucker"][0], plucker_maps(cams[[0, 4]]))
    without = tiny.sample("a blue torus", cams[[1, 2, 3, 5]], steps=2, generator=torch.Generator().manual_seed(1))
    with_obs = tiny.sample("a blue torus", cams[[1, 2, 3, 5]], observed, steps=2, generator=torch.Generator().manual_seed(1))
    assert (with_obs - without).abs().mean() > 1e-4
    moved = Observed(observed.images, cams[[1, 5]])  # same images, other cameras: the pose matters
    with_moved = tiny.sample("a blue torus", cams[[1, 2, 3, 5]], moved, steps=2, generator=torch.Generator().manual_seed(1))
    assert (with_moved - with_obs).abs().mean() > 1e-5
    with pytest.raises(UserError, match="at most 3 observed"):
        tiny.condition("x", cams[:4], Observed(torch.rand(4, 4, 64, 64), cams[:4]))


def test_set_sizes_and_long_orbits(tiny):
    assert tiny.set_size(8) == 8 and tiny.set_size(12) == 4
    with pytest.raises(UserError, match="got 9 views"):
        tiny.set_size(9)
    from gen3d.cameras import turntable

    out = tiny.sample("a cone", turntable(10, 15.0, 2.5, 40.0, 64, 64), steps=1, generator=torch.Generator().manual_seed(0))
    assert out.shape == (10, 4, 64, 64)  # 8 views, then 2 conditioned on 3 earlier outputs


def test_plucker_maps_are_world_space():
    cams = eval_cameras(64)
    maps = plucker_maps(cams)
    assert maps.shape == (8, 6, 16, 16)
    # unit directions; opposite cameras see (near) opposite central ray directions
    assert torch.allclose(maps[:, :3].norm(dim=1), torch.ones(8, 16, 16), atol=1e-5)
    centre = maps[:, :3, 7:9, 7:9].mean((2, 3))
    assert float((centre[0] * centre[4]).sum()) < -0.8


def test_folder_round_trip_and_sha256_check(tiny, tmp_path, text):
    folder = tmp_path / "prior"
    manifest = export_prior(folder, tiny.autoencoder, tiny.net, {"note": "test"})
    assert set(manifest["files"]) >= {"multiview/model.safetensors", "multiview/config.json", "prior.json"}
    loaded = load(folder)
    for key, value in tiny.net.state_dict().items():  # fp16 storage: equal up to fp16 rounding
        assert torch.equal(loaded.net.state_dict()[key], value.half().float()), key
    assert list(loaded.autoencoder.config.block_out_channels) == [8, 16, 16]
    weights = folder / "multiview" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-10] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(UserError, match="model.safetensors: sha256 does not match"):
        load(folder)
    weights.unlink()
    with pytest.raises(UserError, match="model.safetensors: missing"):
        load(folder)


@pytest.mark.skipif(not (ASSETS / "manifest.json").is_file(), reason="no shipped shapeworld-mv weights in this checkout")
def test_shipped_weights_load_by_default_and_draw_an_object():
    prior = load_prior("shapeworld-mv")
    assert prior.name == "shapeworld-mv"
    out = prior.sample("a large red sphere", eval_cameras(64)[[0, 2, 4, 6]], steps=8, generator=torch.Generator().manual_seed(0))
    coverage = (out[:, 3] > 0.5).float().mean()
    assert 0.02 < float(coverage) < 0.8  # an object in the middle, background around it
    rgb = out[:, :3].permute(0, 2, 3, 1)[out[:, 3] > 0.5]
    assert float(rgb[:, 0].mean()) > float(rgb[:, 2].mean()) + 0.1  # red, not blue
