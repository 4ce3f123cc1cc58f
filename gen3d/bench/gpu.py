"""`gen3d bench gpu`: the numbers scripts/gpu_check.sh reports (docs/gpu.md).

Rows: lego at full resolution (800x800, all its views) fitted by the engine with the fastest
backend of the device (on CUDA the hash grid, tiny-cuda-nn when it imports; on the CPU the
tri-plane), held-out PSNR after 30, 60 and 300 s of training; then one text-to-3d job end to end
with the bundled prior (CI preset). `--quick`: 100x100 and 5/10/20 s, which also runs on the CPU.
Peak GPU memory is recorded on CUDA. Seconds per SDS step of the real priors' test models come
from the CUDA tests (tests/test_real_priors.py, `GEN3D_GPU_REPORT`).
"""

from __future__ import annotations

import time
from pathlib import Path

from gen3d.bench.reconstruct import LEGO, SEED, Stopwatch, engine_config, plan_steps
from gen3d.config import load_config
from gen3d.device import activate, peak_memory_mb, reset_peak_memory, resolve_device
from gen3d.fields.encodings import tcnn_available
from gen3d.recon import ReconTrainer
from gen3d.runs import read_manifest, run_job
from gen3d.settings import configs_dir, data_dir

FULL, QUICK = (None, (30.0, 60.0, 300.0)), ((100, 100), (5.0, 10.0, 20.0))
GPU_ENGINE = ("field.encoding.kind=hash", "batch_rays=8192")  # the fastest GPU backend; the CPU's is the tri-plane


def backend(device: str) -> str:
    if device == "cpu":
        return "triplane"
    return "hash (tcnn)" if tcnn_available(device) else "hash (torch)"


def lego_rows(size: tuple[int, int] | None, checkpoints: tuple[float, ...], device: str) -> list[dict]:
    from gen3d.data import load_scene

    scene = load_scene(data_dir() / LEGO, size=size)
    test = scene.test
    reset_peak_memory(device)
    overrides = () if device == "cpu" else GPU_ENGINE
    trainer = ReconTrainer(engine_config("fast", scene.aabb, *overrides), scene.train.images, scene.train.cameras,
                           seed=SEED, alpha=scene.train.alpha, device=device)
    watch = Stopwatch()
    plan_steps(trainer, watch, checkpoints[-1])
    rows = []
    for seconds in checkpoints:
        watch.train_until(trainer, seconds)
        result = trainer.evaluate(test.images, test.cameras)
        rows.append({"bench": "lego", "size": f"{test.cameras.width}x{test.cameras.height}",
                     "backend": backend(device), "seconds": round(watch.wall, 1),
                     "steps": trainer.step_count, "psnr": round(result["psnr"], 3),
                     "peak_memory_mb": peak_memory_mb(device)})
    return rows


def text_to_3d_row(out_dir: Path, device: str) -> dict:
    from gen3d.pipelines import text_to_3d

    cfg = load_config(text_to_3d.Config, configs_dir() / "ci" / "text-to-3d.yaml", [f"device={device}"])
    started = time.perf_counter()
    run = run_job(text_to_3d.build_job(cfg, {"prompt": "a red cube"}, SEED), root=out_dir, echo=lambda _: None)
    manifest = read_manifest(run.path)
    return {"bench": "text-to-3d", "size": "CI preset", "backend": backend(device), "status": manifest["status"],
            "seconds": round(time.perf_counter() - started, 1), "psnr": manifest["metrics"].get("psnr"),
            "peak_memory_mb": manifest.get("peak_memory_mb")}


def run(quick: bool, out_dir: Path) -> list[dict]:
    device = str(resolve_device("auto"))
    size, checkpoints = QUICK if quick else FULL
    activate(device)
    try:
        return lego_rows(size, checkpoints, device) + [text_to_3d_row(out_dir, device)]
    finally:
        activate("cpu")
