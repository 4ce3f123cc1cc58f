"""One `gen3d` command per job kind, generated from its declaration (`gen3d.pipelines.kinds`):
the kind's argument and options, then the options every job takes (--device, --precision, --config,
--set, --seed, --out, --dry-run)."""

from __future__ import annotations

import inspect
from typing import Annotated, Optional

import typer

from gen3d.cli import app
from gen3d.commands.jobs import launch_pipeline
from gen3d.commands.options import ConfigOpt, DryRunOpt, OutOpt, SeedOpt, SetOpt
from gen3d.pipelines.kinds import KINDS, JobKind, Param, split_values

COMMON = {"config": (ConfigOpt, None), "set_": (SetOpt, None), "seed": (SeedOpt, 0), "out": (OutOpt, None),
          "dry": (DryRunOpt, False)}


def _parameter(param: Param) -> inspect.Parameter:
    """The typer parameter of one declared input or option."""
    if param.argument:
        annotation, default = Annotated[param.type, typer.Argument(help=param.help)], inspect.Parameter.empty
    elif param.required:
        annotation, default = Annotated[param.type, typer.Option(param.flag, help=param.help)], inspect.Parameter.empty
    elif param.type is bool:
        annotation, default = Annotated[bool, typer.Option(param.flag, help=param.help)], False
    else:
        annotation, default = Annotated[Optional[param.type], typer.Option(param.flag, help=param.help)], None
    return inspect.Parameter(param.name, inspect.Parameter.KEYWORD_ONLY, annotation=annotation, default=default)


def _command(kind: JobKind):
    def command(**values) -> None:
        pipeline = kind.route(values) if kind.route is not None else kind.name
        inputs, flags = split_values(kind, values)
        launch_pipeline(pipeline, inputs, config=values["config"], overrides=values["set_"], flags=flags,
                        seed=values["seed"], out=values["out"], dry=values["dry"])

    parameters = [_parameter(p) for p in kind.options] + [
        inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=annotation, default=default)
        for name, (annotation, default) in COMMON.items()]
    command.__signature__ = inspect.Signature(parameters)
    command.__annotations__ = {p.name: p.annotation for p in parameters}
    command.__doc__ = kind.help
    command.__name__ = kind.name.replace("-", "_")
    return command


for _kind in KINDS.values():
    if _kind.command:
        app.command(_kind.name, hidden=_kind.hidden)(_command(_kind))
