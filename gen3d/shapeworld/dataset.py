"""Rendering ShapeWorld scenes, caching them as compressed npz shards, and a Dataset over the cache.

Training a multi-view prior reads the same scenes for many epochs, so scenes are rendered once
into shards (uint8 RGBA views, cameras, captions, spec JSON) and the Dataset only slices arrays.
"""

from __future__ import annotations

import json
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import torch

from gen3d.cameras import Cameras
from gen3d.errors import UserError
from gen3d.io import atomic_output, atomic_write_json
from gen3d.render.mesh import MeshRender, ShadingConfig, render_mesh
from gen3d.shapeworld.scenes import FOV_Y_DEG, sample_scene
from gen3d.shapeworld.shapes import build_mesh
from gen3d.shapeworld.spec import SceneSpec

SHADING = ShadingConfig()  # the one lighting every ShapeWorld render (and colour check) uses
SUPERSAMPLING = 2  # antialiased training views; masks for geometry checks use ss=1
CAPTIONS_PER_SCENE = 4
CACHE_VERSION = 1
INDEX_NAME = "index.json"
PARTIAL_NAME = "partial.json"  # parameters of the shards of an unfinished cache


def render_spec(spec: SceneSpec, cams: Cameras, ss: int = SUPERSAMPLING) -> MeshRender:
    """RGBA (alpha = coverage, transparent background), depth and normals of a spec's mesh."""
    return render_mesh(build_mesh(spec), cams, shading=SHADING, ss=ss)


def to_uint8(rgba: torch.Tensor) -> np.ndarray:
    """Images in [0, 1] to uint8 (rounded), the cache's storage format."""
    return np.round(rgba.numpy() * 255.0).astype(np.uint8)


def _render_static(index: int, params: dict) -> tuple:
    scene = sample_scene(params["seed"], index, params["views"], params["size"], params["split"],
                         params["captions_per_scene"])
    rgba = to_uint8(render_spec(scene.spec, scene.cameras, params["ss"]).rgba)
    return rgba, scene.cameras.c2w.numpy(), np.zeros(len(rgba)), scene.captions, scene.spec.to_json()


def _render_animated(index: int, params: dict) -> tuple:
    """Views ordered time-major: view k is camera k % C at time k // C."""
    from gen3d.shapeworld.animated import mesh_at, sample_animated_scene

    scene = sample_animated_scene(params["seed"], index, params["views"], params["times"], params["size"],
                                  params["split"], params["captions_per_scene"])
    rgba = np.concatenate([to_uint8(render_mesh(mesh_at(scene.anim, float(t)), scene.cameras, shading=SHADING,
                                                ss=params["ss"]).rgba) for t in scene.times])
    c2w = np.tile(scene.cameras.c2w.numpy(), (len(scene.times), 1, 1))
    times = np.repeat(scene.times, len(scene.cameras))
    return rgba, c2w, times, scene.captions, scene.anim.to_json()


def _render_shard(task: tuple) -> None:
    """Render scenes [start, stop) into one shard file (runs in a worker process)."""
    path, start, stop, params = task
    render = _render_animated if params.get("times") else _render_static
    rgba, c2w, times, captions, specs = zip(*(render(index, params) for index in range(start, stop)))
    arrays = {
        "index": np.arange(start, stop, dtype=np.int64),
        "rgba": np.stack(rgba),
        "c2w": np.stack(c2w).astype(np.float32),
        "times": np.stack(times).astype(np.float32),
        "captions": np.array(captions, dtype=str),
        "specs": np.array(specs, dtype=str),
    }
    with atomic_output(Path(path)) as tmp:
        np.savez_compressed(tmp, **arrays)


def _read_index(out_dir: Path) -> dict | None:
    path = out_dir / INDEX_NAME
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        raise UserError(f"{path}: not valid JSON; delete the cache folder to rebuild it") from None


def build_cache(out_dir: Path, n_scenes: int, views_per_scene: int = 8, size: int = 64, seed: int = 0,
                split: str = "train", workers: int = 1, shard_size: int = 128,
                captions_per_scene: int = CAPTIONS_PER_SCENE, ss: int = SUPERSAMPLING, times_per_scene: int = 0) -> dict:
    """Render scenes 0..n_scenes-1 of (seed, split) into `out_dir`; returns the index.

    `times_per_scene` > 0 renders animated ShapeWorld instead: `views_per_scene` cameras, each
    seen at that many clip times (a camera x time grid per scene).

    Shards are independent of `workers` (each scene has its own generators). An existing cache
    with the same parameters is reused; one with other parameters is an error. The index is
    written last, so a folder without one is an unfinished cache: its finished shards are kept
    when they were rendered with the same parameters (any scene count), the rest are rendered.
    """
    out_dir = Path(out_dir)
    params = json.loads(json.dumps({  # as it reads back from the index (tuples become lists)
        "version": CACHE_VERSION, "n_scenes": n_scenes, "views": views_per_scene, "size": size, "seed": seed,
        "split": split, "captions_per_scene": captions_per_scene, "ss": ss, "fov_y_deg": FOV_Y_DEG,
        "shading": asdict(SHADING), **({"times": times_per_scene} if times_per_scene else {})}))
    existing = _read_index(out_dir)
    if existing is not None:
        if existing["params"] != params:
            raise UserError(f"{out_dir / INDEX_NAME}: cache built with other parameters; use another folder")
        return existing
    out_dir.mkdir(parents=True, exist_ok=True)
    shard_params = {k: v for k, v in params.items() if k != "n_scenes"}
    partial = out_dir / PARTIAL_NAME
    if not partial.is_file() or json.loads(partial.read_text()) != shard_params:
        for stale in out_dir.glob("shard-*.npz"):
            stale.unlink()
        atomic_write_json(partial, shard_params)
    starts = range(0, n_scenes, shard_size)
    shards = [f"shard-{s:06d}-{min(s + shard_size, n_scenes):06d}.npz" for s in starts]
    tasks = [(str(out_dir / name), s, min(s + shard_size, n_scenes), params) for name, s in zip(shards, starts)
             if not (out_dir / name).is_file()]
    if workers > 1:
        # One torch thread per worker: the workers themselves fill the cores.
        with ProcessPoolExecutor(workers, mp_context=get_context("spawn"), initializer=torch.set_num_threads,
                                 initargs=(1,)) as pool:
            list(pool.map(_render_shard, tasks))
    else:
        for task in tasks:
            _render_shard(task)
    index = {"params": params, "shards": shards}
    atomic_write_json(out_dir / INDEX_NAME, index)
    return index


class ShapeWorldDataset(torch.utils.data.Dataset):
    """Scenes of a cache, each as `views` random views of its stored ones plus one random caption.

    The random choices of item i come from a generator seeded by (seed, epoch, i): call
    `set_epoch` each epoch for fresh subsets, and a resumed run sees the same items.
    Items: rgba (V, 4, H, W) float32 in [0, 1] (straight colour, transparent background),
    c2w (V, 4, 4) OpenGL, times (V,) clip times (zeros for static scenes), fov_y_deg, caption,
    spec (JSON), index.
    """

    def __init__(self, cache_dir: Path, views: int, seed: int = 0):
        cache_dir = Path(cache_dir)
        index = _read_index(cache_dir)
        if index is None:
            raise UserError(f"{cache_dir}: no ShapeWorld cache here (missing {INDEX_NAME})")
        self.params = index["params"]
        stored = self.params["views"] * max(1, self.params.get("times", 1))
        if not 1 <= views <= stored:
            raise UserError(f"views must be in [1, {stored}] for the cache {cache_dir}, got {views}")
        shards = [np.load(cache_dir / name) for name in index["shards"]]
        self.rgba = np.concatenate([s["rgba"] for s in shards])
        self.c2w = np.concatenate([s["c2w"] for s in shards])
        self.times = np.concatenate([s["times"] if "times" in s else np.zeros(s["c2w"].shape[:2], np.float32)
                                     for s in shards])
        self.captions = np.concatenate([s["captions"] for s in shards])
        self.specs = np.concatenate([s["specs"] for s in shards])
        self.views, self.seed, self.epoch = views, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.rgba)

    def __getitem__(self, i: int) -> dict:
        rng = np.random.default_rng([self.seed, self.epoch, i])
        chosen = np.sort(rng.choice(self.rgba.shape[1], size=self.views, replace=False))
        rgba = torch.from_numpy(self.rgba[i, chosen]).permute(0, 3, 1, 2).float() / 255.0
        return {
            "rgba": rgba,
            "c2w": torch.from_numpy(self.c2w[i, chosen]),
            "times": torch.from_numpy(self.times[i, chosen]),
            "fov_y_deg": float(self.params["fov_y_deg"]),
            "caption": str(self.captions[i, rng.integers(self.captions.shape[1])]),
            "spec": str(self.specs[i]),
            "index": i,
        }

    def unique_captions(self) -> list[str]:
        return sorted(set(self.captions.reshape(-1).tolist()))
