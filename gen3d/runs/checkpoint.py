"""Stage checkpoints: the stage's own state plus every RNG state, written atomically.

A resumed stage must draw exactly the random numbers the uninterrupted one would have drawn, so
the checkpoint holds the global python/numpy/torch RNG states and the stage's own generators.
Everything is stored as tensors, ints and tuples so files load with `weights_only=True`.
"""

from __future__ import annotations

import io
import random
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gen3d.errors import UserError
from gen3d.io import atomic_write_bytes


@dataclass
class Checkpoint:
    step: int  # steps completed when it was written
    state: dict
    rng: dict


def capture_rng(generator: torch.Generator, np_rng: np.random.Generator) -> dict:
    numpy_global = np.random.get_state(legacy=False)
    numpy_global["state"]["key"] = torch.from_numpy(numpy_global["state"]["key"].astype(np.int64))
    return {
        "python": random.getstate(),
        "numpy": numpy_global,
        "torch": torch.get_rng_state(),
        "generator": generator.get_state(),
        "np_rng": np_rng.bit_generator.state,
    }


def restore_rng(rng: dict, generator: torch.Generator, np_rng: np.random.Generator) -> None:
    random.setstate(rng["python"])
    numpy_global = dict(rng["numpy"])
    numpy_global["state"] = dict(numpy_global["state"], key=rng["numpy"]["state"]["key"].numpy().astype(np.uint32))
    np.random.set_state(numpy_global)
    torch.set_rng_state(rng["torch"])
    generator.set_state(rng["generator"])
    np_rng.bit_generator.state = rng["np_rng"]


def canonical(value: Any) -> Any:
    """A copy whose pickle depends only on the values: fresh containers, interned strings and
    tensors with their own storage. Pickle memoises by object identity, so a state restored from
    a checkpoint would otherwise serialise differently from an identical one built in memory."""
    if isinstance(value, torch.Tensor):
        return value.detach().clone()
    if isinstance(value, str):
        return sys.intern(value)
    if isinstance(value, dict):
        return {canonical(k): canonical(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        items = [canonical(v) for v in value]
        return type(value)(*items) if hasattr(value, "_fields") else type(value)(items)
    return value


def save_checkpoint(path: Path, step: int, state: dict[str, Any], rng: dict) -> None:
    """Byte-identical for identical values. Serialised in memory: torch names the zip's inner
    folder after the file, and a temporary file name would change the bytes."""
    buffer = io.BytesIO()
    torch.save(canonical({"step": int(step), "state": state, "rng": rng}), buffer)
    atomic_write_bytes(path, buffer.getvalue())


def load_checkpoint(path: Path) -> Checkpoint | None:
    """The checkpoint at `path`, or None when there is none yet."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated or foreign bytes fail the unpickler in any of many ways
        raise UserError(f"{path}: unreadable checkpoint ({type(exc).__name__})") from None
    fields = {"step": int, "state": dict, "rng": dict}
    if not isinstance(data, dict) or any(not isinstance(data.get(k), t) for k, t in fields.items()):
        raise UserError(f"{path}: not a gen3d stage checkpoint (needs step, state and rng)")
    return Checkpoint(step=data["step"], state=data["state"], rng=data["rng"])


def check_checkpoints(run_path: Path) -> None:
    """Every stage checkpoint of a run is a complete torch file (a zip whose index reads), checked
    without unpickling it: random or truncated files are refused before a resume writes anything."""
    for path in sorted((Path(run_path) / "ckpt").glob("*.pt")):
        try:
            with zipfile.ZipFile(path) as archive:
                archive.infolist()
        except (zipfile.BadZipFile, OSError, EOFError, ValueError):
            raise UserError(f"{path}: unreadable checkpoint (random or truncated bytes)") from None
