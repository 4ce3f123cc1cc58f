"""Helpers for the web viewer's tests: run folders with known contents, a live `gen3d serve`, and chromium.

Run folders are written through the project's own run-folder API (`gen3d.runs.RunFolder`), so the server is
tested on the layout the pipelines really produce.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np
import trimesh
from PIL import Image

from gen3d.runs.folder import RunFolder, new_manifest
from gen3d.server.worker import CLI

CHROMIUM = Path("/usr/bin/chromium")
# Software WebGL (SwiftShader) in a headless chromium; no network, no background services.
CHROMIUM_ARGS = [
    "--enable-unsafe-swiftshader", "--use-angle=swiftshader", "--no-sandbox", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]
SERVER_START_S = 300.0  # generous: a loaded 2-core machine is slow to import torch

# The known box: extents and centre in the GLB's own (glTF, y-up) coordinates, written as-is by trimesh.
BOX_EXTENTS = (0.8, 0.5, 0.6)
BOX_CENTER = (0.1, 0.05, -0.05)
BOX_RGBA = (40, 140, 220, 255)


def box_mesh() -> trimesh.Trimesh:
    mesh = trimesh.creation.box(extents=BOX_EXTENTS)
    mesh.apply_translation(BOX_CENTER)
    mesh.visual.vertex_colors = np.tile(np.array(BOX_RGBA, dtype=np.uint8), (len(mesh.vertices), 1))
    return mesh


def box_corners() -> np.ndarray:
    half = np.array(BOX_EXTENTS) / 2
    signs = np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)], dtype=np.float64)
    return signs * half + np.array(BOX_CENTER)


def make_run(root: Path, run_id: str, *, kind: str = "text-to-3d", status: str = "done", inputs: dict | None = None,
             metrics: dict | None = None, steps: int = 10, glb: bool = True, view_rgb=(200, 90, 30)) -> Path:
    """A finished-looking run folder: manifest, events with loss/psnr, a views PNG and (optionally) the box GLB."""
    manifest = new_manifest(run_id, kind, inputs or {}, 0, {"method": "test"}, {"train": 1.0, "export": 0.5})
    run = RunFolder.create(root / run_id, manifest)
    for step in range(1, steps + 1):
        run.event("train", step, steps, loss=round(0.1 * 0.7**step, 6), psnr=round(10 + step, 2))
    views = root / run_id / "views"
    views.mkdir()
    Image.new("RGB", (32, 32), view_rgb).save(views / "view_000.png")
    run.add_artifact(views / "view_000.png", "views", "export")
    if glb:
        box_mesh().export(root / run_id / "mesh.glb")
        run.add_artifact(root / run_id / "mesh.glb", "mesh", "export", up="y")
    for record in run.manifest["stages"]:
        record.update(status="done", seconds=1.5)
    run.set_metrics(**(metrics or {}))
    run.set_status(status)
    return root / run_id


def make_moving_box_run(root: Path, run_id: str, frames: int = 8, step_x: float = 0.1) -> Path:
    """A 4D run as the 4D pipelines write it: the box `step_x` further along +x each frame, as
    frames/TTT.glb with `frame` and `time`, per-frame views views/TT-CC.png, a views.png grid and a turntable GIF.
    The view of frame k is grey level 20 * k, so a test can tell the frames' images apart."""
    folder = make_run(root, run_id, kind="text-to-4d", inputs={"prompt": "a moving box"}, glb=False)
    run = RunFolder.open(folder)
    (folder / "frames").mkdir()
    for frame in range(frames):
        time = frame / max(frames - 1, 1)
        path = folder / "frames" / f"{frame:03d}.glb"
        box_mesh().apply_translation((step_x * frame, 0.0, 0.0)).export(path)
        run.add_artifact(path, "mesh", "export", format="glb", up="y", frame=frame, time=time)
        for view in range(2):
            path = folder / "views" / f"{frame:02d}-{view:02d}.png"
            Image.new("RGB", (8, 8), (20 * frame,) * 3).save(path)
            run.add_artifact(path, "views", "views", frame=frame, view=view)
    Image.new("RGB", (16, 8 * frames), (90, 90, 90)).save(folder / "views.png")
    run.add_artifact(folder / "views.png", "views", "views", grid=True)
    gif = [Image.new("RGB", (8, 8), (30 * k, 0, 0)) for k in range(3)]
    gif[0].save(folder / "turntable.gif", save_all=True, append_images=gif[1:], duration=100, loop=0)
    run.add_artifact(folder / "turntable.gif", "turntable", "export")
    run.set_metrics(frames=frames, field_mb=0.5)
    run.write_manifest()
    return folder


def child_pids(pid: int) -> list[int]:
    """The live processes whose parent is `pid` (read from /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            found.append(int(stat.parent.name))
    return found


def descendants(pid: int) -> list[int]:
    children = child_pids(pid)
    return children + [d for c in children for d in descendants(c)]


class LiveServer:
    """`gen3d serve RUNS_DIR --port 0 [ARGS]` in its own process group; `url` is the address it printed
    (without the `?token=` it carries when the server needs a token; `token` holds that)."""

    def __init__(self, runs_dir: Path, workers: int = 0, args: tuple[str, ...] = ()):
        self.runs_dir = runs_dir
        self.proc = subprocess.Popen(
            [*CLI, "serve", str(runs_dir), "--port", "0", "--workers", str(workers), *args],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        self.stderr: list[str] = []
        threading.Thread(target=lambda: self.stderr.extend(self.proc.stderr), daemon=True).start()
        self.url = self._read_url()

    def _read_url(self) -> str:
        found: list[str] = []
        reader = threading.Thread(target=lambda: found.append(self.proc.stdout.readline()), daemon=True)
        reader.start()
        reader.join(SERVER_START_S)
        line = found[0].strip() if found else ""
        match = re.match(r"^(http://127\.0\.0\.1:\d+/)(?:\?token=([\w.~-]+))?$", line)
        if not match:
            self.kill()
            raise RuntimeError(f"gen3d serve printed {line!r}; stderr: {''.join(self.stderr)[-2000:]}")
        self.printed, self.token = line, match.group(2)
        return match.group(1)

    def client(self, **kwargs) -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        return httpx.Client(base_url=self.url, timeout=30.0, headers=headers, **kwargs)

    def stop(self) -> int:
        """Ctrl-C-like shutdown (SIGTERM): workers stop their jobs and exit."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.proc.returncode

    def kill(self) -> None:
        """A crash: SIGKILL the server, its workers and their jobs at once (workers lead their own groups)."""
        family = descendants(self.proc.pid)
        for pid in [self.proc.pid, *family]:
            try:
                os.killpg(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        self.proc.wait(timeout=30)


@contextmanager
def live_server(runs_dir: Path, workers: int = 0, args: tuple[str, ...] = ()):
    server = LiveServer(runs_dir, workers, args)
    try:
        yield server
    finally:
        server.stop()


def wait_for(predicate, timeout: float, interval: float = 0.2, what: str = "condition"):
    """Poll `predicate` until it returns something truthy (returned) or `timeout` seconds pass."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
