"""--device and precision (gen3d/device.py): checked before any run folder exists, resolved once,
recorded in the manifest; the CUDA-only checks skip without a GPU."""

import json
import os
from pathlib import Path

import pytest
import torch

from gen3d.cli import main
from gen3d.device import DeviceSettings, resolve_device, resolve_precision, resolve_settings
from gen3d.errors import UserError
from gen3d.pipelines.kinds import KINDS

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
SELFTEST = ["selftest", "--steps", "2", "--step-seconds", "0"]


def gen3d(capsys, *args) -> tuple[int, str]:
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def test_resolution_on_the_cpu():
    cpu = torch.device("cpu")
    assert resolve_device("cpu") == cpu
    assert resolve_device("auto") == (torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available()
                                      else cpu)
    assert resolve_precision("auto", cpu, real_prior=True) == "fp32"
    assert resolve_precision("bf16", cpu, real_prior=True) == "bf16"
    cfg = DeviceSettings(device="cpu")
    assert resolve_settings(cfg) == ("cpu", "fp32") and (cfg.device, cfg.precision) == ("cpu", "fp32")
    assert resolve_settings(object()) == ("cpu", "fp32")  # a config without the keys runs on the CPU


@pytest.mark.parametrize("device, precision, real, message", [
    ("tpu", "auto", False, "config key 'device': unknown device 'tpu'"),
    ("cuda:x", "auto", False, "config key 'device'"),
    ("cpu", "fp8", True, "config key 'precision': 'fp8' is not one of"),
    ("cpu", "fp16", True, "fp16 runs on CUDA only"),
    ("cpu", "bf16", False, "applies to real priors"),
])
def test_bad_settings_name_the_key(device, precision, real, message):
    with pytest.raises(UserError, match=message):
        resolve_settings(DeviceSettings(device=device, precision=precision), real)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error without CUDA")
def test_cuda_without_cuda_is_refused():
    with pytest.raises(UserError, match="sees no CUDA GPU"):
        resolve_device("cuda:0")


@pytest.mark.parametrize("args, message", [
    (["--device", "tpu"], "config key 'device'"),
    (["--device", "cuda:7"] if torch.cuda.device_count() < 8 else ["--device", "gpu"], "config key 'device'"),
    (["--precision", "fp64"], "config key 'precision'"),
])
def test_bad_options_exit_2_and_write_nothing(args, message, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("GEN3D_RUNS", str(tmp_path / "runs"))
    code, output = gen3d(capsys, *SELFTEST, *args, "--out", tmp_path / "run")
    assert code == 2 and message in output and len(output.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists() and not (tmp_path / "runs").exists()


def test_manifest_records_device_and_precision(tmp_path, capsys):
    code, output = gen3d(capsys, *SELFTEST, "--device", "cpu", "--out", tmp_path / "run")
    assert code == 0, output
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert (manifest["device"], manifest["precision"], manifest["device_name"]) == ("cpu", "fp32", "cpu")
    assert (manifest["config"]["device"], manifest["config"]["precision"]) == ("cpu", "fp32")
    assert "peak_memory_mb" not in manifest  # measured on CUDA only


def test_every_job_command_takes_device_and_precision(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    for kind in KINDS.values():
        if kind.command:
            code, output = gen3d(capsys, kind.name, "--help")
            assert code == 0 and "--device" in output and "--precision" in output, kind.name


def test_dry_run_prints_the_resolved_device(tmp_path, capsys):
    code, output = gen3d(capsys, *SELFTEST, "--dry-run", "--out", tmp_path / "run")
    assert code == 0 and ("device: cpu" in output or "device: cuda:" in output) and "device: auto" not in output
    assert not (tmp_path / "run").exists()


@needs_cuda
def test_cuda_run_records_peak_memory(tmp_path, capsys):
    code, output = gen3d(capsys, *SELFTEST, "--device", "cuda", "--out", tmp_path / "run")
    assert code == 0, output
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["device"].startswith("cuda:") and manifest["peak_memory_mb"] >= 0


@needs_cuda
def test_reconstruct_trains_and_exports_on_cuda(tmp_path, capsys):
    """The engine, renderer and export on the GPU, through the command (CI preset, bundled scene)."""
    from gen3d.settings import configs_dir

    scene = Path(__file__).resolve().parents[1] / "scenes" / "shapeworld-snowman"
    code, output = gen3d(capsys, "reconstruct", scene, "--config", configs_dir() / "ci" / "reconstruct.yaml",
                         "--device", "cuda", "--out", tmp_path / "run")
    assert code == 0, output
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["status"] == "done" and manifest["metrics"]["psnr"] > 10 and manifest["peak_memory_mb"] > 0


@pytest.mark.parametrize("given, expected", [(None, "PASSIVE"), ("ACTIVE", "ACTIVE")])
def test_importing_gen3d_makes_waiting_openmp_threads_sleep_unless_told_otherwise(given, expected):
    """Spinning OpenMP threads made a 2-thread fit 29x slower beside one busy process; the policy
    must be in the environment before torch loads, and a user's own choice wins."""
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if given is not None:
        env["OMP_WAIT_POLICY"] = given
    out = subprocess.run([sys.executable, "-c", "import gen3d, os; print(os.environ['OMP_WAIT_POLICY'])"],
                         env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == expected
