"""`gen3d demo`: the diffusion core end to end in under a minute, as a PNG of samples.

Trains the 2-D toy denoiser, draws samples with several samplers and with CFG on each mode label,
and writes one scatter-plot panel per run; the quickest check that an install works.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import typer
from PIL import Image, ImageDraw

from gen3d.cli import app
from gen3d.commands.options import SeedOpt, check_output_file
from gen3d.diffusion import CFGDenoiser, sample
from gen3d.diffusion.toy import Mixture, toy_denoiser, train_toy

PANEL = 256
EXTENT = 3.2


def scatter_panel(points: torch.Tensor, title: str, color=(30, 90, 200)) -> Image.Image:
    img = Image.new("RGB", (PANEL, PANEL + 18), "white")
    draw = ImageDraw.Draw(img)
    px = ((points.numpy() / EXTENT + 1) * 0.5 * (PANEL - 1)).round().astype(int)
    keep = np.all((px >= 0) & (px < PANEL), axis=1)
    for x, y in px[keep]:
        draw.point((int(x), PANEL - 1 - int(y)), fill=color)
    draw.text((4, PANEL + 3), title, fill="black")
    return img


@app.command("demo")
def demo(out: Path = typer.Option(Path("runs/demo-samplers.png"), "--out", help="PNG to write."),
         seed: SeedOpt = 0, train_steps: int = typer.Option(3000, "--train-steps", min=1, max=10**6,
                                                          help="Toy training steps.")) -> None:
    """Train the 2-D toy prior and write a PNG of samples from each sampler and with CFG."""
    check_output_file(out)
    mixture = Mixture()
    denoiser = train_toy(toy_denoiser(seed=seed), mixture, steps=train_steps, seed=seed)
    panels = [scatter_panel(mixture.sample(4000, torch.Generator().manual_seed(seed))[0], "data", (0, 0, 0))]
    for name in ["ddim", "euler_a", "heun", "dpmpp_2m"]:
        points = sample(denoiser, (4000, 2), sampler=name, generator=torch.Generator().manual_seed(seed))
        panels.append(scatter_panel(points, name))
    guided = CFGDenoiser(denoiser, 3.0, {"label": torch.tensor([mixture.modes])})
    labels = torch.arange(4000) % mixture.modes
    points = sample(guided, (4000, 2), cond={"label": labels}, generator=torch.Generator().manual_seed(seed))
    panels.append(scatter_panel(points, "CFG 3.0, one label per point", (200, 60, 30)))
    sheet = Image.new("RGB", (PANEL * 3, (PANEL + 18) * 2), "white")
    for i, panel in enumerate(panels):
        sheet.paste(panel, ((i % 3) * PANEL, (i // 3) * (PANEL + 18)))
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp.png")
    sheet.save(tmp)
    tmp.replace(out)
    typer.echo(f"wrote {out}")
