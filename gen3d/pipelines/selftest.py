"""The `selftest` job kind: a few seconds of *fake* training, for checking the server's queue end to end.

It trains nothing. The "train" stage sleeps `step_seconds` per step and logs a made-up loss curve
(exponential decay with seeded noise) through the real job runner, so events, checkpoints, interrupts and
`gen3d resume` behave as for a real job; the "export" stage writes a coloured box as mesh.glb and renders
it with the project's mesh renderer as the run's views. The viewer's tests and a first-time user check the
server, the worker and progress streaming with it in seconds, without depending on any model.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import trimesh
from PIL import Image

from gen3d.cameras import orbit
from gen3d.device import DeviceSettings
from gen3d.io import atomic_output
from gen3d.runs import Job, Stage, StageContext

BOX_EXTENTS = (0.9, 0.6, 0.4)
BOX_RGB = (230, 120, 40)
VIEW_AZIMUTHS = (30.0, 120.0, 210.0, 300.0)


@dataclass
class Config(DeviceSettings):
    steps: int = 20
    step_seconds: float = 0.05
    fail: bool = False  # raise at the last step, to see a failed job in the viewer
    view_size: int = 128


def fake_loss(step: int, steps: int, noise: float) -> float:
    return 0.1 * math.exp(-4.0 * step / steps) * (1.0 + 0.1 * noise)


def _train(ctx: StageContext) -> None:
    cfg = ctx.config
    loss = fake_loss(0, cfg.steps, 0.0)
    for step in ctx.steps(cfg.steps, every=max(1, cfg.steps // 4), state=dict, restore=lambda state: None):
        time.sleep(cfg.step_seconds)
        loss = fake_loss(step + 1, cfg.steps, float(ctx.np_rng.standard_normal()))
        ctx.event(step + 1, cfg.steps, loss=round(loss, 6), psnr=round(-10 * math.log10(loss), 3))
        if cfg.fail and step + 1 == cfg.steps:
            raise RuntimeError("selftest: failing at the last step because fail=true")
    ctx.set_metrics(loss=round(loss, 6), psnr=round(-10 * math.log10(loss), 3))


def box_mesh() -> trimesh.Trimesh:
    """The self-test's 'result': an axis-aligned box with vertex colours, z up like every world mesh."""
    mesh = trimesh.creation.box(extents=BOX_EXTENTS)
    mesh.visual.vertex_colors = np.tile(np.array([*BOX_RGB, 255], dtype=np.uint8), (len(mesh.vertices), 1))
    return mesh


def _export(ctx: StageContext) -> None:
    from gen3d.export.writers import write_glb
    from gen3d.render.mesh import ShadingConfig, render_mesh

    mesh = box_mesh()
    write_glb(mesh, ctx.path / "mesh.glb")
    ctx.add_artifact(ctx.path / "mesh.glb", "mesh", up="y")
    size = ctx.config.view_size
    cams = orbit([15.0] * len(VIEW_AZIMUTHS), list(VIEW_AZIMUTHS), 2.5, 40.0, size, size)
    rgb = render_mesh(mesh, cams, shading=ShadingConfig(), ss=2).composited()
    (ctx.path / "views").mkdir(exist_ok=True)
    for i, image in enumerate((rgb.numpy() * 255).round().astype(np.uint8)):
        path = ctx.path / "views" / f"view_{i:03d}.png"
        with atomic_output(path) as tmp:
            Image.fromarray(image).save(tmp, format="PNG")
        ctx.add_artifact(path, "views")


def build_job(config: Config, inputs: dict, seed: int) -> Job:
    stages = [
        Stage("train", _train, lambda job: job.config.steps * job.config.step_seconds),
        Stage("export", _export, lambda job: 2.0),
    ]
    return Job(kind="selftest", config=config, inputs=dict(inputs), seed=seed, stages=stages, slug="selftest")
