"""The shipped config files spell out every default: each key of the config dataclass is in the
file at its default value, and the file has no other key, so a missing key fails too."""

from pathlib import Path

import pytest
import yaml

from gen3d.config import to_dict
from gen3d.pipelines.kinds import pipeline_module

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("kind", ["reconstruct", "text-to-3d", "image-to-3d", "text-to-4d"])
def test_shipped_config_file_spells_out_every_default(kind):
    assert yaml.safe_load((ROOT / "configs" / f"{kind}.yaml").read_text()) == to_dict(pipeline_module(kind).Config())
