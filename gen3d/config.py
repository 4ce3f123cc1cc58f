"""Typed configs: dataclasses filled from YAML and `--set key.sub=value` overrides.

Unknown keys are errors that list the valid keys at that level, so a typo never silently
falls back to a default. No number may be NaN, and a field declared with `ranged` must lie in its
range, so a bad value fails at load time with the key's name instead of deep inside a run.
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from gen3d.errors import UserError

T = TypeVar("T")

#: the seeds every job accepts, on the command line, in batch specs and through the server's API
SEED_RANGE = (0, 2**31 - 1)

# YAML 1.1 reads `1e-3` and `1e308` (no dot, or no exponent sign) as strings; they are numbers here.
_EXPONENT_FLOAT = re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$")


class ConfigLoader(yaml.SafeLoader):
    """YAML's safe loader, reading floats in exponent form as numbers."""


ConfigLoader.add_implicit_resolver("tag:yaml.org,2002:float", _EXPONENT_FLOAT, list("-+0123456789."))


def load_yaml_text(text: str) -> Any:
    """Parse YAML as configs are parsed everywhere (files, `--set` values, batch specs)."""
    return yaml.load(text, Loader=ConfigLoader)


def check_seed(seed: Any, where: str = "--seed") -> int:
    """`seed` as an int inside SEED_RANGE, or a UserError naming `where`."""
    low, high = SEED_RANGE
    if isinstance(seed, bool) or not isinstance(seed, int) or not low <= seed <= high:
        raise UserError(f"{where} must be an integer in [{low}, {high}], got {seed!r}")
    return seed


def ranged(default: Any, low: float | None = None, high: float | None = None) -> Any:
    """A dataclass field with `default` whose value must lie in [low, high] (None: open on that side)."""
    return dataclasses.field(default=default, metadata={"range": (low, high)})


def _check_range(value: Any, bounds: tuple[float | None, float | None], where: str) -> None:
    low, high = bounds
    if value is None:
        return
    if low is not None and value < low:
        raise UserError(f"config key '{where}' must be at least {low}, got {value!r}")
    if high is not None and value > high:
        raise UserError(f"config key '{where}' must be at most {high}, got {value!r}")


def _is_dataclass_type(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def _unwrap_optional(tp: Any) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return tp


def _type_name(tp: Any) -> str:
    if _is_dataclass_type(tp):
        return "a mapping of keys"
    names = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}
    return names.get(tp, "a list" if typing.get_origin(tp) in (list, tuple) else "a value")


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check and convert one YAML value to the annotated type (ints become floats, lists tuples)."""
    optional = _unwrap_optional(tp) is not tp or tp is Any
    tp = _unwrap_optional(tp)
    if value is None:
        if not optional:
            raise UserError(f"config key '{where}' must not be null (it takes {_type_name(tp)})")
        return None
    if _is_dataclass_type(tp):
        if not isinstance(value, dict):
            raise UserError(f"config key '{where}' must be a mapping, got {type(value).__name__}")
        return from_dict(tp, value, prefix=where + ".")
    origin = typing.get_origin(tp)
    if origin is typing.Literal:
        choices = typing.get_args(tp)
        if value not in choices:
            raise UserError(f"config key '{where}' must be one of {list(choices)}, got {value!r}")
        return value
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise UserError(f"config key '{where}' must be a list, got {value!r}")
        args = typing.get_args(tp)
        item_tp = args[0] if args else Any
        items = [_coerce(v, item_tp, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise UserError(f"config key '{where}' must be a mapping, got {value!r}")
        _check_finite(value, where)
        return dict(value)
    if tp is bool:
        if not isinstance(value, bool):
            raise UserError(f"config key '{where}' must be true or false, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise UserError(f"config key '{where}' must be a number, got {value!r}")
        _check_finite(value, where)
        return float(value)
    if tp is int:
        if isinstance(value, float) and math.isfinite(value) and value.is_integer():
            value = int(value)  # 1e3 written for an integer
        if isinstance(value, bool) or not isinstance(value, int):
            raise UserError(f"config key '{where}' must be an integer, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise UserError(f"config key '{where}' must be a string, got {value!r}")
        return str(value)
    _check_finite(value, where)
    return value


def _check_finite(value: Any, where: str) -> None:
    """No NaN or infinity anywhere in `value` (untyped values and mappings included)."""
    if isinstance(value, float) and not math.isfinite(value):
        raise UserError(f"config key '{where}' must be a finite number, got {value!r}")
    if isinstance(value, dict):
        for key, item in value.items():
            _check_finite(item, f"{where}.{key}")
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _check_finite(item, f"{where}[{i}]")


def from_dict(cls: type[T], data: dict, prefix: str = "") -> T:
    """Build dataclass `cls` from a nested dict, rejecting unknown keys."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise UserError(
            f"unknown config key '{prefix}{unknown[0]}'; valid keys at this level: {', '.join(sorted(fields))}"
        )
    kwargs = {name: _coerce(value, hints[name], prefix + name) for name, value in data.items()}
    for name, value in kwargs.items():
        if "range" in fields[name].metadata:
            _check_range(value, fields[name].metadata["range"], prefix + name)
    return cls(**kwargs)


def to_dict(cfg: Any) -> dict:
    """The resolved config as plain data (for manifests and `--dry-run`)."""
    return dataclasses.asdict(cfg)


def parse_override(item: str) -> tuple[list[str], Any]:
    """`a.b=1.5` -> (['a', 'b'], 1.5); the value is parsed as YAML so lists and bools work."""
    if "=" not in item:
        raise UserError(f"--set expects key=value, got '{item}'")
    key, raw = item.split("=", 1)
    if not key or any(not part for part in key.split(".")):
        raise UserError(f"--set has an empty key in '{item}'")
    try:
        value = load_yaml_text(raw) if raw != "" else ""
    except yaml.YAMLError:
        value = raw
    return key.split("."), value


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Merge `--set` overrides into a nested dict (validation happens in `from_dict`)."""
    for item in overrides:
        path, value = parse_override(item)
        node = data
        for part in path[:-1]:
            nxt = node.get(part)
            if not isinstance(nxt, dict):
                nxt = {}
                node[part] = nxt
            node = nxt
        node[path[-1]] = value
    return data


def read_yaml(path: Path) -> dict:
    """Read a YAML mapping, with a one-line error naming the file when it is not one."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{path}: is a folder, not a config file")
    if not path.is_file():
        raise UserError(f"config file not found: {path}")
    try:
        data = load_yaml_text(path.read_text(encoding="utf-8")) or {}
    except OSError as exc:
        raise UserError(f"{path}: cannot read the config file ({exc.strerror or type(exc).__name__})") from None
    except UnicodeDecodeError:
        raise UserError(f"{path}: not a text file (a YAML config is UTF-8 text)") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise UserError(f"{path}{where}: not valid YAML") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a mapping of config keys at the top level")
    return data


def _defaults_dict(cls: type) -> dict:
    return to_dict(cls())


def _deep_merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def load_config(cls: type[T], path: Path | None = None, overrides: list[str] | None = None) -> T:
    """Defaults of `cls`, then the YAML file, then `--set` overrides; every key validated."""
    data = _defaults_dict(cls)
    if path is not None:
        file_data = read_yaml(path)
        from_dict(cls, _deep_merge(data, file_data))  # validates the file's keys before overrides
        data = _deep_merge(data, file_data)
    data = apply_overrides(data, list(overrides or []))
    return from_dict(cls, data)
