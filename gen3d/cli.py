"""The `gen3d` console command.

Each area registers its subcommands on `app` from its own module under `gen3d/commands/`;
this file only owns the shared error handling (exit codes) and the global `--verbose`.
"""

from __future__ import annotations

import importlib
import sys

import typer

from gen3d.errors import UserError
from gen3d.io import printable

app = typer.Typer(
    name="gen3d",
    help="Text, image and few-view to 3D/4D with diffusion priors, on a plain CPU.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

_state = {"verbose": False}

# One module per area; each decorates functions with @app.command on import.
_COMMAND_MODULES = [
    "gen3d.commands.batch",
    "gen3d.commands.bench",
    "gen3d.commands.demo",
    "gen3d.commands.jobs",
    "gen3d.commands.kinds",
    "gen3d.commands.models",
    "gen3d.commands.serve",
    "gen3d.commands.train",
]


@app.callback()
def _root(verbose: bool = typer.Option(False, "--verbose", help="Show tracebacks on errors.")) -> None:
    _state["verbose"] = verbose


def register_commands() -> None:
    """Import every command module (each registers its commands on `app`); idempotent."""
    for name in _COMMAND_MODULES:
        importlib.import_module(name)


def _is_usage_error(exc: Exception) -> bool:
    """Usage errors from click or from typer's vendored copy of it (typer >= 0.29 ships its own)."""
    return any(cls.__name__ == "ClickException" for cls in type(exc).__mro__) and hasattr(exc, "show")


def usage_line(exc: Exception) -> str:
    """A usage error as one line naming the command and the option (click prints a boxed block)."""
    ctx = getattr(exc, "ctx", None)
    where = f"{ctx.command_path}: " if ctx is not None and ctx.command_path else ""
    return f"error: {where}{printable(exc.format_message())}"


def main(argv: list[str] | None = None) -> int:
    """Entry point: exit 0 on success, 2 on bad input or usage, 1 on internal failure."""
    register_commands()
    args = sys.argv[1:] if argv is None else argv
    _state["verbose"] = "--verbose" in args
    try:
        code = app(args=args, prog_name="gen3d", standalone_mode=False)
    except UserError as exc:
        print(f"error: {printable(str(exc))}", file=sys.stderr)
        if _state["verbose"]:
            raise
        return UserError.exit_code
    except typer.Exit as exc:
        return exc.exit_code
    except typer.Abort:
        print("aborted", file=sys.stderr)
        return 1
    except Exception as exc:
        if _is_usage_error(exc):  # click's (or typer's vendored click's) errors carry their exit code, 2
            print(usage_line(exc), file=sys.stderr)
            return exc.exit_code
        if _state["verbose"]:
            raise
        print(f"internal error: {type(exc).__name__}: {exc} (run with --verbose for the traceback)", file=sys.stderr)
        return 1
    return code if isinstance(code, int) else 0
