"""Issue 16 beyond the corpus: run folders others can read, one process per run, warnings the
manifest keeps, and runs that export no mesh not ending `done`."""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import os
import stat

import pytest
import torch
from test_runs import Config, build_job, quiet, toy

from gen3d.config import SEED_RANGE, check_seed
from gen3d.errors import UserError
from gen3d.fields import FieldConfig, NerfField
from gen3d.io import atomic_write_json, printable
from gen3d.pipelines.stages.export import ExportConfig, export_field
from gen3d.runs import RunFolder, read_manifest, resume_job, run_job
from gen3d.runs.lock import run_lock
from gen3d.runs.validate import check_limits, prompt_warning


@contextlib.contextmanager
def umask(mask: int):
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


@pytest.mark.parametrize("mask, mode", [(0o022, 0o644), (0o007, 0o660), (0o077, 0o600)])
def test_run_files_follow_the_umask(tmp_path, mask, mode):
    """mkstemp made every artifact 0600: a run folder could not be shared with a group."""
    with umask(mask):
        atomic_write_json(tmp_path / "a.json", {"x": 1})
        run = run_job(toy(), tmp_path / "run", echo=quiet)
    assert stat.S_IMODE((tmp_path / "a.json").stat().st_mode) == mode
    for name in ("manifest.json", "views.npy", "weights.npy", "ckpt/fit.pt"):
        assert stat.S_IMODE((run.path / name).stat().st_mode) == mode, name


def test_a_second_process_on_a_run_is_refused_until_the_first_lets_go(tmp_path):
    run = run_job(toy(interrupt_at=5), tmp_path / "cut", echo=quiet)
    before = (run.path / "manifest.json").read_bytes()
    holder = os.open(run.path, os.O_RDONLY)  # another open description, as another process has
    fcntl.flock(holder, fcntl.LOCK_EX)
    try:
        with pytest.raises(UserError, match="another gen3d process is running this run"):
            resume_job(RunFolder.open(run.path), toy(), echo=quiet)
        assert (run.path / "manifest.json").read_bytes() == before  # refused before anything was written
    finally:
        os.close(holder)
    assert resume_job(RunFolder.open(run.path), toy(), echo=quiet).status == "done"
    with run_lock(run.path):  # the finished run released it
        pass


@dataclasses.dataclass
class PromptConfig(Config):
    prior: str = "shapeworld-mv"


@pytest.mark.parametrize("prompt, warned", [("a cat on a mat", True), ("two red Spheres", False), ("a snowman", False)])
def test_prompts_the_bundled_prior_cannot_read_warn_and_the_manifest_keeps_it(tmp_path, capsys, prompt, warned):
    job = build_job(PromptConfig(), {"name": "toy", "prompt": prompt}, 0)
    run = run_job(job, tmp_path / "run", echo=quiet)
    warnings = read_manifest(run.path)["warnings"]
    err = capsys.readouterr().err
    assert bool(warnings) == warned and err.strip().splitlines() == warnings
    if warned:
        assert len(warnings) == 1 and "sphere, cube" in warnings[0] and "--prior sd" in warnings[0]
    assert prompt_warning("sd", "a cat") is None  # real priors read any prompt


def test_limits_name_the_key_and_the_seed_range_is_one_place():
    with pytest.raises(UserError, match=r"config key 'size' must be in \[1, 16384\], got 0"):
        check_limits(Config(size=0))
    with pytest.raises(UserError, match=r"config key 'steps' must be in \[1, 10000000\], got 0"):
        check_limits(Config(steps=0))
    assert check_seed(SEED_RANGE[1]) == SEED_RANGE[1]
    with pytest.raises(UserError, match=r"--seed must be an integer in \[0, 2147483647\]"):
        check_seed(SEED_RANGE[1] + 1)


def test_control_characters_are_escaped():
    assert printable("a\x1b[31mred\nsphere\u202e") == "a\\x1b[31mred\\nsphere\\u202e"
    assert printable("a red sphère") == "a red sphère"


class _Events:
    def __init__(self):
        self.messages = []

    def event(self, **fields):
        self.messages.append(fields.get("message"))


def test_an_export_that_finds_no_surface_fails_the_stage():
    """It used to log and return, so the run ended `done` with exit 0 and no mesh."""
    empty = NerfField(FieldConfig(hidden=8, geo_features=3, color_hidden=8, density_bias=-60.0),
                      torch.tensor([[-1.0] * 3, [1.0] * 3]), torch.Generator().manual_seed(0))
    ctx = _Events()
    with pytest.raises(UserError, match=r"no mesh exported .*config key 'export.threshold' is 5.0"):
        export_field(ctx, empty, ExportConfig(resolution=8, threshold=5.0, auto_threshold=False, texture=False))
    assert ctx.messages == ["no surface found at export.threshold; no mesh exported"]
