"""Command line: exit codes, one-line errors, `--set` overrides, `--dry-run`, `runs`, `resume`."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import typer
from test_runs import quiet, toy

from gen3d.cameras import orbit
from gen3d.cli import main
from gen3d.commands.jobs import EXIT_INTERRUPTED, launch_job
from gen3d.data import Scene, Split, write_nerfstudio
from gen3d.runs import read_manifest, run_job

ROOT = Path(__file__).resolve().parents[1]
CI_CONFIG = str(ROOT / "configs" / "ci" / "reconstruct.yaml")


@pytest.fixture(scope="module")
def tiny_scene(tmp_path_factory) -> Path:
    """Four 8x8 random views: enough for everything that fails before training."""
    cams = orbit(torch.full((4,), 20.0), torch.arange(4) * 90.0, 2.5, 40.0, 8, 8)
    images = torch.rand(4, 8, 8, 3, generator=torch.Generator().manual_seed(0))
    scene = Scene(train=Split(images, cams, [f"f{i}.png" for i in range(4)]), test=None, near=1.0, far=4.0,
                  aabb=torch.tensor([[-1.0] * 3, [1.0] * 3]), scene_type="bounded", background=(1.0, 1.0, 1.0),
                  source=Path("."), format="nerfstudio")
    return write_nerfstudio(scene, tmp_path_factory.mktemp("scene") / "tiny")


@pytest.fixture
def runs_root(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("GEN3D_RUNS", str(tmp_path / "runs"))
    monkeypatch.chdir(tmp_path)
    return tmp_path / "runs"


def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


def test_missing_scene_is_exit_2_naming_it_and_writes_nothing(capsys, runs_root, tmp_path):
    code, _, err = run_cli(capsys, "reconstruct", tmp_path / "no-such-scene", "--config", CI_CONFIG)
    assert code == 2
    assert one_line(err) == f"error: {tmp_path / 'no-such-scene'}: scene folder not found"
    assert not runs_root.exists()


def test_folder_without_scene_files_says_what_was_looked_for(capsys, runs_root, tmp_path):
    (tmp_path / "empty").mkdir()
    code, _, err = run_cli(capsys, "reconstruct", tmp_path / "empty")
    assert code == 2 and "transforms.json" in one_line(err) and "poses_bounds.npy" in err
    assert not runs_root.exists()


def test_bad_input_found_by_a_stage_leaves_no_run_folder(capsys, runs_root, tiny_scene):
    code, _, err = run_cli(capsys, "reconstruct", tiny_scene, "--views", "9", "--config", CI_CONFIG)
    assert code == 2 and one_line(err) == f"error: {tiny_scene}: asked for 9 views but the scene has 4 training frames"
    assert not runs_root.exists()  # the validation pass found it before the runs folder was made


@pytest.mark.parametrize("override, expected", [
    ("recon.stepz=5", "unknown config key 'recon.stepz'; valid keys at this level: appearance, batch_rays, field, mask_loss_weight"),
    ("bogus=1", "unknown config key 'bogus'; valid keys at this level: capture, data, device, evaluate, export, memory, precision, recon, train"),
    ("recon.steps=many", "config key 'recon.steps' must be an integer, got 'many'"),
    ("export.formats=[glb,stl]", "config key 'export.formats[1]' must be one of ['glb', 'ply', 'obj'], got 'stl'"),
    ("recon.optim.lr=.nan", "config key 'recon.optim.lr' must be a finite number, got nan"),
    ("recon.batch_rays=0", "config key 'recon.batch_rays' must be at least 1, got 0"),
    ("recon.optim.final_lr_fraction=2", "config key 'recon.optim.final_lr_fraction' must be at most 1.0, got 2.0"),
])
def test_bad_set_override_is_exit_2_naming_the_key(capsys, runs_root, tiny_scene, override, expected):
    code, _, err = run_cli(capsys, "reconstruct", tiny_scene, "--set", override, "--dry-run")
    assert code == 2
    assert one_line(err).startswith("error: " + expected)
    assert not runs_root.exists()


def test_dry_run_prints_resolved_config_and_estimates_and_writes_nothing(capsys, runs_root, tiny_scene, tmp_path):
    before = sorted(tmp_path.rglob("*"))
    code, out, err = run_cli(capsys, "reconstruct", tiny_scene, "--config", CI_CONFIG, "--steps", "7",
                             "--set", "export.resolution=20", "--views", "3", "--dry-run")
    assert code == 0, err
    assert "  steps: 7\n" in out and "  resolution: 20\n" in out and "  views: 3\n" in out
    assert "  size:\n  - 32\n  - 32\n" in out  # from the CI config file
    plan = out[out.index("plan: reconstruct"):].splitlines()
    assert [line.split()[0] for line in plan[1:]] == ["load", "train", "evaluate", "export", "total"]
    assert all(line.split()[1].startswith("~") for line in plan[1:])
    assert sorted(tmp_path.rglob("*")) == before


def test_missing_config_file_is_exit_2(capsys, runs_root, tiny_scene, tmp_path):
    code, _, err = run_cli(capsys, "reconstruct", tiny_scene, "--config", tmp_path / "nope.yaml", "--dry-run")
    assert code == 2 and one_line(err) == f"error: config file not found: {tmp_path / 'nope.yaml'}"


def test_resume_and_export_of_a_non_run_folder_are_exit_2(capsys, tmp_path):
    for command in (["resume", tmp_path], ["export", tmp_path]):
        code, _, err = run_cli(capsys, *command)
        assert code == 2 and one_line(err) == f"error: {tmp_path / 'manifest.json'}: not found (is {tmp_path} a run folder?)"
    code, _, err = run_cli(capsys, "export", tmp_path, "--format", "stl")
    assert code == 2 and "--format must be glb, ply or obj" in one_line(err)


def test_usage_errors_are_exit_2(capsys):
    assert run_cli(capsys, "reconstruct")[0] == 2  # missing SCENE
    assert run_cli(capsys, "reconstruct", ".", "--steps", "x")[0] == 2


def test_runs_lists_runs_with_status_and_metrics(capsys, runs_root):
    done = run_job(toy(), root=runs_root, echo=quiet)
    cut = run_job(toy(interrupt_at=5), root=runs_root, echo=quiet)
    code, out, _ = run_cli(capsys, "runs")
    assert code == 0
    header, _, *rows = out.strip().splitlines()
    assert header.split() == ["id", "kind", "status", "inputs", "seconds", "metrics"]
    by_id = {row.split()[0]: row.split() for row in rows}
    assert by_id[done.path.name][1:3] == ["toy", "done"] and by_id[cut.path.name][2] == "interrupted"
    assert "toy scene" in out
    code, out, _ = run_cli(capsys, "runs", "--root", runs_root / "missing")
    assert code == 0 and out.strip() == f"no runs in {runs_root / 'missing'}"


def test_interrupted_launch_exits_130_and_an_unknown_kind_cannot_resume(capsys, runs_root):
    with pytest.raises(typer.Exit) as exit_info:
        launch_job(toy(interrupt_at=5), out=runs_root / "cut", dry=False)
    assert exit_info.value.exit_code == EXIT_INTERRUPTED
    assert read_manifest(runs_root / "cut")["status"] == "interrupted"
    capsys.readouterr()
    code, _, err = run_cli(capsys, "resume", runs_root / "cut")  # kind "toy" is not a registered pipeline
    assert code == 2 and one_line(err).startswith(f"error: {runs_root / 'cut' / 'manifest.json'}: unknown job kind 'toy'; known kinds: ")
    assert "reconstruct" in err
