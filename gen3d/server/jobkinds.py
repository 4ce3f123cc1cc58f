"""The job kinds the server queues: their form options (generated from the declarations in
`gen3d.pipelines.kinds`, plus `resume`), how each option is checked, and the `gen3d` command line a
worker runs for each.

Options are checked here, when a job is submitted, so bad input is a 400 naming the field rather than a
job that fails later. The CLI still validates everything again (config keys, scene contents) when it runs.
`GET /api/kinds` publishes these specs and the viewer builds its job forms from them.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from gen3d.config import SEED_RANGE
from gen3d.errors import UserError
from gen3d.io import slugify
from gen3d.models.prior import PRIORS
from gen3d.pipelines.kinds import KINDS, JobKind, Param
from gen3d.server import runs
from gen3d.server.uploads import Upload, check_image_bytes, check_image_file

SCENE_MARKERS = ("transforms.json", "transforms_train.json", "poses_bounds.npy")
MAX_OVERRIDES = 32
_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")
_OVERRIDE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]*=[^\r\n]*$")


@dataclass(frozen=True)
class Option:
    """One job option. `type` is a checker name in `_CHECKERS` (plain values or server-side paths)."""

    name: str
    type: str
    help: str
    required: bool = False
    default: object = None
    low: float | None = None
    high: float | None = None
    max_len: int = 300


@dataclass(frozen=True)
class FormKind:
    """A kind of job the server offers; its name is also the `gen3d` subcommand that runs it."""

    name: str
    title: str
    help: str
    options: tuple[Option, ...]
    # (checked options, run folder) -> arguments after `python -m gen3d.cli`
    argv: Callable[[dict, Path], list[str]] = field(repr=False)
    # option whose value names the run folder (prompt, image, scene); None: the kind's name
    slug_from: str | None = None
    # a job that continues an existing run folder instead of creating one
    reuses_run: bool = False

    def spec(self, available: bool) -> dict:
        """The JSON description served by `GET /api/kinds`."""
        return {"name": self.name, "title": self.title, "help": self.help, "available": available,
                "options": [asdict(o) for o in self.options]}


@dataclass(frozen=True)
class CheckContext:
    """Where options are checked: relative paths start at `cwd`; files must lie inside `roots`."""

    runs_dir: Path
    cwd: Path
    roots: tuple[Path, ...] = ()


def _fail(option: Option, problem: str) -> UserError:
    return UserError(f"options.{option.name}: {problem}")


def _check_str(option: Option, value, ctx: CheckContext) -> str:
    if not isinstance(value, str) or not value.strip():
        raise _fail(option, "must be a non-empty string")
    if len(value) > option.max_len or any(ch in value for ch in "\x00\r\n"):
        raise _fail(option, f"must be one line of at most {option.max_len} characters")
    return value.strip()


def _check_name(option: Option, value, ctx: CheckContext) -> str:
    if not isinstance(value, str) or not _NAME.match(value):
        raise _fail(option, "must be a name of lower-case letters, digits, '.', '_' or '-'")
    if option.name == "prior" and value not in PRIORS:  # the one name with a registry to check it against
        raise _fail(option, f"unknown prior '{value}'; valid: {', '.join(PRIORS)}")
    return value


def _plain(number: float) -> str:
    return str(int(number)) if float(number).is_integer() else f"{number:g}"


def _number_in_range(option: Option, value: float) -> None:
    if (option.low is not None and value < option.low) or (option.high is not None and value > option.high):
        raise _fail(option, f"must be between {_plain(option.low)} and {_plain(option.high)}")


def _check_int(option: Option, value, ctx: CheckContext) -> int:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, str) and re.fullmatch(r"-?\d{1,12}", value.strip()):
        value = int(value)  # form fields arrive as text
    if isinstance(value, bool) or not isinstance(value, int):
        raise _fail(option, "must be an integer")
    _number_in_range(option, value)
    return value


def _check_float(option: Option, value, ctx: CheckContext) -> float:
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise _fail(option, "must be a number") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise _fail(option, "must be a finite number")
    _number_in_range(option, float(value))
    return float(value)


def _check_bool(option: Option, value, ctx: CheckContext) -> bool:
    if isinstance(value, str) and value.lower() in ("true", "false", "on", "off", "1", "0"):
        return value.lower() in ("true", "on", "1")
    if not isinstance(value, bool):
        raise _fail(option, "must be true or false")
    return value


def _check_overrides(option: Option, value, ctx: CheckContext) -> list[str]:
    if isinstance(value, str):  # a form's text area: one override a line
        value = [line.strip() for line in value.splitlines() if line.strip()]
    if not isinstance(value, list) or len(value) > MAX_OVERRIDES:
        raise _fail(option, f"must be a list of at most {MAX_OVERRIDES} 'key.sub=value' strings")
    for item in value:
        if not isinstance(item, str) or len(item) > option.max_len or not _OVERRIDE.match(item):
            raise _fail(option, f"{str(item)[:60]!r} is not of the form key.sub=value")
        setting = item.split("=", 1)[1].strip().strip("'\"")
        if "/" in setting or "\\" in setting or setting.startswith("~"):  # a config key naming a file
            _confine(option, _resolve(option, setting, ctx), setting, ctx)
    return value


def _resolve(option: Option, text: str, ctx: CheckContext) -> Path:
    try:
        path = Path(text).expanduser()
        return (path if path.is_absolute() else ctx.cwd / path).resolve()
    except (RuntimeError, ValueError, OSError):  # an unknown ~user, a NUL byte, a symlink loop
        raise _fail(option, f"{text[:200]!r} is not a usable path") from None


def _confine(option: Option, path: Path, given: str, ctx: CheckContext) -> None:
    """Job options may name only files inside the runs folder (uploads included), the bundled configs and
    the folders the operator allowed (`gen3d serve --allow-path`); symlinks are resolved first."""
    if not any(path.is_relative_to(root) for root in ctx.roots):
        raise _fail(option, f"{given[:200]} is outside the folders this server may read "
                            f"(the runs folder and the bundled configs; `gen3d serve --allow-path DIR` adds one)")


def _server_path(option: Option, value, ctx: CheckContext) -> Path:
    text = _check_str(option, value, ctx)
    path = _resolve(option, text, ctx)
    _confine(option, path, text, ctx)
    return path


def _check_scene(option: Option, value, ctx: CheckContext) -> str:
    path = _server_path(option, value, ctx)
    if not path.is_dir():
        raise _fail(option, f"{value} is not a folder on the server")
    if not any((path / marker).is_file() for marker in SCENE_MARKERS):
        raise _fail(option, f"{value} is not a scene folder (looked for {', '.join(SCENE_MARKERS)})")
    return str(path)


def _check_yaml(option: Option, value, ctx: CheckContext) -> str:
    path = _server_path(option, value, ctx)
    if path.suffix not in (".yaml", ".yml") or not path.is_file():
        raise _fail(option, f"{value} is not a YAML file on the server")
    return str(path)


def _check_image(option: Option, value, ctx: CheckContext) -> str | Upload:
    """An upload (stored by the caller once every option has passed) or an image file on the server."""
    if isinstance(value, Upload):
        check_image_bytes(value.data, f"options.{option.name}")
        return value
    path = _server_path(option, value, ctx)
    check_image_file(path, f"options.{option.name}")
    return str(path)


def _check_run(option: Option, value, ctx: CheckContext) -> str:
    if not isinstance(value, str) or not runs.is_run_id(value):
        raise _fail(option, "must be the id of a run folder")
    try:
        status = runs.read_manifest(runs.run_dir(ctx.runs_dir, value)).get("status")
    except runs.RunNotFound:
        raise _fail(option, f"no run '{value}' in {ctx.runs_dir}") from None
    except UserError as exc:
        raise _fail(option, str(exc)) from None
    if status == "done":  # as `gen3d resume` would say, but before a job is queued
        raise _fail(option, f"run '{value}' is already done; nothing to resume")
    return value


_CHECKERS: dict[str, Callable] = {
    "str": _check_str, "name": _check_name, "int": _check_int, "float": _check_float, "bool": _check_bool,
    "overrides": _check_overrides, "scene": _check_scene, "yaml": _check_yaml, "image": _check_image,
    "run": _check_run,
}

_SEED = Option("seed", "int", "Seed for every random choice.", default=0, low=SEED_RANGE[0], high=SEED_RANGE[1])
_CONFIG = Option("config", "yaml", "YAML config on the server, e.g. configs/ci/reconstruct.yaml.")
_SET = Option("set", "overrides", "Config overrides, one key.sub=value a line.", default=())


def _form_option(param: Param) -> Option:
    return Option(param.name, param.form, param.help, required=param.argument or param.required,
                  default=param.default, low=param.low, high=param.high)


def _argv(kind: JobKind) -> Callable[[dict, Path], list[str]]:
    """`<kind> [options] --out RUN_DIR [-- INPUT]`; the `--` keeps a prompt like '-x' from parsing as a flag."""
    flagged = [p for p in kind.params if p.form and not p.argument]

    def argv(opts: dict, run_dir: Path) -> list[str]:
        args = [kind.name]
        for param in flagged:
            value = opts.get(param.name)
            if param.type is bool:
                args += [param.flag] if value else []
            elif value is not None:
                args += [param.flag, str(value)]
        args += ["--seed", str(opts["seed"])]
        if opts.get("config") is not None:
            args += ["--config", str(opts["config"])]
        for item in opts.get("set", ()):
            args += ["--set", item]
        args += ["--out", str(run_dir)]
        return args + (["--", str(opts[kind.argument.name])] if kind.argument else [])

    return argv


def _form_kind(kind: JobKind) -> FormKind:
    options = tuple(_form_option(p) for p in kind.params if p.form) + (_SEED,)
    return FormKind(kind.name, kind.title, kind.summary, options + ((_CONFIG, _SET) if kind.form_config else ()),
                    _argv(kind), slug_from=kind.argument.name if kind.argument else None)


_RESUME = FormKind("resume", "Resume a run", "Continue an interrupted run from its last checkpoint.",
                   (Option("run", "run", "Id of the interrupted run.", required=True),),
                   lambda opts, run_dir: ["resume", str(run_dir)], slug_from="run", reuses_run=True)

JOB_KINDS: dict[str, FormKind] = {k.name: k for k in [_form_kind(kind) for kind in KINDS.values() if kind.form]
                                  + [_RESUME]}


def check_options(kind: FormKind, raw: dict, ctx: CheckContext) -> dict:
    """Validated options with defaults filled in; `UserError` naming the field otherwise."""
    if not isinstance(raw, dict):
        raise UserError("options: must be a JSON object")
    known = {o.name for o in kind.options}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise UserError(f"options.{unknown[0]}: unknown option for '{kind.name}'; valid: {', '.join(sorted(known))}")
    checked = {}
    for option in kind.options:
        value = raw.get(option.name)
        if value is None or value == "":
            if option.required:
                raise _fail(option, "is required")
            checked[option.name] = option.default
        else:
            checked[option.name] = _CHECKERS[option.type](option, value, ctx)
    return checked


def run_id_for(kind: FormKind, opts: dict, job_id: int, now: float | None = None) -> str:
    """`<YYYYmmdd-HHMMSS>-<kind>-<slug>-j<job id>` as in the conventions; the job id keeps names unique."""
    if kind.reuses_run:
        return opts[kind.slug_from]
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(now))
    if kind.slug_from is None:
        return f"{stamp}-{kind.name}-j{job_id}"
    source = str(opts[kind.slug_from])
    if kind.slug_from in ("image", "scene"):
        source = Path(source).stem if kind.slug_from == "image" else Path(source).name
    return f"{stamp}-{kind.name}-{slugify(source)}-j{job_id}"
