"""Encodings and the NeRF field: exact indexing, gradients, and the maths each one promises."""

import math

import numpy as np
import pytest
import torch

from gen3d.fields.encodings import (HASH_PRIMES, FrequencyConfig, FrequencyEncoding, HashGridConfig,
                                    HashGridEncoding, SphericalHarmonicsEncoding, TriplaneConfig, TriplaneEncoding,
                                    level_resolutions)
from gen3d.fields.nerf import FieldConfig, NerfField, contract, perspective, perspective_box, uncontract, unperspective

SMALL_HASH = HashGridConfig(levels=5, features=2, log2_table=9, base_resolution=2, max_resolution=40, backend="torch")


def naive_hash_encoding(enc: HashGridEncoding, x: torch.Tensor) -> torch.Tensor:
    """One point, one level, one corner at a time, straight from the documented indexing."""
    cfg, size = enc.cfg, enc.table_size
    out = torch.zeros(len(x), cfg.levels * cfg.features, dtype=torch.float64)
    table = enc.table.detach().double()
    for p, point in enumerate(x.tolist()):
        for level, res in enumerate(level_resolutions(cfg)):
            pos = [float(np.float32(c) * np.float32(res)) for c in point]  # the encoding's float32 position
            cell = [min(math.floor(v), res - 1) for v in pos]
            frac = [v - c for v, c in zip(pos, cell)]
            for corner in range(8):
                bits = [(corner >> 2) & 1, (corner >> 1) & 1, corner & 1]
                c = [cell[a] + bits[a] for a in range(3)]
                if (res + 1) ** 3 <= size:
                    index = c[0] + c[1] * (res + 1) + c[2] * (res + 1) ** 2
                else:
                    index = ((c[0] * HASH_PRIMES[0]) ^ (c[1] * HASH_PRIMES[1]) ^ (c[2] * HASH_PRIMES[2])) % size
                weight = math.prod(f if b else 1 - f for f, b in zip(frac, bits))
                out[p, level * cfg.features:(level + 1) * cfg.features] += weight * table[level * size + index]
    return out


def test_hash_levels_include_dense_and_hashed():
    res = level_resolutions(SMALL_HASH)
    assert res[0] == 2 and res[-1] == 40
    dense = [(r + 1) ** 3 <= 2**SMALL_HASH.log2_table for r in res]
    assert any(dense) and not all(dense)


def test_hash_encoding_matches_naive_reference():
    g = torch.Generator().manual_seed(0)
    enc = HashGridEncoding(SMALL_HASH, generator=g)
    with torch.no_grad():
        enc.table.uniform_(-1, 1, generator=g)  # large values so indexing mistakes show
    x = torch.rand(40, 3, generator=g)
    x[0] = torch.tensor([1.0, 0.0, 1.0])  # box corners use the last cell, not one past it
    got = enc(x)
    assert got.shape == (40, SMALL_HASH.levels * SMALL_HASH.features)
    torch.testing.assert_close(got.double(), naive_hash_encoding(enc, x), atol=1e-6, rtol=0)


def test_hash_gradients_reach_exactly_the_touched_rows():
    g = torch.Generator().manual_seed(1)
    enc = HashGridEncoding(SMALL_HASH, generator=g)
    x = torch.rand(3, 3, generator=g)
    enc(x).sum().backward()
    touched = (enc.table.grad.abs().sum(-1) > 0).sum().item()
    # 3 points x 5 levels x 8 corners, minus shared or colliding rows; the finest level cannot share
    assert 8 <= touched <= 3 * 5 * 8
    # d(sum)/d(row) is the summed trilinear weight of the row, and all weights sum to 1 per point and level
    assert enc.table.grad[:, 0].sum().item() == pytest.approx(3 * 5, abs=1e-5)


def test_triplane_reads_product_of_planes_at_grid_nodes():
    enc = TriplaneEncoding(TriplaneConfig(resolutions=[5], channels=2), generator=torch.Generator().manual_seed(0))
    planes = enc.planes[0].detach()
    # normalised x = (0.25, 0.5, 1.0) sits on nodes (1, 2, 4) of a 5-node grid; grid_sample indexes [row=y, col=x]
    x = torch.tensor([[0.25, 0.5, 1.0]])
    expected = planes[0, :, 2, 1] * planes[1, :, 4, 1] * planes[2, :, 4, 2]
    torch.testing.assert_close(enc(x)[0], expected)
    enc(torch.rand(8, 3)).sum().backward()
    assert enc.planes[0].grad.abs().sum() > 0


def test_spherical_harmonics_are_orthonormal():
    n = 20000  # Fibonacci sphere: near-uniform directions
    i = torch.arange(n, dtype=torch.float64) + 0.5
    z = 1 - 2 * i / n
    phi = math.pi * (1 + 5**0.5) * i
    r = (1 - z * z).sqrt()
    d = torch.stack([r * torch.cos(phi), r * torch.sin(phi), z], -1)
    y = SphericalHarmonicsEncoding(4)(d)
    gram = 4 * math.pi * (y.T @ y) / n
    torch.testing.assert_close(gram, torch.eye(16, dtype=torch.float64), atol=2e-3, rtol=0)


def test_frequency_encoding_values():
    enc = FrequencyEncoding(FrequencyConfig(frequencies=2))
    out = enc(torch.tensor([[0.75, 0.5, 1.0]]))  # -> [0.5, 0, 1] in [-1, 1]
    assert out.shape == (1, 15)
    torch.testing.assert_close(out[0, :3], torch.tensor([0.5, 0.0, 1.0]))
    torch.testing.assert_close(out[0, 3:9], torch.sin(math.pi * torch.tensor([0.5, 1.0, 0.0, 0.0, 1.0, 2.0])))


def test_contraction_keeps_unit_cube_and_inverts():
    x = torch.tensor([[0.3, -0.9, 0.5], [3.0, 0.0, 0.0], [-100.0, 50.0, 1.0]])
    y = contract(x)
    torch.testing.assert_close(y[0], x[0])
    assert y[1, 0].item() == pytest.approx(2 - 1 / 3)
    assert (y.abs() < 2).all()
    torch.testing.assert_close(uncontract(y), x, rtol=1e-4, atol=1e-4)


def test_field_view_dependence_switch():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(16, 3) * 2 - 1
    d1 = torch.nn.functional.normalize(torch.randn(16, 3, generator=g), dim=-1)
    d2 = -d1
    aabb = torch.tensor([-1.0, -1, -1, 1, 1, 1])
    fixed = NerfField(FieldConfig(view_dependent=False), aabb, generator=g)
    sigma, rgb = fixed(x, d1)
    assert sigma.shape == (16,) and rgb.shape == (16, 3) and (sigma > 0).all()
    torch.testing.assert_close(fixed(x, d2)[1], rgb)
    varying = NerfField(FieldConfig(view_dependent=True), aabb, generator=g)
    assert (varying(x, d1)[1] - varying(x, d2)[1]).abs().max() > 1e-4


def test_tcnn_backend_falls_back_with_a_notice(monkeypatch, capsys):
    """A requested tcnn backend that cannot run (no CUDA here, or no tinycudann module) is the PyTorch
    grid with the same keys, and one line on stderr says why."""
    import sys

    from gen3d.fields import encodings
    from gen3d.fields.encodings import EncodingConfig, HashGridEncoding, make_position_encoding

    monkeypatch.setattr(encodings.torch.cuda, "is_available", lambda: True)
    monkeypatch.setitem(sys.modules, "tinycudann", None)  # importing it raises ImportError
    cfg = EncodingConfig(kind="hash", hash=HashGridConfig(backend="tcnn"))
    encoding = make_position_encoding(cfg, torch.Generator().manual_seed(0), "cuda:0")
    assert isinstance(encoding, HashGridEncoding)
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "tinycudann is not installed" in err and "PyTorch hash grid" in err
    auto = make_position_encoding(EncodingConfig(kind="hash"), torch.Generator().manual_seed(0), "cuda:0")
    assert isinstance(auto, HashGridEncoding) and capsys.readouterr().err == ""  # auto falls back silently
    make_position_encoding(cfg, torch.Generator().manual_seed(0), "cpu")
    assert "the field is on the CPU" in capsys.readouterr().err
    reference = make_position_encoding(EncodingConfig(kind="hash", hash=HashGridConfig(backend="torch")),
                                       torch.Generator().manual_seed(0))
    assert torch.equal(encoding.table, reference.table)


def test_field_normalize_round_trips_with_contraction():
    aabb = torch.tensor([-2.0, -1.0, 0.0, 2.0, 3.0, 1.0])
    x = torch.tensor([[0.0, 1.0, 0.5], [1.9, -0.9, 0.9], [40.0, -7.0, 3.0]])
    for space in ("box", "contract"):
        field = NerfField(FieldConfig(space=space), aabb, generator=torch.Generator().manual_seed(0))
        u = field.normalize(x)
        torch.testing.assert_close(field.denormalize(u), x, rtol=1e-4, atol=1e-4)
        inside = u[:2]
        assert ((inside >= 0) & (inside <= 1)).all()
        if space == "contract":  # the scene box fills the middle half of [0, 1]^3; far points stay inside
            assert ((inside >= 0.25) & (inside <= 0.75)).all() and ((u[2] > 0) & (u[2] < 1)).all()


def test_perspective_map_round_trips_and_keeps_lines_straight():
    x = torch.tensor([[0.3, -0.2, -1.5], [4.0, 2.0, -8.0], [-1.0, 0.5, -100.0]])
    w = perspective(x)
    torch.testing.assert_close(w[:, 2], 1 / torch.tensor([1.5, 8.0, 100.0]))
    torch.testing.assert_close(unperspective(w), x, rtol=1e-5, atol=1e-5)
    a, b = torch.tensor([0.5, 0.2, -1.2]), torch.tensor([-2.0, 1.0, -9.0])  # a segment maps to a segment
    on_line = perspective(a + torch.linspace(0, 1, 7)[:, None] * (b - a))
    ends = perspective(torch.stack([a, b]))
    direction = torch.nn.functional.normalize(ends[1] - ends[0], dim=0)
    offsets = on_line - ends[0]
    residual = offsets - (offsets @ direction)[:, None] * direction
    assert residual.abs().max() < 1e-5


def test_ndc_field_covers_every_camera_frustum_between_near_and_far():
    """A forward-facing rig: the perspective box holds every pixel's ray from near to far, the field's
    normalised space round-trips, and its world box holds those points too."""
    from gen3d.cameras import Cameras, generate_rays, look_at

    eyes = torch.tensor([[x, y, 0.0] for x in (-0.3, 0.3) for y in (-0.2, 0.2)])
    c2w = torch.stack([look_at(e, e + torch.tensor([0.1 * e[0].item(), 0.0, -1.0]), up=torch.tensor([0.0, 1, 0]))
                       for e in eyes])
    cams = Cameras(c2w, torch.tensor(40.0), torch.tensor(40.0), torch.tensor(24.0), torch.tensor(16.0), 48, 32)
    near, far = 1.0, 6.0
    box = perspective_box(cams, near, far)
    field = NerfField(FieldConfig(space="ndc"), box, generator=torch.Generator().manual_seed(0))
    origins, dirs = (t.reshape(-1, 3) for t in generate_rays(cams))
    depth = torch.linspace(near, far, 9)
    cos = -(dirs * cams.c2w[:, None, :3, 2].expand(-1, 48 * 32, 3).reshape(-1, 3)).sum(-1)  # depth along each axis
    points = (origins[:, None] + (depth[None] / cos[:, None])[..., None] * dirs[:, None]).reshape(-1, 3)
    u = field.normalize(points)
    assert ((u > 0) & (u < 1)).all()
    torch.testing.assert_close(field.denormalize(u), points, rtol=1e-4, atol=1e-4)
    world = field.world_box()
    assert ((points >= world[0] - 1e-4) & (points <= world[1] + 1e-4)).all()
    assert field.space == "ndc" and NerfField(FieldConfig(), box).space == "box"


def _tcnn_importable() -> bool:
    import importlib.util

    return torch.cuda.is_available() and importlib.util.find_spec("tinycudann") is not None


needs_tcnn = pytest.mark.skipif(not _tcnn_importable(), reason="needs a CUDA GPU and tinycudann (docs/gpu.md)")


@needs_tcnn
def test_tcnn_encoding_matches_the_pytorch_grid_on_the_same_inputs():
    """Same config, same inputs: the same width, and both grids start within their +-1e-4 init
    (tiny-cuda-nn hashes and offsets cells its own way, so values agree to that tolerance, not bit for bit)."""
    from gen3d.fields.encodings import EncodingConfig, HashGridEncoding, TcnnHashGridEncoding, make_position_encoding

    cfg = HashGridConfig(levels=8, features=2, log2_table=14, base_resolution=16, max_resolution=256)
    fast = make_position_encoding(EncodingConfig(kind="hash", hash=cfg), device="cuda")
    slow = HashGridEncoding(cfg, torch.Generator().manual_seed(0)).cuda()
    assert isinstance(fast, TcnnHashGridEncoding) and fast.out_dim == slow.out_dim
    x = torch.rand(4096, 3, generator=torch.Generator().manual_seed(1)).cuda()
    a, b = fast(x), slow(x)
    assert a.shape == b.shape and a.dtype == b.dtype == torch.float32
    torch.testing.assert_close(a, b, rtol=0, atol=2e-4 * cfg.levels)


@needs_tcnn
def test_tcnn_fit_matches_the_pytorch_grid_within_half_a_db():
    """A short fit of the bundled snowman scene on CUDA: tiny-cuda-nn's grid and MLPs against the
    PyTorch grid, held-out PSNR within 0.5 dB."""
    from pathlib import Path

    from gen3d.config import load_config
    from gen3d.data import load_scene
    from gen3d.recon import ReconConfig, ReconTrainer
    from gen3d.settings import configs_dir

    scene = load_scene(Path(__file__).resolve().parents[1] / "scenes" / "shapeworld-snowman")
    psnrs = {}
    for backend in ("torch", "tcnn"):
        cfg = load_config(ReconConfig, configs_dir() / "recon" / "fast.yaml",
                          ["steps=600", "field.encoding.kind=hash", f"field.encoding.hash.backend={backend}"])
        cfg.render.aabb = [float(v) for v in scene.aabb.reshape(-1)]
        trainer = ReconTrainer(cfg, scene.train.images, scene.train.cameras, seed=0, alpha=scene.train.alpha,
                               device="cuda")
        trainer.train(cfg.steps)
        psnrs[backend] = trainer.evaluate(scene.test.images, scene.test.cameras)["psnr"]
    assert abs(psnrs["tcnn"] - psnrs["torch"]) < 0.5, psnrs
