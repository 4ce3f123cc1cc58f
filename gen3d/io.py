"""File IO every layer shares: atomic writes, hashing, file-name slugs and the facts about the machine.

It sits at the bottom of the import graph (it imports nothing of gen3d but the version), so run
folders, model folders, exports, benchmarks and the server all write files the same way without
depending on each other.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import re
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

import gen3d


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):  # not every file system lets you open a directory
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def current_umask() -> int:
    """The process's umask, read without changing it where /proc says it (os.umask can only swap)."""
    with contextlib.suppress(OSError, ValueError, StopIteration):
        status = Path("/proc/self/status").read_text().splitlines()
        return int(next(line for line in status if line.startswith("Umask:")).split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def shared_mode(folder: bool = False) -> int:
    """The mode an ordinary `open` or `mkdir` would give: 0o666 (0o777 for folders) less the umask,
    so run folders are as shareable as the user's other files."""
    return (0o777 if folder else 0o666) & ~current_umask()


def blocking_file(path: Path) -> Path | None:
    """The first existing non-folder among `path` and its parents (what stops making `path` a
    folder), or None."""
    path = Path(path)
    for part in (path, *path.parents):
        if part.exists() and not part.is_dir():
            return part
    return None


def printable(text: str) -> str:
    """`text` with control characters (escape sequences, newlines, bidi overrides) written as
    escapes, so a prompt or a file name cannot repaint a terminal or break a one-line message."""
    return "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii") for ch in text)


@contextlib.contextmanager
def atomic_output(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success fsync it and rename it over `path`.

    The temporary name keeps the suffix so writers that pick a format by extension still work;
    on any error the temporary file is removed, so no half-written file is ever left behind.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}")
    os.fchmod(fd, shared_mode())  # mkstemp makes it private (0600); the result is an ordinary file
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    with atomic_output(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_json(path: Path, data: Any) -> None:
    atomic_write_bytes(path, (json.dumps(data, indent=2) + "\n").encode())


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def slugify(text: str, max_len: int = 32, empty: str = "run") -> str:
    """A short, file-name-safe version of a prompt or a path for run folder names (`empty` when
    nothing of `text` is left)."""
    slug = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return slug[:max_len].rstrip("-") or empty


def git_rev() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                             cwd=Path(gen3d.__file__).parent, timeout=5)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment() -> dict:
    """The machine facts benchmarks and manifests record."""
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    return {"cpu": cpu_name(), "threads": torch.get_num_threads(), "torch": torch.__version__,
            "gen3d": gen3d.__version__, "git_rev": git_rev(), "device": device, "cores": os.cpu_count()}
