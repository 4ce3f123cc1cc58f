"""`gen3d serve`: the web viewer and job server."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from gen3d.cli import app
from gen3d.runs import runs_root


@app.command("serve")
def serve(
    runs_dir: Annotated[Path | None, typer.Argument(help="Runs folder to show and run jobs in (default: $GEN3D_RUNS or ./runs).")] = None,
    host: Annotated[str, typer.Option("--host", help="Interface to listen on; 0.0.0.0 exposes the server to your network.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=0, max=65535, help="Port (0: any free port).")] = 7860,
    workers: Annotated[int, typer.Option("--workers", min=0, max=64, help="Jobs run at once (0: queue only).")] = 1,
    ray: Annotated[bool, typer.Option("--ray", help="Run queued jobs as Ray tasks (pip install 'gen3d[cluster]').")] = False,
    ray_address: Annotated[str | None, typer.Option("--ray-address", help="With --ray: the cluster to join "
                                                                            "(default: start a local instance).")] = None,
    allow_host: Annotated[list[str] | None, typer.Option("--allow-host", help="Also accept requests for this Host name "
                                                          "(repeatable; loopback names and --host always are).")] = None,
    token: Annotated[str | None, typer.Option("--token", envvar="GEN3D_TOKEN", help="Require this token on the API "
                                              "(default: one is generated when --host is not loopback).")] = None,
    allow_path: Annotated[list[Path] | None, typer.Option("--allow-path", help="A folder job options may name files "
                                                           "in, beside the runs folder (repeatable).")] = None,
) -> None:
    """Serve the web viewer and the JSON API for RUNS_DIR, and run queued jobs; prints the URL to open."""
    from gen3d.batch.backends import import_ray
    from gen3d.server import launcher

    ray = ray or ray_address is not None
    if ray:
        import_ray()  # without ray: the one-line install hint before anything starts
    launcher.serve(launcher.ServeConfig(runs_dir=runs_root() if runs_dir is None else runs_dir, host=host,
                                        port=port, workers=workers, ray=ray, ray_address=ray_address,
                                        allow_hosts=tuple(allow_host or ()), token=token,
                                        allow_paths=tuple(allow_path or ())))
