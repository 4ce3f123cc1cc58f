"""Batch job specs: read a JOBS file (YAML, JSONL or a plain list of prompts), expand its sweep, and
validate every job completely (kind, options, config keys, inputs) before the first one starts.

A job spec names its kind and the kind's own inputs and options as declared in
`gen3d.pipelines.kinds` (`prompt`, `method`, `steps`, ...), plus `config`, `set` and `seed`, the
options every job command takes. Errors name the file and line: `jobs.yaml:12: ...`.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from gen3d.config import ConfigLoader, check_seed, load_config
from gen3d.errors import UserError
from gen3d.io import slugify
from gen3d.pipelines.kinds import KINDS, JobKind, job_kind, job_overrides, pipeline_module, split_values
from gen3d.runs import Job
from gen3d.runs.validate import validate_job

DEFAULT_KIND = "text-to-3d"
COMMON_KEYS = ("kind", "config", "set", "seed")


@dataclass(frozen=True)
class JobSpec:
    """One job of a batch, as written in the JOBS file (JSON-able; `line` says where)."""

    kind: str
    values: dict  # the kind's inputs and options by parameter name
    config: str | None = None
    overrides: tuple[str, ...] = ()
    seed: int = 0
    line: int = 0

    def to_json(self) -> dict:
        return {"kind": self.kind, **self.values, "config": self.config, "set": list(self.overrides),
                "seed": self.seed}

    @property
    def slug(self) -> str:
        argument = job_kind(self.kind).argument
        source = str(self.values.get(argument.name) or "") if argument else ""
        return slugify(Path(source).stem if argument and argument.type is Path else source, 24, self.kind)


@dataclass
class Defaults:
    """What `gen3d batch` options and the file's `defaults:` give every job."""

    kind: str = DEFAULT_KIND
    config: str | None = None
    overrides: list[str] = field(default_factory=list)
    seed: int = 0
    values: dict = field(default_factory=dict)  # options of the kind (a file's `defaults:` may set them)


class _Located(dict):
    """A YAML mapping that remembers its line."""

    line = 0


class _LineLoader(ConfigLoader):  # configs' YAML: 1e-3 is a number
    pass


def _construct_located(loader: _LineLoader, node: yaml.MappingNode) -> _Located:
    mapping = _Located(loader.construct_mapping(node, deep=True))
    mapping.line = node.start_mark.line + 1
    return mapping


_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_located)


def _set_items(raw, where: str) -> list[str]:
    """`set:` as a list of `key=value` items or a mapping of key -> value."""
    if isinstance(raw, dict):
        return [f"{k}={json.dumps(v) if isinstance(v, (list, dict)) else v}" for k, v in raw.items()]
    if isinstance(raw, list) and all(isinstance(item, str) for item in raw):
        return list(raw)
    raise UserError(f"{where}: 'set' must be a list of key=value items or a mapping")


def _coerce(param, value, where: str):
    if param.type is bool and isinstance(value, bool):
        return value
    if param.type in (int, float) and isinstance(value, (int, float)) and not isinstance(value, bool):
        if param.type is int and value != int(value):
            raise UserError(f"{where}: '{param.name}' must be an integer, got {value!r}")
        return param.type(value)
    if param.type in (str, Path) and isinstance(value, (str, int, float)) and not isinstance(value, bool):
        return str(Path(str(value)).resolve()) if param.type is Path else str(value)
    raise UserError(f"{where}: '{param.name}' must be {param.type.__name__}, got {value!r}")


def _command_kind(name: str, where: str) -> JobKind:
    """A kind that has its own command (not `train`, which runs under torchrun, nor internal kinds)."""
    if name not in KINDS or not KINDS[name].command:
        valid = ", ".join(sorted(k for k, kind in KINDS.items() if kind.command))
        raise UserError(f"{where}: unknown job kind '{name}'; batch jobs may be: {valid}")
    return KINDS[name]


def _spec(entry, line: int, where: str, defaults: Defaults) -> JobSpec:
    if not isinstance(entry, dict):
        raise UserError(f"{where}: a job must be a mapping of options, got {entry!r}")
    kind = _command_kind(str(entry.get("kind", defaults.kind)), where)
    names = {p.name: p for p in kind.params}
    unknown = sorted(set(entry) - set(names) - set(COMMON_KEYS))
    if unknown:
        raise UserError(f"{where}: unknown key '{unknown[0]}' for '{kind.name}'; valid: "
                        f"{', '.join(sorted(names) + list(COMMON_KEYS))}")
    given = {k: v for k, v in defaults.values.items() if k in names}
    given.update({k: entry[k] for k in names if entry.get(k) is not None})
    values = {name: _coerce(names[name], value, where) for name, value in given.items()}
    seed = check_seed(entry.get("seed", defaults.seed), f"{where}: 'seed'")
    config = entry.get("config", defaults.config)
    if config is not None and not isinstance(config, str):
        raise UserError(f"{where}: 'config' must be the path of a YAML file, got {config!r}")
    overrides = defaults.overrides + _set_items(entry.get("set", []), where)
    return JobSpec(kind.name, values, None if config is None else str(Path(config).resolve()), tuple(overrides),
                   seed, line)


def _sweep(raw, line: int, where: str, defaults: Defaults) -> list[JobSpec]:
    """Every combination of the list-valued keys (and of the lists under `set:`), in file order."""
    if not isinstance(raw, dict):
        raise UserError(f"{where}: 'sweep' must be a mapping")
    sets = raw.get("set") or {}
    if not isinstance(sets, dict):
        raise UserError(f"{where}: a sweep's 'set' must map config keys to lists of values")
    axes = [(k, v) for k, v in raw.items() if k != "set"] + [(("set", k), v) for k, v in sets.items()]
    lists = [v if isinstance(v, list) else [v] for _, v in axes]
    specs = []
    for combo in itertools.product(*lists):
        entry, sets = {}, {}
        for (key, _), value in zip(axes, combo):
            if isinstance(key, tuple):
                sets[key[1]] = value
            else:
                entry[key] = value
        specs.append(_spec({**entry, "set": sets}, line, where, defaults))
    return specs


def _from_yaml(path: Path, text: str, defaults: Defaults) -> list[JobSpec]:
    try:
        doc = yaml.load(text, Loader=_LineLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise UserError(f"{path}:{mark.line + 1 if mark else 1}: not valid YAML ({getattr(exc, 'problem', exc)})") from None
    if isinstance(doc, list):
        doc = {"jobs": doc}
    if not isinstance(doc, dict) or not set(doc) <= {"defaults", "jobs", "sweep"} or not doc:
        raise UserError(f"{path}: expected a list of jobs or a mapping with 'jobs', 'sweep' and 'defaults'")
    if "defaults" in doc:
        base = _spec(doc["defaults"], 0, f"{path}:{getattr(doc['defaults'], 'line', 1)}", defaults)
        defaults = Defaults(base.kind, base.config, list(base.overrides), base.seed, base.values)
    specs = []
    for entry in doc.get("jobs") or []:
        line = getattr(entry, "line", 0)
        specs.append(_spec(entry, line, f"{path}:{line}", defaults))
    if "sweep" in doc:
        line = getattr(doc["sweep"], "line", 1)
        specs += _sweep(doc["sweep"], line, f"{path}:{line}", defaults)
    return specs


def _from_lines(path: Path, text: str, defaults: Defaults, jsonl: bool) -> list[JobSpec]:
    """JSONL (one job object a line) or plain text (one prompt a line); blank and # lines skipped."""
    specs = []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        where = f"{path}:{number}"
        if jsonl:
            try:
                entry = json.loads(line)
            except json.JSONDecodeError as exc:
                raise UserError(f"{where}: not valid JSON ({exc.msg})") from None
        else:
            entry = {"prompt": line}
        specs.append(_spec(entry, number, where, defaults))
    return specs


def read_specs(path: Path, defaults: Defaults | None = None) -> list[JobSpec]:
    """The jobs of a JOBS file, each validated (`validate`); a UserError names the file and line."""
    path = Path(path)
    defaults = defaults or Defaults()
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: cannot read the jobs file ({exc})") from None
    if path.suffix in (".yaml", ".yml"):
        specs = _from_yaml(path, text, defaults)
    else:
        specs = _from_lines(path, text, defaults, jsonl=path.suffix in (".jsonl", ".json"))
    if not specs:
        raise UserError(f"{path}: no jobs")
    for spec in specs:
        validate(spec, f"{path}:{spec.line}")
    return specs


def spec_from_json(data: dict) -> JobSpec:
    """The inverse of `JobSpec.to_json` (batch.json and the workers' tasks carry specs as JSON)."""
    values = {k: v for k, v in data.items() if k not in COMMON_KEYS}
    return JobSpec(data["kind"], values, data.get("config"), tuple(data.get("set") or ()), int(data["seed"]))


def build_job(spec: JobSpec) -> Job:
    """The runnable job of a spec, exactly as the kind's own command builds it."""
    kind: JobKind = KINDS[spec.kind]
    values = {}
    for param in kind.params:
        value = spec.values.get(param.name)
        if value is None and (param.argument or param.required):
            raise UserError(f"'{param.name}' is required for '{kind.name}'")
        values[param.name] = Path(value) if value is not None and param.type is Path else value
    pipeline = kind.route(values) if kind.route is not None else kind.name
    inputs, flags = split_values(kind, values)
    module = pipeline_module(pipeline)
    config = load_config(module.Config, None if spec.config is None else Path(spec.config),
                         job_overrides(list(spec.overrides), **flags))
    return module.build_job(config, inputs, spec.seed)


def validate(spec: JobSpec, where: str) -> Job:
    """Build the job (checks inputs, options and every config key) or fail naming `where`."""
    try:
        job = build_job(spec)
        validate_job(job, new_run=False)  # the same pass a job's own command runs
        return job
    except UserError as exc:
        raise UserError(f"{where}: {exc}") from None
