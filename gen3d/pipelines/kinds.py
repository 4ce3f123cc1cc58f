"""Every job kind, declared once: its pipeline module, its inputs and options, the config key each
option sets, and which options the server's job form offers.

The `gen3d` command of each kind (`gen3d.commands.kinds`, with `JOB_PARAMS`: --device, --precision)
and the server's job forms and command lines (`gen3d.server.jobkinds`) are generated from these declarations, and `gen3d resume` finds a
run's pipeline through them, so a new kind is one entry here plus its pipeline module.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from gen3d.data.readers import detect
from gen3d.errors import UserError


@dataclass(frozen=True)
class Param:
    """One input or option of a job kind.

    `key` is the config key the option sets (`--steps 50` -> `recon.steps=50`); without one the
    value is one of the job's inputs (prompt, image, scene). `form` is the server form's checker
    for it (see `gen3d.server.jobkinds`); None keeps it off the form.
    """

    name: str
    type: type
    help: str
    key: str | None = None
    argument: bool = False  # the positional input of the command
    required: bool = False
    form: str | None = None
    default: object = None  # the form's default (the command's is None: the config decides)
    low: float | None = None
    high: float | None = None

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")


@dataclass(frozen=True)
class JobKind:
    """A kind of job; its name is the `gen3d` subcommand and the run folders' kind."""

    name: str
    title: str  # the server form's title
    summary: str  # the server form's one-line help
    help: str  # the command's help
    params: tuple[Param, ...] = ()
    module: str = ""  # the pipeline module (default: gen3d.pipelines.<name with underscores>)
    command: bool = True  # False: a kind only other commands start (train, reconstruct-prior)
    hidden: bool = False
    form: bool = True  # offered by the server
    form_config: bool = True  # the form takes --config and --set
    # (raw option values) -> the pipeline kind to run; checks inputs before any run folder exists
    route: Callable[[dict], str] | None = None

    @property
    def pipeline(self) -> str:
        return self.module or f"gen3d.pipelines.{self.name.replace('-', '_')}"

    @property
    def argument(self) -> Param | None:
        return next((p for p in self.params if p.argument), None)

    @property
    def options(self) -> tuple[Param, ...]:
        """The kind's own inputs and options, then those every job takes (`JOB_PARAMS`)."""
        return self.params + JOB_PARAMS


def _reconstruct_route(values: dict) -> str:
    """Plain engine, or few-view with a prior (`--prior`)."""
    detect(values["scene"])  # a missing or unrecognised scene folder fails here, before anything is written
    if values["prior_mode"] is not None and values["prior"] is None:
        raise UserError("--prior-mode needs --prior NAME (the prior the mode uses)")
    return "reconstruct" if values["prior"] is None else "reconstruct-prior"


#: options every job command takes, checked and resolved once by the runner (gen3d.device)
JOB_PARAMS = (
    Param("device", str, "auto (CUDA when available), cpu, cuda or cuda:N.", key="device"),
    Param("precision", str, "fp32, fp16 or bf16 (default: fp16 for real priors on CUDA, else fp32).",
          key="precision"),
)
_IMAGE = Param("image", Path, "PNG or JPEG of one object (transparent or plain background).", argument=True,
               form="image")
_MASK = Param("mask", Path, "Foreground mask image (white or opaque = object).")
_ELEVATION = Param("elevation", float, "Camera elevation of the photo in degrees (default 15).", key="elevation")
_MODEL_PATH = Param("model_path", Path, "Folder of a real checkpoint (for sd, zero123, mvdream).", key="model_path")
_METHOD_3D = Param("method", str, "mv-recon (default), sds or vsd.", key="method", form="name")
_PRIOR_3D = Param("prior", str, "Prior name (default: the bundled shapeworld-mv).", key="prior", form="name")
_PRIOR_4D = Param("prior", str, "Prior name (default: the bundled shapeworld-4d).", key="prior")
_FRAMES = Param("frames", int, "Frames of the clip (default 8).", key="grid.frames")

KINDS: dict[str, JobKind] = {k.name: k for k in (
    JobKind("text-to-3d", "Text to 3D", "A 3D object from a text prompt.",
            "Generate a 3D object from text: views from the multi-view prior fitted by the reconstruction\n"
            "engine (mv-recon), or a field distilled through the prior (sds, vsd).",
            (Param("prompt", str, "What to make, e.g. \"a red sphere\".", argument=True, form="str"),
             _METHOD_3D, _PRIOR_3D, _MODEL_PATH)),
    JobKind("image-to-3d", "Image to 3D", "A 3D object from one image (PNG, JPEG or WebP upload).",
            "Make a 3D object from one image: the prior generates views around it (nv-recon) and the\n"
            "reconstruction engine fits them together with the photo.",
            (_IMAGE, _MASK, _ELEVATION, _METHOD_3D, _PRIOR_3D, _MODEL_PATH)),
    JobKind("text-to-4d", "Text to 4D", "An animated 3D object (one mesh per frame) from a text prompt.",
            "Generate a dynamic 3D object from text: the 4D prior's camera x time grid of views, fitted by a\n"
            "space-time field (or a space-time field distilled through the prior: --method sds); one GLB per\n"
            "frame and a turntable while it plays.",
            (Param("prompt", str, "A moving object, e.g. \"a red sphere bouncing\".", argument=True, form="str"),
             _FRAMES, Param("method", str, "mv-recon (default: generate the grid, fit) or sds.", key="method"),
             _PRIOR_4D, _MODEL_PATH)),
    JobKind("image-to-4d", "Image to 4D", "An animated 3D object from one image and a caption of its motion.",
            "Animate the object of one photo: the 4D prior generates the grid conditioned on the photo (time 0)\n"
            "and the caption's motion, and a space-time field is fitted to both.",
            (_IMAGE, _MASK, Param("prompt", str, "How it moves, e.g. \"a red sphere bouncing\".", required=True,
                                  form="str"),
             _ELEVATION, _FRAMES, _PRIOR_4D, _MODEL_PATH)),
    JobKind("reconstruct", "Few-view reconstruction", "Fit a field to posed photos, then export a mesh.",
            "Fit a radiance field to a posed scene, evaluate it on held-out views and export a mesh.",
            (Param("scene", Path, "Scene folder: transforms.json, transforms_train.json or poses_bounds.npy.",
                   argument=True, form="scene"),
             Param("views", int, "Train on K views (farthest-point sampling).", key="data.views", form="int",
                   low=1, high=10000),
             Param("steps", int, "Training steps.", key="recon.steps", form="int", low=1, high=10_000_000),
             Param("prior", str, "Few-view: a prior filling in unseen sides (e.g. shapeworld-mv).", key="prior.name"),
             Param("prior_mode", str, "With --prior: cat3d (generated views at new cameras, default) or reconfusion "
                   "(a score-distillation regulariser at random new cameras).", key="prior.mode")),
            route=_reconstruct_route),
    JobKind("reconstruct-prior", "", "", "", module="gen3d.pipelines.fewview", command=False, form=False),
    JobKind("selftest", "Self-test", "A few seconds of fake training that checks the queue, the worker and "
            "progress streaming; it trains nothing.",
            "A few seconds of fake training through the real job runner; checks `gen3d serve`'s queue "
            "(trains nothing).",
            (Param("steps", int, "Fake training steps.", key="steps", form="int", default=20, low=1, high=500),
             Param("step_seconds", float, "Seconds per fake step.", key="step_seconds", form="float", default=0.05,
                   low=0.0, high=5.0),
             Param("fail", bool, "Fail at the last step.", key="fail", form="bool", default=False)),
            hidden=True, form_config=False),
    JobKind("train", "", "", "", module="gen3d.training.pipeline", command=False, form=False),
)}


def job_kind(name: str) -> JobKind:
    if name not in KINDS:
        raise UserError(f"unknown job kind '{name}'; known kinds: {', '.join(sorted(KINDS))}")
    return KINDS[name]


def pipeline_module(kind: str) -> ModuleType:
    """The pipeline module of `kind`: its `Config` and `build_job(config, inputs, seed)`."""
    return importlib.import_module(job_kind(kind).pipeline)


def split_values(kind: JobKind, values: dict) -> tuple[dict, dict]:
    """A command's option values as the job's inputs (paths made absolute, so a resumed run finds
    them from any directory) and its config overrides by key (unset options and false flags left out)."""
    inputs, flags = {}, {}
    for param in kind.options:
        value = values.get(param.name)
        if param.key is None:
            inputs[param.name] = absolute(value, param.flag) if isinstance(value, Path) else value
        elif value is not None and value is not False:
            flags[param.key] = value
    return inputs, flags


def job_overrides(overrides: list[str] | None, **flags) -> list[str]:
    """`--set` items followed by dedicated flags (`--steps 50` -> `recon.steps=50`), which win;
    path flags are made absolute, so a resumed run finds them from any directory."""
    return list(overrides or []) + [f"{key}={absolute(value, key) if isinstance(value, Path) else value}"
                                    for key, value in flags.items() if value is not None]


def absolute(path: Path, where: str) -> str:
    """`path` resolved, or a UserError naming it and `where` (a symlink loop cannot be resolved)."""
    try:
        return str(path.resolve())
    except (RuntimeError, OSError):  # Python < 3.13 raises RuntimeError on a loop
        raise UserError(f"{path}: {where} is a symlink loop") from None
