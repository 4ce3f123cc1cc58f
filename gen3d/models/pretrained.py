"""The diffusers-style folder convention for gen3d's own networks: `config.json` (the dataclass
config) beside `model.safetensors`, written atomically, read back with one-line errors."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from gen3d.errors import UserError
from gen3d.io import atomic_output, atomic_write_json

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"


def save_folder(module: nn.Module, cfg, folder: Path, dtype: torch.dtype = torch.float32) -> None:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().to(dtype).contiguous() for k, v in module.state_dict().items()}
    with atomic_output(folder / WEIGHTS_NAME) as tmp:
        save_file(tensors, str(tmp))
    atomic_write_json(folder / CONFIG_NAME, asdict(cfg))


def load_folder(folder: Path, build, config_type, what: str):
    """`build(config_type(**config))` with the folder's float32 weights, in eval mode; lists in the
    config become tuples (JSON has no tuples)."""
    folder = Path(folder)
    for name in (CONFIG_NAME, WEIGHTS_NAME):
        if not (folder / name).is_file():
            raise UserError(f"{folder / name}: missing (not a {what} folder)")
    try:
        raw = json.loads((folder / CONFIG_NAME).read_text())
        cfg = config_type(**{k: tuple(v) if isinstance(v, list) else v for k, v in raw.items()})
    except (json.JSONDecodeError, TypeError) as exc:
        raise UserError(f"{folder / CONFIG_NAME}: not a {what} config ({exc})") from None
    module = build(cfg)
    module.load_state_dict({k: v.float() for k, v in load_file(str(folder / WEIGHTS_NAME)).items()})
    return module.eval()
