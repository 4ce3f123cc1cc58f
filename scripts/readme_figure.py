"""The README's text-to-3d figure: for a few prompts, the bundled prior's generated views beside
turntable frames of the exported (textured) mesh, from real `gen3d text-to-3d` runs.

    .venv/bin/python scripts/readme_figure.py docs/img/text-to-3d.png [RUNS_DIR]

Runs are kept in RUNS_DIR (default: a temporary folder) so the assets can be inspected.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import imageio.v3 as iio
import numpy as np
from PIL import Image, ImageDraw

from gen3d.pipelines import text_to_3d
from gen3d.runs import run_job

PROMPTS = ["a red cube", "a yellow torus", "a large red snowman"]
TILE = 128
FRAMES = 6  # turntable frames shown per prompt


def _row(run_dir: Path) -> np.ndarray:
    tiles = []
    for path in sorted((run_dir / "views").glob("*.png"))[:8]:
        rgba = iio.imread(path).astype(np.float32) / 255
        rgb = rgba[..., :3] * rgba[..., 3:] + (1 - rgba[..., 3:])  # over white
        tiles.append(np.asarray(Image.fromarray((rgb * 255).round().astype(np.uint8)).resize((TILE, TILE), Image.NEAREST)))
    views = np.concatenate(tiles, axis=1)
    turntable = iio.imread(run_dir / "turntable.gif")[..., :3]
    picks = np.linspace(0, len(turntable), FRAMES, endpoint=False).astype(int)
    frames = np.concatenate([np.asarray(Image.fromarray(turntable[i]).resize((TILE, TILE))) for i in picks], axis=1)
    gap = np.full((TILE, TILE // 4, 3), 255, np.uint8)
    return np.concatenate([views, gap, frames], axis=1)


def main(out: Path, runs: Path) -> None:
    rows, label = [], 16
    for i, prompt in enumerate(PROMPTS):
        run_dir = runs / f"{i}"
        if not (run_dir / "turntable.gif").is_file():
            run_job(text_to_3d.build_job(text_to_3d.Config(), {"prompt": prompt}, 0), run_dir)
        rows.append((prompt, _row(run_dir)))
    width = max(r.shape[1] for _, r in rows)
    sheet = Image.new("RGB", (width, len(rows) * (TILE + label)), "white")
    draw = ImageDraw.Draw(sheet)
    for k, (prompt, row) in enumerate(rows):
        sheet.paste(Image.fromarray(row), (0, k * (TILE + label) + label))
        draw.text((2, k * (TILE + label) + 2), f'"{prompt}": generated views | turntable of the exported GLB',
                  fill="black")
    out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out)


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as tmp:
        main(Path(sys.argv[1]), Path(sys.argv[2]) if len(sys.argv) > 2 else Path(tmp))
