"""`gen3d bench reconstruct`, real captures and input formats: what a photo user waits for.

Rows: the LLFF fern capture at the reader's default resolution (504x378), PSNR/SSIM on its 3
held-out photos after 60, 180 and 600 s of training (evaluation timed separately); nerfacto on
the same data when nerfstudio is installed in its own environment (else the reason it is
skipped); one rendered object written as a Blender, a nerfstudio and an instant-ngp scene and
reconstructed from each, so that a reader which gives the trainer less (no alpha, no bounds)
shows up as seconds per step; and every bundled and shared scene run as a `gen3d reconstruct` job,
its stage times against the estimates printed before it started.
"""

from __future__ import annotations

import json
import math
import shutil
import tempfile
import time
from pathlib import Path

import torch

from gen3d.bench.report import progress
from gen3d.cameras import Cameras, orbit
from gen3d.config import load_config
from gen3d.data.images import save_png
from gen3d.settings import configs_dir, data_dir, source_checkout

FERN = "llff_fern_lowres"
LEGO = "nerf_synthetic_lego_subset"
FORMAT_MESH = "meshes/spot.obj"
SEED = 0


def _job_config(overrides: list[str]):
    from gen3d.pipelines import reconstruct

    return load_config(reconstruct.Config, configs_dir() / "reconstruct.yaml", ["recon.threads=0", *overrides])


def unit_mesh(relative_path: str):
    """A shared mesh (path below the data folder) centred and scaled into [-0.8, 0.8]^3."""
    import trimesh

    mesh = trimesh.load(data_dir() / relative_path, force="mesh", process=True)
    mesh.apply_translation(-mesh.bounds.mean(0))
    mesh.apply_scale(1.6 / mesh.extents.max())
    return mesh


def run_reconstruct(scene: Path, overrides: list[str]) -> dict:
    """A reconstruct job on `scene` (the reconstruct defaults plus `overrides`, the process's thread
    count) in a scratch folder; its manifest."""
    from gen3d.pipelines import reconstruct
    from gen3d.runs import read_manifest, run_job

    with tempfile.TemporaryDirectory() as tmp:
        run_job(reconstruct.build_job(_job_config(overrides), {"scene": str(scene)}, SEED), Path(tmp) / "run",
                echo=lambda _: None)
        return read_manifest(Path(tmp) / "run")


def job_row(name: str, scene: Path, steps: int, overrides: list[str]) -> dict:
    """One job: seconds per training step, held-out PSNR, whether a mesh came out, and each stage's
    measured seconds over its estimate (estimates are whole-run averages: short runs, which spend
    more of their steps before the occupancy grid has pruned space, take longer per step)."""
    manifest = run_reconstruct(scene, [f"recon.steps={steps}", *overrides])
    stages = {s["name"]: s for s in manifest["stages"]}
    metrics = manifest["metrics"]
    row = {"method": "gen3d reconstruct", "caption": name, "steps": steps,
           "s_per_step": round(stages["train"]["seconds"] / steps, 4),
           "psnr": metrics.get("psnr", metrics.get("train_psnr")), "mesh": "mesh_faces" in metrics}
    for stage in ("train", "evaluate", "export"):
        seconds, estimate = stages[stage]["seconds"], max(stages[stage]["estimated_seconds"], 1e-9)
        row[f"{stage}_s"], row[f"{stage}_estimate_ratio"] = round(seconds, 1), round(seconds / estimate, 2)
    return row


# --- one object, three formats ------------------------------------------------------------------

def _object_views(size: int, count: int) -> tuple[torch.Tensor, Cameras]:
    """A shared mesh in [-0.8, 0.8]^3 rendered RGBA from an orbit at radius 4 (35 degrees field of
    view): nerf_synthetic's distance, inside the near and far the Blender format implies."""
    from gen3d.render.mesh import ShadingConfig, render_mesh

    mesh = unit_mesh(FORMAT_MESH)
    g = torch.Generator().manual_seed(SEED)
    cams = orbit(5 + 35 * torch.rand(count, generator=g), 360 * torch.rand(count, generator=g), 4.0, 35.0, size, size)
    return render_mesh(mesh, cams, shading=ShadingConfig(), ss=2).rgba, cams


def write_formats(root: Path, images: torch.Tensor, cams: Cameras, test_every: int = 8) -> dict[str, Path]:
    """The same frames as a Blender (`transforms_train/test.json`), a plain nerfstudio and an
    instant-ngp (`aabb_scale` 1) scene folder; every `test_every`-th frame is held out."""
    names = [f"frames/{i:03d}.png" for i in range(len(images))]
    angle_x = 2 * math.atan(cams.width / (2 * cams.fx[0].item()))
    frames = [{"file_path": n, "transform_matrix": cams.c2w[i].tolist()} for i, n in enumerate(names)]
    test = [f for i, f in enumerate(frames) if i % test_every == 0]
    train = [f for i, f in enumerate(frames) if i % test_every]
    files = {
        "blender": {"transforms_train.json": {"camera_angle_x": angle_x, "frames": train},
                    "transforms_test.json": {"camera_angle_x": angle_x, "frames": test}},
        "nerfstudio": {"transforms.json": {
            "camera_model": "OPENCV", "w": cams.width, "h": cams.height, "fl_x": cams.fx[0].item(),
            "fl_y": cams.fy[0].item(), "cx": cams.cx[0].item(), "cy": cams.cy[0].item(), "frames": frames,
            "train_filenames": [f["file_path"] for f in train], "val_filenames": [f["file_path"] for f in test],
            "test_filenames": [f["file_path"] for f in test]}},
        "instant-ngp": {"transforms.json": {"camera_angle_x": angle_x, "aabb_scale": 1, "frames": frames}},
    }
    folders = {}
    for fmt, jsons in files.items():
        folder = root / fmt
        for name, image in zip(names, images):
            save_png(image, folder / name)
        for file_name, meta in jsons.items():
            (folder / file_name).write_text(json.dumps(meta))
        folders[fmt] = folder
    return folders


def format_rows(steps: int) -> list[dict]:
    """One rendered object (24 RGBA views at 64x64) trained `steps` steps from each format."""
    images, cams = _object_views(64, 24)
    root = Path(tempfile.mkdtemp(prefix="gen3d-formats-"))
    try:
        rows = []
        for fmt, folder in write_formats(root, images, cams).items():
            rows.append(job_row(f"spot, 24 views 64x64 RGBA, {fmt} format", folder, steps,
                                ["export.resolution=96", "export.formats=[glb]", "export.video=false",
                                 "export.gif=false"]))
            progress(f"{fmt} scene reconstructed")
        slowest, fastest = max(r["s_per_step"] for r in rows), min(r["s_per_step"] for r in rows)
        rows.append({"method": "format spread", "caption": "slowest / fastest seconds per step",
                     "s_per_step": round(slowest / fastest, 2)})
        return rows
    finally:
        shutil.rmtree(root, ignore_errors=True)


# --- the fern capture ---------------------------------------------------------------------------

def fern_rows(checkpoints: tuple[float, ...]) -> list[dict]:
    """The fern capture with the reconstruct defaults, held-out PSNR/SSIM at each training checkpoint
    (the learning-rate schedule planned to end at the last one)."""
    from gen3d.bench.reconstruct import Stopwatch, plan_steps
    from gen3d.pipelines import reconstruct

    cfg = _job_config([])
    data = reconstruct.load_data(cfg, str(data_dir() / FERN))
    trainer = reconstruct._trainer(cfg, data, SEED)
    watch = Stopwatch()
    plan_steps(trainer, watch, checkpoints[-1])
    rows = []
    for seconds in checkpoints:
        watch.train_until(trainer, seconds)
        began = time.perf_counter()
        result = trainer.evaluate(data.holdout.images, data.holdout.cameras)
        rows.append({"method": "gen3d reconstruct", "caption": f"fern 504x378, {seconds:g} s",
                     "seconds": round(watch.wall, 1), "cpu_seconds": round(watch.cpu, 1),
                     "steps": trainer.step_count, "psnr": round(result["psnr"], 3), "ssim": round(result["ssim"], 4),
                     "evaluate_s": round(time.perf_counter() - began, 1)})
        progress(f"fern at {seconds:g} s: {result['psnr']:.2f} dB")
    rows.append(nerfacto_row())
    return rows


def nerfacto_row() -> dict:
    """nerfstudio's nerfacto runs from its own environment (docs/benchmarks.md says how to install it)."""
    runner = shutil.which("ns-train")
    note = ("skipped: ns-train is not on PATH (install nerfstudio in its own environment, docs/benchmarks.md)"
            if runner is None else "not run: ns-train found, but the runner that drives it is not written yet")
    return {"method": "nerfacto", "caption": "fern 504x378", "note": note}


def estimate_rows(steps: int) -> list[dict]:
    """The bundled and shared scenes as jobs of `steps` steps (the README's commands when 0: lego
    1,000, fern 1,500, the example 1,000): measured stage seconds over the estimates."""
    scenes = [("lego 100x100", data_dir() / LEGO, ["data.size=[100,100]"], 1000),
              ("fern 504x378", data_dir() / FERN, [], 1500)]
    checkout = source_checkout()
    if checkout is not None:  # the example scenes ship with the source, not the wheel
        scenes.append(("shapeworld-snowman example", checkout / "scenes" / "shapeworld-snowman", [], 1000))
    rows = []
    for name, scene, overrides, readme_steps in scenes:
        rows.append(job_row(name, scene, steps or readme_steps, overrides))
        progress(f"{name} job done")
    return rows
