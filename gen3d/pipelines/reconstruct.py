"""`reconstruct`: posed photos -> radiance field -> held-out metrics -> mesh, point cloud, turntable.

Stages: load (pick the training views, remember which) -> train (checkpointed; periodic held-out
PSNR) -> evaluate (renders of the held-out views, PSNR/SSIM) -> export (marching cubes, cleaning,
GLB/PLY/OBJ, point cloud, turntable). Later stages re-load the scene and the trained field from
the source folder and `ckpt/train.pt` when a resumed run has nothing in memory.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import torch

from gen3d.cameras import Cameras
from gen3d.config import from_dict, ranged
from gen3d.data import Scene, Split, is_capture, load_scene
from gen3d.data.images import image_size, save_png
from gen3d.data.readers import scan_scene
from gen3d.device import DeviceSettings
from gen3d.errors import UserError
from gen3d.fields.nerf import perspective_box
from gen3d.io import atomic_output
from gen3d.pipelines.stages.costs import estimate_export_seconds
from gen3d.pipelines.stages.asset import ScoringViews
from gen3d.pipelines.stages.export import ExportConfig, export_field, field_asset
from gen3d.pipelines.stages.reexport import write_export
from gen3d.recon import ReconConfig, ReconTrainer
from gen3d.recon.trainer import composite_onto
from gen3d.runs import Job, RunFolder, Stage, StageContext
from gen3d.runs.checkpoint import load_checkpoint
from gen3d.runs.folder import read_events

KIND = "reconstruct"
SPACE_FOR_SCENE = {"bounded": "box", "unbounded": "contract", "forward_facing": "ndc"}

# CPU costs behind the stage estimates, measured with the README's commands on the quiet 2-core
# machine with the default 2 threads (2026-12-05; a machine shared with other jobs takes longer);
# re-measure when the engine changes. Object scenes (a box carved to the visual hull): lego 100x100
# and the snowman example, 1000 steps of 2048 rays. Forward-facing captures (every step of every
# ray in occupied space): fern at 504x378, per ray and step of `disparity_steps`.
SECONDS_PER_TRAIN_RAY = 2.2e-5
SECONDS_PER_RENDER_RAY = 7e-6
SECONDS_PER_NDC_TRAIN_SAMPLE = 1.4e-6
SECONDS_PER_NDC_RENDER_SAMPLE = 2.8e-7
NOMINAL_PIXELS = 100 * 100  # image size assumed by estimates when the scene cannot be read


@dataclass
class DataConfig:
    views: int | None = None  # train on K views picked by farthest-point sampling; None: all
    downscale: int | None = None  # integer factor from full resolution (LLFF defaults to 8)
    size: list[int] | None = None  # [width, height] to resize to instead of `downscale`
    background: list[float] = dataclasses.field(default_factory=lambda: [1.0, 1.0, 1.0])
    scene_bounds: bool = True  # take aabb, near and far from the scene instead of recon.render
    allow_outside_scene: bool = False  # read frame files that resolve outside the scene folder


@dataclass
class TrainConfig:
    checkpoint_every: int = 500
    eval_every: int = 500  # held-out PSNR/SSIM every this many steps (and at the end)
    eval_views: int = 2  # held-out views in that periodic evaluation
    log_every: int = 50  # steps between progress events


@dataclass
class EvalConfig:
    max_views: int | None = None  # held-out views rendered and scored; None: all


@dataclass
class CaptureConfig:
    """What replaces `recon.batch_rays` and `recon.optim.lr` on real captures (forward-facing and
    unbounded scenes): their rays cross occupied space from near to far (tens of samples each,
    against a few on a carved object), so smaller batches at a higher rate make more progress per
    second (fern, 110 s on one thread: 2048 rays at 0.01 19.5 dB, 1024 at 0.02 21.2 dB)."""

    batch_rays: int = ranged(1024, low=1)
    lr: float = ranged(0.02, low=0.0)
    # Texture the GLB of a capture too (`export.texture`)? A whole scene's surface bakes millions of
    # texels through the field (fern: over ten minutes); its vertex colours take seconds.
    texture: bool = False


@dataclass
class Config(DeviceSettings):
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    capture: CaptureConfig = dataclasses.field(default_factory=CaptureConfig)
    recon: ReconConfig = dataclasses.field(default_factory=ReconConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    evaluate: EvalConfig = dataclasses.field(default_factory=EvalConfig)
    export: ExportConfig = dataclasses.field(default_factory=ExportConfig)


@dataclass
class SceneData:
    """The scene the way this run uses it: training views plus held-out views (may be None)."""

    scene: Scene
    holdout: Split | None
    holdout_source: str  # "test split", "unused train views" or "none"

    @property
    def train(self) -> Split:
        return self.scene.train


def subset(split: Split, indices: list[int]) -> Split:
    """The frames of `split` at `indices`, in that order."""
    index = torch.as_tensor(indices, dtype=torch.long)
    return Split(split.images[index], split.cameras[indices], [split.names[i] for i in indices],
                 None if split.alpha is None else split.alpha[index])


def _images_digest(split: Split) -> str:
    return hashlib.sha256(split.images.numpy().tobytes()).hexdigest()


def load_data(cfg: Config, scene_path: str) -> SceneData:
    """Load the scene with its `data.views` training views. The test split is held out when the
    scene has one, else the training frames `--views` left out."""
    data = cfg.data
    options = {"downscale": data.downscale, "size": None if data.size is None else tuple(data.size),
               "background": tuple(data.background), "allow_outside": data.allow_outside_scene}
    scene = load_scene(Path(scene_path), views=data.views, **options)
    if scene.test is not None:
        return SceneData(scene, scene.test, "test split")
    if data.views is not None:
        every_frame = load_scene(Path(scene_path), **options).train
        kept = set(scene.train.names)
        unused = [i for i, name in enumerate(every_frame.names) if name not in kept]
        if unused:
            return SceneData(scene, subset(every_frame, unused), "unused train views")
    return SceneData(scene, None, "none")


def recon_config(cfg: Config, scene: Scene) -> ReconConfig:
    """The engine config for this scene: its box, depth range and background unless told otherwise;
    the field's space from the kind of scene (`recon.field.space`: a perspective grid between the
    capture's near and far for forward-facing captures, contracted for unbounded ones); photo
    appearance learned (`recon.appearance`) and the `capture` settings for real captures."""
    recon = copy.deepcopy(cfg.recon)
    recon.render.background_color = list(scene.background)
    if cfg.data.scene_bounds:
        recon.render.aabb = [float(v) for v in scene.aabb.reshape(-1)]
        recon.render.near, recon.render.far = float(scene.near), float(scene.far)
        recon.field.space = recon.field.space or SPACE_FOR_SCENE[scene.scene_type]
        if recon.field.space == "ndc":
            box = perspective_box(scene.train.cameras, scene.near, scene.far)
            recon.render.aabb = [float(v) for v in box.reshape(-1)]
    capture = is_capture(scene.scene_type)
    if recon.appearance is None:
        recon.appearance = capture and scene.train.alpha is None
    if capture:
        recon.batch_rays, recon.optim.lr = cfg.capture.batch_rays, cfg.capture.lr
    return recon


def scene_data(ctx: StageContext) -> SceneData:
    """The scene from memory, or re-loaded from its folder (checked against the digest `load` saved)."""
    if "data" not in ctx.shared:
        data = load_data(ctx.config, ctx.inputs["scene"])
        saved = json.loads((ctx.path / "views.json").read_text())
        if _images_digest(data.train) != saved["train_sha256"]:
            raise UserError(f"{ctx.inputs['scene']}: the scene's images changed since this run started")
        ctx.shared["data"] = data
    return ctx.shared["data"]


def _trainer(cfg: Config, data: SceneData, seed: int) -> ReconTrainer:
    """The engine on the training views, with their alpha where the files had transparency (Blender
    RGBA): it carves the occupancy grid to the visual hull, trains on random backgrounds and feeds
    `recon.mask_loss_weight`."""
    train = data.train
    return ReconTrainer(recon_config(cfg, data.scene), train.images, train.cameras, seed=seed, alpha=train.alpha)


def restored_trainer(cfg: Config, data: SceneData, state: dict) -> ReconTrainer:
    """The trained engine from a checkpoint's state, to render and export. Built without the
    scene's alpha: the carved occupancy grid is part of the state, so carving again would be wasted."""
    train = data.train
    trainer = ReconTrainer(recon_config(cfg, data.scene), train.images, train.cameras)
    trainer.load_state_dict(state)
    return trainer


def trained_engine(ctx: StageContext) -> ReconTrainer:
    if "trainer" not in ctx.shared:
        ctx.shared["trainer"] = restored_trainer(ctx.config, scene_data(ctx), ctx.read_checkpoint("train").state)
    return ctx.shared["trainer"]


# --- stages -----------------------------------------------------------------------------------

def load(ctx: StageContext) -> None:
    data = load_data(ctx.config, ctx.inputs["scene"])
    ctx.shared["data"] = data
    split = data.train
    record = {
        "format": data.scene.format,
        "scene_type": data.scene.scene_type,
        "space": recon_config(ctx.config, data.scene).field.space or "box",
        "size": [split.cameras.width, split.cameras.height],
        "train": split.names,
        "holdout": data.holdout.names if data.holdout is not None else [],
        "holdout_source": data.holdout_source,
        "train_sha256": _images_digest(split),
    }
    path = ctx.path / "views.json"
    with atomic_output(path) as tmp:
        tmp.write_text(json.dumps(record, indent=2))
    ctx.add_artifact(path, "views")
    ctx.log(f"{len(split)} training views at {split.cameras.width}x{split.cameras.height} from a "
            f"{data.scene.format} scene; held out: {len(record['holdout'])} ({data.holdout_source})")


def train(ctx: StageContext) -> None:
    cfg: Config = ctx.config
    data = scene_data(ctx)
    trainer = _trainer(cfg, data, ctx.stage_seed)
    total = cfg.recon.steps
    holdout = data.holdout
    if holdout is not None:
        holdout = subset(holdout, list(range(min(cfg.train.eval_views, len(holdout)))))
    for step in ctx.steps(total, every=cfg.train.checkpoint_every, state=trainer.state_dict,
                          restore=trainer.load_state_dict):
        stats = trainer.step()
        done = step + 1
        scores = {}
        if holdout is not None and (done % cfg.train.eval_every == 0 or done == total):
            result = trainer.evaluate(holdout.images, holdout.cameras)
            scores = {"psnr": result["psnr"], "ssim": result["ssim"]}
        if scores or done % cfg.train.log_every == 0 or done == total:
            ctx.event(done, total, loss=stats["loss"], train_psnr=stats["psnr"], **scores)
    ctx.add_artifact(ctx.run.checkpoint_path("train"), "checkpoint")
    _write_curve(ctx)
    ctx.shared["trainer"] = trainer


def _write_curve(ctx: StageContext) -> None:
    """Training curve without timings, so it is identical for a resumed run (events of redone
    steps repeat the same values; the last one per step wins)."""
    points = {e["step"]: e for e in read_events(ctx.path) if e["stage"] == "train" and "loss" in e}
    curve = [{k: points[s][k] for k in ("step", "loss", "train_psnr", "psnr", "ssim") if k in points[s]}
             for s in sorted(points)]
    path = ctx.path / "curve.json"
    with atomic_output(path) as tmp:
        tmp.write_text(json.dumps(curve))
    ctx.add_artifact(path, "curve")


def scored_views(cfg: Config, data: SceneData, log=None) -> Split:
    """The views the field and its mesh are scored on: held-out views (the first
    `evaluate.max_views`), else the training views."""
    views = data.holdout
    if views is None:
        if log is not None:
            log("no held-out views (no test split and every training frame used); scoring training views")
        views = data.train
    if cfg.evaluate.max_views is not None:
        views = subset(views, list(range(min(cfg.evaluate.max_views, len(views)))))
    return views


def scoring_views(cfg: Config, data: SceneData, trainer: ReconTrainer) -> ScoringViews:
    """The scored views as the export compares with them: images on the evaluation background and
    the field's rendered opacity."""
    views = scored_views(cfg, data)
    background = trainer.eval_background()
    return ScoringViews(views.cameras, composite_onto(views.images.float(), background), tuple(background.tolist()),
                        trainer.render(views.cameras)["opacity"])


def evaluate(ctx: StageContext) -> None:
    data = scene_data(ctx)
    trainer = trained_engine(ctx)
    views = scored_views(ctx.config, data, ctx.log)
    result = trainer.evaluate(views.images, views.cameras)
    for i, rgb in enumerate(result["renders"]):
        path = ctx.path / "renders" / f"{i:03d}.png"
        save_png(rgb, path)
        ctx.add_artifact(path, "render", view=views.names[i])
    prefix = "" if data.holdout is not None else "train_"
    ctx.set_metrics(**{f"{prefix}psnr": round(result["psnr"], 4), f"{prefix}ssim": round(result["ssim"], 4)},
                    eval_views=len(views))
    ctx.event(message=f"{prefix}psnr {result['psnr']:.2f} dB, {prefix}ssim {result['ssim']:.3f} on {len(views)} views",
              psnr=result["psnr"], ssim=result["ssim"])


def photo_cameras(cfg: Config, data: SceneData) -> Cameras | None:
    """The training cameras, when the field's colour depends on the view: exports are coloured as
    those photos saw each point (export.texture)."""
    return data.train.cameras if recon_config(cfg, data.scene).field.view_dependent else None


def export_config(cfg: Config, scene: Scene) -> ExportConfig:
    """`cfg.export`, untextured for real captures unless `capture.texture`."""
    textured = cfg.export.texture and (not is_capture(scene.scene_type) or cfg.capture.texture)
    return dataclasses.replace(cfg.export, texture=textured)


def export(ctx: StageContext) -> None:
    trainer, data = trained_engine(ctx), scene_data(ctx)
    export_field(ctx, trainer.field, export_config(ctx.config, data.scene), scoring_views(ctx.config, data, trainer),
                 photo_cameras(ctx.config, data))


# --- estimates ---------------------------------------------------------------------------------

@dataclass
class SceneOutline:
    """What the estimates know of a scene before it is loaded: its metadata and one image header."""

    space: str = "box"
    pixels: int = NOMINAL_PIXELS
    scored_views: int = 10
    capture: bool = False  # a real capture (not a bounded object)


def scene_outline(cfg: Config, scene_path: str) -> SceneOutline:
    """The field's space, the image size and the number of scored views of the run's scene (the
    nominal outline when the scene cannot be read: loading it will say why)."""
    try:
        _, source = scan_scene(Path(scene_path), downscale=cfg.data.downscale,
                               allow_outside=cfg.data.allow_outside_scene)
        width, height = image_size(source.train.paths[0])
    except (UserError, OSError, ValueError):
        return SceneOutline()
    width, height = cfg.data.size or [max(1, round(v / source.train.factor)) for v in (width, height)]
    space = cfg.recon.field.space or (SPACE_FOR_SCENE[source.scene_type] if cfg.data.scene_bounds else "box")
    train = len(source.train.paths)
    held_out = len(source.test.paths) if source.test else max(train - (cfg.data.views or train), 0)
    scored = min(held_out or train, cfg.evaluate.max_views or held_out or train)
    return SceneOutline(space, width * height, scored, is_capture(source.scene_type))


def _ray_seconds(cfg: Config, outline: SceneOutline) -> tuple[int, float, float]:
    """Rays per training step, seconds per training ray and per rendered ray."""
    rays = cfg.capture.batch_rays if outline.capture else cfg.recon.batch_rays
    if outline.space == "ndc":
        steps = cfg.recon.render.disparity_steps
        return rays, steps * SECONDS_PER_NDC_TRAIN_SAMPLE, steps * SECONDS_PER_NDC_RENDER_SAMPLE
    return rays, SECONDS_PER_TRAIN_RAY, SECONDS_PER_RENDER_RAY


def estimate_train(job: Job) -> float:
    cfg: Config = job.config
    outline = scene_outline(cfg, job.inputs["scene"])
    rays, train_ray, render_ray = _ray_seconds(cfg, outline)
    evals = cfg.recon.steps // max(cfg.train.eval_every, 1) + 1
    return (cfg.recon.steps * rays * train_ray
            + evals * min(cfg.train.eval_views, outline.scored_views) * outline.pixels * render_ray)


def estimate_evaluate(job: Job) -> float:
    cfg: Config = job.config
    outline = scene_outline(cfg, job.inputs["scene"])
    return outline.scored_views * outline.pixels * _ray_seconds(cfg, outline)[2]


def estimate_export(job: Job) -> float:
    cfg: Config = job.config
    outline = scene_outline(cfg, job.inputs["scene"])
    textured = cfg.export.texture and (not outline.capture or cfg.capture.texture)
    return estimate_export_seconds(dataclasses.replace(cfg.export, texture=textured),
                                   outline.scored_views * outline.pixels)


def build_job(config: Config, inputs: dict, seed: int) -> Job:
    return Job(kind=KIND, config=config, inputs=inputs, seed=seed, slug=Path(inputs["scene"]).name, stages=[
        Stage("load", load, lambda job: 1.0),
        Stage("train", train, estimate_train),
        Stage("evaluate", evaluate, estimate_evaluate),
        Stage("export", export, estimate_export),
    ])


def export_mesh(run: RunFolder, fmt: str, resolution: int | None, config_type: type[Config] = Config) -> Path:
    """`gen3d export`: a mesh from the run's trained field, e.g. at a finer grid; recorded in the
    manifest. `config_type`: the run's config class (pipelines extending this one pass theirs)."""
    cfg = from_dict(config_type, run.manifest["config"])
    ckpt = load_checkpoint(run.checkpoint_path("train"))
    if ckpt is None:
        raise UserError(f"{run.checkpoint_path('train')}: missing; the run has not finished training")
    data = load_data(cfg, run.manifest["inputs"]["scene"])
    trainer = restored_trainer(cfg, data, ckpt.state)
    resolution = resolution or cfg.export.resolution
    export_cfg = export_config(cfg, data.scene)
    asset = field_asset(trainer.field, export_cfg, resolution, scoring_views(cfg, data, trainer),
                        texture=export_cfg.texture and fmt == "glb", photo_cameras=photo_cameras(cfg, data))
    return write_export(run, asset, fmt, run.path / "export" / f"mesh-{resolution}.{fmt}", resolution=resolution)
