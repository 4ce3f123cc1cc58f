"""`gen3d bench fields`: training throughput of each position encoding inside the full field.

Every encoding is sized to about the same number of parameters (~0.5 M), and the field around it
(density and colour MLPs) is the one reconstruction uses, so samples per second compare what a
training step pays per sample.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import torch

from gen3d.fields.encodings import EncodingConfig, FrequencyConfig, HashGridConfig, TriplaneConfig, tcnn_available
from gen3d.fields.nerf import FieldConfig, NerfField

SEED = 0
AABB = torch.tensor([-1.0, -1.0, -1.0, 1.0, 1.0, 1.0])


def candidates() -> list[tuple[str, str, FieldConfig]]:
    """(encoding, backend, field config), each near 0.5 M parameters."""
    hash_grid = HashGridConfig(levels=16, features=2, log2_table=14, base_resolution=16, max_resolution=512,
                               backend="torch")
    rows = [
        ("triplane", "torch", FieldConfig(encoding=EncodingConfig(
            kind="triplane", triplane=TriplaneConfig(resolutions=[64, 128], channels=8)))),
        ("hash", "torch", FieldConfig(encoding=EncodingConfig(kind="hash", hash=hash_grid))),
        # a vanilla-NeRF-sized MLP spends its parameters on the network instead of a grid
        ("frequency", "torch", FieldConfig(layers=8, hidden=256, encoding=EncodingConfig(
            kind="frequency", frequency=FrequencyConfig(frequencies=10)))),
    ]
    if tcnn_available():
        tcnn_grid = HashGridConfig(**{**hash_grid.__dict__, "backend": "tcnn"})
        rows.append(("hash", "tcnn", FieldConfig(encoding=EncodingConfig(kind="hash", hash=tcnn_grid))))
    return rows


def _timed(fn, repeats: int) -> tuple[float, float]:
    """Median wall and CPU seconds of `fn` after one warm-up call."""
    fn()
    walls, cpus = [], []
    for _ in range(repeats):
        w, c = time.perf_counter(), time.process_time()
        fn()
        walls.append(time.perf_counter() - w)
        cpus.append(time.process_time() - c)
    return statistics.median(walls), statistics.median(cpus)


def measure(name: str, backend: str, cfg: FieldConfig, n: int, repeats: int) -> dict:
    g = torch.Generator().manual_seed(SEED)
    device = "cuda" if backend == "tcnn" else "cpu"
    field = NerfField(cfg, AABB, generator=g, device=device).to(device)
    x = (torch.rand(n, 3, generator=g) * 2 - 1).to(device)
    d = torch.nn.functional.normalize(torch.randn(n, 3, generator=g), dim=-1).to(device)
    encoded_input = field.normalize(x)

    def train_step():
        sigma, rgb = field(x, d)
        (sigma.mean() + rgb.mean()).backward()

    def forward():
        with torch.no_grad():
            field(x, d)

    def encoding_step():
        field.encoding(encoded_input).mean().backward()

    wall, cpu = _timed(train_step, repeats)
    fwd_wall = _timed(forward, repeats)[0]
    has_table = any(True for _ in field.encoding.parameters())  # the frequency encoding has nothing to train
    enc_rate = round(n / _timed(encoding_step, repeats)[0]) if has_table else None
    return {"encoding": name, "backend": backend, "params": sum(p.numel() for p in field.parameters()),
            "encoding_params": sum(p.numel() for p in field.encoding.parameters()),
            "samples_per_s_fwd_bwd": round(n / wall), "samples_per_s_fwd": round(n / fwd_wall),
            "encoding_only_samples_per_s_fwd_bwd": enc_rate, "cpu_s_per_M_samples": round(cpu / n * 1e6, 3),
            "threads": torch.get_num_threads(), "batch": n}


def run(quick: bool, out_dir: Path) -> list[dict]:
    """Runs with torch's thread count as the environment set it (OMP_NUM_THREADS; default: all cores)."""
    n, repeats = (16384, 3) if quick else (65536, 5)
    return [measure(name, backend, cfg, n, repeats) for name, backend, cfg in candidates()]
