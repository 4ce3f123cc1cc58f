"""`gen3d bench reconstruct`: test PSNR against training time on lego, a baseline, and geometry.

Rows: the engine (configs/recon/fast.yaml) on lego at 100x100 from 8, 16 and 30 views, evaluated on
the 10 held-out test views at checkpoints in wall-clock training seconds (evaluation excluded);
the time each method needs to reach 20 dB on held-out pixels, against a positional-encoding MLP
NeRF (configs/recon/baseline.yaml); the README's lego command as a job, with the exported mesh's
PSNR (mesh_psnr) beside the field's; and the shared meshes (spot, bunny, armadillo, suzanne)
rendered by the project's mesh renderer, reconstructed and exported as a user gets them, scored by
mesh_psnr beside the field's PSNR and by Chamfer, normal error and F-score against the source;
then the real capture, the input formats and the estimates (`gen3d.bench.captures`).

Budgets count wall-clock seconds. On a machine shared with other work, set
GEN3D_BENCH_CLOCK=cpu to count this process's CPU seconds instead (run it with OMP_NUM_THREADS=1
so that CPU seconds equal the wall seconds of one dedicated core); rows report both.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from gen3d.bench.captures import estimate_rows, fern_rows, format_rows, run_reconstruct, unit_mesh
from gen3d.bench.report import progress
from gen3d.cameras import Cameras, orbit
from gen3d.config import load_config
from gen3d.errors import UserError
from gen3d.recon import ReconConfig, ReconTrainer, pixel_rays, psnr
from gen3d.settings import configs_dir, data_dir

LEGO = "nerf_synthetic_lego_subset"  # scenes and meshes in the shared data folder (gen3d.settings)
MESHES = {"spot": "meshes/spot.obj", "bunny": "meshes/stanford-bunny.obj", "armadillo": "meshes/armadillo.obj",
          "suzanne": "meshes/suzanne.obj"}
SEED = 0
TARGET_DB = 20.0
ENGINE = "gen3d (triplane)"


@dataclass
class Plan:
    views: tuple[int, ...]
    checkpoints: tuple[float, ...]  # wall seconds of training at which to evaluate
    baseline_cap: float
    probe_every: float  # seconds between held-out-pixel probes while looking for 20 dB
    hash_row: bool
    geometry_seconds: float  # training seconds of each mesh scene
    meshes: tuple[str, ...]  # shared meshes rendered as scenes, reconstructed and exported
    readme_steps: int  # steps of the README's lego job
    capture_checkpoints: tuple[float, ...]  # training seconds at which the fern capture is scored
    job_steps: int  # steps of each format's and each scene's job (seconds per step, estimates)


QUICK = Plan(views=(8, 16, 30), checkpoints=(15.0, 45.0), baseline_cap=120.0, probe_every=5.0, hash_row=False,
             geometry_seconds=45.0, meshes=("spot",), readme_steps=300, capture_checkpoints=(30.0, 90.0), job_steps=40)
FULL = Plan(views=(8, 16, 30), checkpoints=(60.0, 180.0, 600.0), baseline_cap=1800.0, probe_every=5.0,
            hash_row=True, geometry_seconds=180.0, meshes=tuple(MESHES), readme_steps=1000,
            capture_checkpoints=(60.0, 180.0, 600.0), job_steps=100)


def engine_config(name: str, aabb: Tensor | None = None, *overrides: str) -> ReconConfig:
    cfg = load_config(ReconConfig, configs_dir() / "recon" / f"{name}.yaml", list(overrides))
    cfg.threads = 0  # keep the process's thread count (OMP_NUM_THREADS), recorded in the report's env
    if aabb is not None:
        cfg.render.aabb = [float(v) for v in aabb.reshape(-1)]
    return cfg


class HeldOutPixels:
    """A fixed random subset of held-out pixels: a cheap PSNR probe for slow methods."""

    def __init__(self, images: Tensor, cameras: Cameras, count: int):
        g = torch.Generator().manual_seed(SEED)
        n, h, w = images.shape[:3]
        view, i, j = (torch.randint(m, (count,), generator=g) for m in (n, h, w))
        self.origins, self.dirs = pixel_rays(cameras, view, i.float(), j.float())
        self.rgb = images[view, i, j]

    def psnr(self, trainer: ReconTrainer) -> float:
        pred = trainer.render_rays(self.origins, self.dirs)["rgb"]
        return psnr(pred[None, None], self.rgb[None, None]).item()


class Stopwatch:
    """Wall and CPU seconds of training only (evaluation excluded); budgets use GEN3D_BENCH_CLOCK."""

    def __init__(self):
        self.wall = self.cpu = 0.0
        self.use_cpu = os.environ.get("GEN3D_BENCH_CLOCK", "wall") == "cpu"

    @property
    def elapsed(self) -> float:
        return self.cpu if self.use_cpu else self.wall

    def train_until(self, trainer: ReconTrainer, seconds: float, chunk: int = 2) -> None:
        while self.elapsed < seconds:
            w, c = time.perf_counter(), time.process_time()
            trainer.train(chunk)
            self.wall += time.perf_counter() - w
            self.cpu += time.process_time() - c


def plan_steps(trainer: ReconTrainer, watch: Stopwatch, seconds: float) -> None:
    """Let the learning-rate schedule end near `seconds`, from the step rate of the first seconds.

    Steps get about twice as fast once the occupancy grid has pruned empty space, hence the 2.
    """
    watch.train_until(trainer, min(5.0, seconds))
    trainer.cfg.steps = max(int(2 * trainer.step_count * seconds / watch.elapsed), trainer.step_count + 1)


def time_to_target(trainer: ReconTrainer, watch: Stopwatch, probe: HeldOutPixels, every: float, cap: float
                   ) -> float | None:
    """Training seconds until the probe PSNR reaches TARGET_DB (None within `cap`)."""
    while watch.elapsed < cap:
        watch.train_until(trainer, min(watch.elapsed + every, cap))
        if probe.psnr(trainer) >= TARGET_DB:
            return round(watch.elapsed, 1)
    return None


def lego_rows(plan: Plan, views: int, probe_target: bool) -> tuple[list[dict], float | None]:
    from gen3d.data import load_scene

    scene = load_scene(data_dir() / LEGO, size=(100, 100), views=views)
    test = scene.test
    trainer = ReconTrainer(engine_config("fast", scene.aabb), scene.train.images, scene.train.cameras, seed=SEED,
                           alpha=scene.train.alpha)
    watch = Stopwatch()
    plan_steps(trainer, watch, plan.checkpoints[-1])
    reached = None
    if probe_target:
        probe = HeldOutPixels(test.images, test.cameras, 4000)
        reached = time_to_target(trainer, watch, probe, plan.probe_every, plan.checkpoints[-1])
    rows = []
    for seconds in plan.checkpoints:
        watch.train_until(trainer, seconds)
        result = trainer.evaluate(test.images, test.cameras)
        rows.append({"method": ENGINE, "views": views, "seconds": round(watch.wall, 1),
                     "cpu_seconds": round(watch.cpu, 1), "steps": trainer.step_count,
                     "psnr": round(result["psnr"], 3), "ssim": round(result["ssim"], 4), "chamfer": None})
    return rows, reached


def method_row(name: str, config: str, seconds: float, probe_every: float, full_eval: bool, *overrides: str
               ) -> tuple[dict, float | None]:
    """One method on 30 lego views for `seconds`: its held-out PSNR and its time to TARGET_DB.

    Without `full_eval` (methods too slow to render all test views) the PSNR is the probe's.
    """
    from gen3d.data import load_scene

    scene = load_scene(data_dir() / LEGO, size=(100, 100), views=30)
    trainer = ReconTrainer(engine_config(config, scene.aabb, *overrides), scene.train.images, scene.train.cameras,
                           seed=SEED, alpha=scene.train.alpha)
    watch = Stopwatch()
    plan_steps(trainer, watch, seconds)
    probe = HeldOutPixels(scene.test.images, scene.test.cameras, 2000)
    reached = time_to_target(trainer, watch, probe, probe_every, seconds)
    watch.train_until(trainer, seconds)
    row = {"method": name, "views": 30, "seconds": round(watch.wall, 1), "cpu_seconds": round(watch.cpu, 1),
           "steps": trainer.step_count}
    if full_eval:
        result = trainer.evaluate(scene.test.images, scene.test.cameras)
        row.update(psnr=round(result["psnr"], 3), ssim=round(result["ssim"], 4), chamfer=None)
    else:
        row.update(psnr=round(probe.psnr(trainer), 3), ssim=None, chamfer=None, note="psnr on 2000 held-out pixels")
    return row, reached


def mesh_scene_row(name: str, seconds: float) -> dict:
    """A shared mesh in [-0.8, 0.8]^3, 30 orbit views at 100x100 -> field -> exported asset: the
    field's PSNR on 8 held-out orbit views beside its textured mesh's (mesh_psnr), and the mesh's
    Chamfer, normal error and F-score against the source mesh."""
    from gen3d.export.metrics import surface_metrics
    from gen3d.pipelines.stages.asset import ScoringViews
    from gen3d.pipelines.stages.export import ExportConfig, field_asset
    from gen3d.recon.trainer import composite_onto
    from gen3d.render.mesh import ShadingConfig, render_mesh

    mesh = unit_mesh(MESHES[name])
    g = torch.Generator().manual_seed(SEED)
    cams = orbit(5 + 35 * torch.rand(30, generator=g), 360 * torch.rand(30, generator=g), 2.5, 40.0, 100, 100)
    held_out = orbit(torch.full((8,), 15.0), torch.arange(8) * 45.0, 2.5, 40.0, 100, 100)
    views = render_mesh(mesh, Cameras.cat([cams, held_out]), shading=ShadingConfig(), ss=2).rgba
    cfg = engine_config("fast", torch.tensor([-1.0, -1, -1, 1, 1, 1]))
    trainer = ReconTrainer(cfg, views[:30], cams, seed=SEED)
    watch = Stopwatch()
    plan_steps(trainer, watch, seconds)
    watch.train_until(trainer, seconds)
    result = trainer.evaluate(views[30:], held_out)
    row = {"method": ENGINE, "caption": f"{name} mesh, 8 held-out orbit views", "views": 30,
           "seconds": round(watch.wall, 1), "cpu_seconds": round(watch.cpu, 1), "steps": trainer.step_count,
           "psnr": round(result["psnr"], 3), "ssim": round(result["ssim"], 4)}
    background = trainer.eval_background()
    scoring = ScoringViews(held_out, composite_onto(views[30:], background), tuple(background.tolist()),
                           trainer.render(held_out)["opacity"])
    began = time.perf_counter()
    try:
        asset = field_asset(trainer.field, ExportConfig(), ExportConfig().resolution, scoring)
    except UserError as exc:  # too little training for a surface at that level
        return {**row, "note": str(exc)}
    surface = surface_metrics(asset.colored, mesh)
    return {**row, "export_seconds": round(time.perf_counter() - began, 1), **asset.scores(scoring),
            **{k: round(surface[k], 4) if isinstance(surface[k], float) else surface[k]
               for k in ("chamfer", "normal_error_deg", "fscore", "euler_ok")}}


def readme_lego_row(steps: int) -> dict:
    """The README's lego command (100x100, 30 views) as a job: the field's held-out PSNR and the
    exported GLB's (mesh_psnr), with each stage's seconds: what a user gets."""
    manifest = run_reconstruct(data_dir() / LEGO, ["data.size=[100,100]", f"recon.steps={steps}"])
    metrics = manifest["metrics"]
    stages = {f"{s['name']}_s": round(s["seconds"], 1) for s in manifest["stages"]}
    return {"method": "gen3d reconstruct (README command)", "caption": f"lego, {steps} steps", "views": 30,
            "steps": steps, "psnr": metrics.get("psnr"), "ssim": metrics.get("ssim"),
            "mesh_psnr": metrics.get("mesh_psnr"), "mesh_psnr_vertex": metrics.get("mesh_psnr_vertex"), **stages}


def run(quick: bool, out_dir: Path) -> list[dict]:
    if not (data_dir() / LEGO).is_dir():
        raise UserError(f"benchmark data not found: {data_dir() / LEGO} (see shared/data/SOURCES.md)")
    plan = QUICK if quick else FULL
    rows: list[dict] = []
    engine_time = None
    for views in plan.views:
        view_rows, reached = lego_rows(plan, views, probe_target=views == 30)
        rows += view_rows
        engine_time = reached if views == 30 else engine_time
    if plan.hash_row:
        hash_row, _ = method_row("gen3d (hash grid)", "fast", plan.checkpoints[1], plan.probe_every, True,
                                 "field.encoding.kind=hash")
        rows.append(hash_row)
    baseline, baseline_time = method_row("MLP NeRF (positional encoding)", "baseline", plan.baseline_cap,
                                         probe_every=30.0, full_eval=False)
    rows.append(baseline)
    for name, reached in ((ENGINE, engine_time), ("MLP NeRF (positional encoding)", baseline_time)):
        rows.append({"method": name, "views": 30, "caption": f"time to {TARGET_DB:g} dB",
                     "seconds": reached if reached is not None else "not reached"})
    if engine_time and baseline_time:
        rows.append({"method": "speed-up", "caption": f"time to {TARGET_DB:g} dB, baseline / engine",
                     "seconds": round(baseline_time / engine_time, 1)})
    elif engine_time:
        rows.append({"method": "speed-up", "caption": f"time to {TARGET_DB:g} dB, baseline / engine",
                     "seconds": f"> {round(plan.baseline_cap / engine_time, 1)} (baseline capped)"})
    rows += fern_rows(plan.capture_checkpoints)
    rows += format_rows(plan.job_steps)
    rows += estimate_rows(plan.job_steps if plan is QUICK else 0)
    rows.append(readme_lego_row(plan.readme_steps))
    progress("lego (README command) exported")
    for name in plan.meshes:
        rows.append(mesh_scene_row(name, plan.geometry_seconds))
        progress(f"{name} mesh scene exported")
    return rows
