"""One process per run folder at a time: an exclusive lock on the folder itself.

The lock is an advisory `flock` on the run folder's own descriptor, so it leaves no file behind
and the kernel drops it when the process dies, however it dies.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from gen3d.errors import UserError


@contextlib.contextmanager
def run_lock(path: Path) -> Iterator[None]:
    """Hold the run folder `path` exclusively, or refuse (UserError) while another process holds it."""
    fd = os.open(path, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UserError(f"{path}: another gen3d process is running this run (it holds the run's lock); "
                            "wait for it to finish or stop it first") from None
        yield
    finally:
        os.close(fd)
