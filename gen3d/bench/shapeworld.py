"""ShapeWorld data generation speed (render + cache, caption embedding) and a sample grid.

The bundled prior trains on caches of tens of thousands of scenes, so scenes/s at 8 views of
64x64 is the number that matters; `shapeworld-samples.png` shows what the prior learns from.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from PIL import Image, ImageDraw

from gen3d.shapeworld.dataset import ShapeWorldDataset, build_cache, render_spec, to_uint8
from gen3d.shapeworld.scenes import sample_scene


def sample_grid(seed: int = 0, scenes: int = 16, views: int = 4, size: int = 64, zoom: int = 2) -> Image.Image:
    """Rows of training scenes (views composited on white) with their first caption below."""
    tile, caption_h = size * zoom, 14
    grid = Image.new("RGB", (views * tile, scenes * (tile + caption_h)), "white")
    draw = ImageDraw.Draw(grid)
    for row in range(scenes):
        scene = sample_scene(seed, row, views, size)
        render = render_spec(scene.spec, scene.cameras)
        rgb = to_uint8(render.composited())
        for col in range(views):
            image = Image.fromarray(rgb[col]).resize((tile, tile), Image.NEAREST)
            grid.paste(image, (col * tile, row * (tile + caption_h)))
        draw.text((4, row * (tile + caption_h) + tile), scene.captions[0], fill="black")
    return grid


def _cache_row(folder: Path, scenes: int, ss: int, workers: int) -> dict:
    start = time.perf_counter()
    build_cache(folder, scenes, views_per_scene=8, size=64, seed=0, workers=workers, ss=ss)
    seconds = time.perf_counter() - start
    size = sum(p.stat().st_size for p in folder.glob("shard-*.npz"))
    return {"stage": "render+cache", "ss": ss, "workers": workers, "scenes": scenes, "views": 8, "size": 64,
            "seconds": seconds, "scenes_per_s": scenes / seconds, "kib_per_scene": size / scenes / 1024}


def _text_row(cache: Path, count: int) -> dict:
    from gen3d.models.text import TextEncoder

    captions = ShapeWorldDataset(cache, views=1).unique_captions()[:count]
    encoder = TextEncoder()
    start = time.perf_counter()
    _ = encoder.model  # loads the weights: load time is its own field
    load = time.perf_counter() - start
    start = time.perf_counter()
    encoder.encode(captions)
    seconds = time.perf_counter() - start
    return {"stage": "text-encode", "captions": len(captions), "load_s": load, "seconds": seconds,
            "captions_per_s": len(captions) / seconds}


def run(quick: bool, out_dir: Path) -> list[dict]:
    scenes = 64 if quick else 512
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for ss, workers in ((1, 1), (2, 1), (2, 2)):
            rows.append(_cache_row(Path(tmp) / f"ss{ss}-w{workers}", scenes, ss, workers))
        rows.append(_text_row(Path(tmp) / "ss2-w1", 64 if quick else 512))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    sample_grid().save(out_dir / "shapeworld-samples.png")
    return rows
