"""The hostile files of `test_hostile_cli.py`: broken configs, images, scenes, model folders,
checkpoints, run folders and job files, built once in one folder the corpus watches."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from gen3d.cameras import orbit
from gen3d.config import to_dict
from gen3d.data import Scene, Split, write_nerfstudio
from gen3d.pipelines import text_to_3d
from gen3d.runs.folder import new_manifest

ROOT = Path(__file__).resolve().parents[1]
RANDOM_PT_FILES = 6  # random bytes fail torch's unpickler in many ways; several seeds cover more of them
CI = ROOT / "configs" / "ci"


def noise(n: int, seed: int = 0) -> bytes:
    """`n` random bytes, the same every run (a corpus case must not pass by luck)."""
    return random.Random(seed).randbytes(n)


def write_files(root: Path, files: dict[str, bytes | str]) -> None:
    for name, content in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content if isinstance(content, bytes) else content.encode())


def configs(root: Path) -> None:
    write_files(root, {
        "cfg/bin.yaml": b"\x00\x01\xff\xfe\x80binary", "cfg/empty.yaml": "", "cfg/list.yaml": "- 1\n- 2\n",
        "cfg/bad.yaml": "recon: [1, 2\n", "cfg/nan.yaml": "recon:\n  optim:\n    lr: .nan\n",
        "cfg/inf.yaml": "recon:\n  optim:\n    lr: .inf\n", "cfg/ninf.yaml": "render_size: -.inf\n",
        "cfg/huge.yaml": "recon:\n  optim:\n    lr: 1e999\n", "cfg/intnan.yaml": "recon:\n  steps: .nan\n",
        "cfg/exp.yaml": "recon:\n  steps: 1e2\n  optim:\n    lr: 1e-3\n    eps: 1e-15\n",
        "cfg/unknown.yaml": "recon:\n  stepz: 5\n", "cfg/mapping.yaml": "recon: 5\n",
        "cfg/formats.yaml": "export:\n  formats: glb\n", "cfg/half.yaml": "recon:\n  steps: 1.5\n",
        "cfg/utf16.yaml": "recon:\n  steps: 5\n".encode("utf-16"), "cfg/nul.yaml": "recon: \x00\n",
        "cfg/betas.yaml": "recon:\n  optim:\n    betas: [0.9, .nan]\n",
    })
    (root / "cfg" / "folder").mkdir()


def images(root: Path) -> None:
    png = root / "img" / "photo.png"
    png.parent.mkdir(parents=True)
    pixels = np.zeros((32, 32, 4), np.uint8)
    pixels[8:24, 8:24] = (200, 40, 40, 255)
    Image.fromarray(pixels).save(png)
    write_files(root, {"img/text.png": "not an image", "img/empty.png": b"", "img/trunc.png": png.read_bytes()[:60]})
    (root / "img" / "folder.png").mkdir()


def weights(root: Path) -> None:
    from safetensors.torch import save_file

    (root / "w").mkdir()
    save_file({"x": torch.zeros(64)}, str(root / "w" / "tiny.safetensors"))
    whole = (root / "w" / "tiny.safetensors").read_bytes()
    write_files(root, {"w/rand.safetensors": noise(4096), "w/trunc.safetensors": whole[:-100],
                       "w/empty.safetensors": b"", "w/rand.ckpt": noise(4096),
                       **{f"w/rand{k}.pt": noise(512, k) for k in range(RANDOM_PT_FILES)}})


def model_folders(root: Path) -> None:
    m = root / "models"
    (m / "empty").mkdir(parents=True)
    write_files(m, {"rand/unet/diffusion_pytorch_model.safetensors": noise(2048),
                    "rand/unet/config.json": "{}", "rand/vae/config.json": "{}",
                    "rand/vae/diffusion_pytorch_model.safetensors": noise(2048),
                    "noweights/unet/config.json": "{}", "noweights/vae/config.json": "{}",
                    "badjson/unet/config.json": b"\xff\xfe{", "swnomanifest/prior.json": "{}"})
    shutil.copytree(ROOT / "gen3d" / "assets" / "priors" / "shapeworld-mv", m / "swmodified")
    weights_file = next((m / "swmodified").glob("**/*.safetensors"))
    weights_file.write_bytes(weights_file.read_bytes()[:-10] + b"\x00" * 10)


def tiny_scene(folder: Path) -> Path:
    cams = orbit(torch.full((4,), 20.0), torch.arange(4) * 90.0, 2.5, 40.0, 8, 8)
    images = torch.rand(4, 8, 8, 3, generator=torch.Generator().manual_seed(0))
    scene = Scene(train=Split(images, cams, [f"f{i}.png" for i in range(4)]), test=None, near=1.0, far=4.0,
                  aabb=torch.tensor([[-1.0] * 3, [1.0] * 3]), scene_type="bounded", background=(1.0, 1.0, 1.0),
                  source=Path("."), format="nerfstudio")
    return write_nerfstudio(scene, folder)


def _mutated_scene(root: Path, name: str, mutate) -> None:
    folder = tiny_scene(root / "scenes" / name)
    meta = json.loads((folder / "transforms.json").read_text())
    for key in ("train_filenames", "val_filenames", "test_filenames"):
        meta.pop(key, None)
    mutate(meta, folder)
    (folder / "transforms.json").write_text(json.dumps(meta))


def scenes(root: Path) -> None:
    tiny_scene(root / "scenes" / "ok")
    Image.new("RGB", (8, 8)).save(root / "scenes" / "secret.png")

    def frame0(value):
        return lambda meta, folder: meta["frames"][0].update(file_path=value)

    def symlinked(meta, folder):
        (folder / meta["frames"][0]["file_path"]).unlink()
        (folder / meta["frames"][0]["file_path"]).symlink_to(root / "scenes" / "secret.png")

    _mutated_scene(root, "dotdot", frame0("../secret.png"))
    _mutated_scene(root, "absolute", frame0(str(root / "scenes" / "secret.png")))
    _mutated_scene(root, "symlinked", symlinked)
    _mutated_scene(root, "nanpose", lambda meta, folder: meta["frames"][0].update(transform_matrix=[[float("nan")] * 4] * 4))
    _mutated_scene(root, "noframes", lambda meta, folder: meta.update(frames=[]))
    _mutated_scene(root, "nofocal", lambda meta, folder: [meta.pop(k) for k in ("fl_x", "fl_y")])
    _mutated_scene(root, "missingimage", frame0("nope.png"))
    write_files(root, {"scenes/badjson/transforms.json": "{not json", "scenes/llff/poses_bounds.npy": noise(300),
                       "scenes/binary/transforms.json": b"\xff\xfe\x00"})
    (root / "scenes" / "empty").mkdir()


def _manifest(status: str = "interrupted") -> dict:
    cfg = text_to_3d.Config()
    job = text_to_3d.build_job(cfg, {"prompt": "a red sphere"}, 0)
    manifest = new_manifest("run", "text-to-3d", job.inputs, 0, to_dict(cfg), job.estimates())
    manifest["status"] = status
    return manifest


def _run(root: Path, name: str, manifest: dict | str | bytes | list, ckpt: bytes | None = None) -> None:
    folder = root / "runs-in" / name
    folder.mkdir(parents=True)
    content = manifest if isinstance(manifest, (str, bytes)) else json.dumps(manifest)
    write_files(folder, {"manifest.json": content})
    if ckpt is not None:
        write_files(folder, {"ckpt/fit.pt": ckpt})


def _changed(change) -> dict:
    manifest = _manifest()
    change(manifest)
    return manifest


def run_folders(root: Path) -> None:
    good = _manifest()
    _run(root, "interrupted", good)
    _run(root, "done", _manifest("done"))
    _run(root, "locked", good)
    _run(root, "truncckpt", good, ckpt=b"PK\x03\x04" + noise(100))
    _run(root, "randckpt", good, ckpt=noise(300))
    _run(root, "notjson", "{oops")
    _run(root, "binary", b"\xff\xfe\x00\x80")
    _run(root, "list", [1, 2])
    _run(root, "schema2", _changed(lambda m: m.update(schema_version=2)))
    _run(root, "nokind", _changed(lambda m: m.pop("kind")))
    _run(root, "seedstr", _changed(lambda m: m.update(seed="x")))
    _run(root, "stagesdict", _changed(lambda m: m.update(stages={})))
    _run(root, "stagenoname", _changed(lambda m: m["stages"][0].pop("name")))
    _run(root, "badstatus", _changed(lambda m: m.update(status="bogus")))
    _run(root, "unknownkind", _changed(lambda m: m.update(kind="nope")))
    _run(root, "badconfig", _changed(lambda m: m["config"].update(bogus=1)))
    _run(root, "noprompt", _changed(lambda m: m.update(inputs={})))
    _run(root, "badprior", _changed(lambda m: m["config"].update(prior="nope")))
    _run(root, "selftest", _changed(lambda m: m.update(kind="selftest")))
    _run(root, "artifacts", _changed(lambda m: m.update(artifacts=[1])))
    _run(root, "escape", _changed(lambda m: m.update(inputs={"prompt": "a \x1b[2J\x1b[31mred sphere\nrm -rf"})))
    (root / "runs-in" / "manifestdir" / "manifest.json").mkdir(parents=True)
    (root / "runs-in" / "nomanifest").mkdir()


def job_files(root: Path) -> None:
    write_files(root, {
        "jobs/unknownkind.yaml": "jobs:\n  - kind: nope\n    prompt: a red sphere\n",
        "jobs/seed.yaml": "jobs:\n  - prompt: a red sphere\n    seed: -1\n",
        "jobs/steps.yaml": "jobs:\n  - prompt: a red sphere\n    set: [recon.steps=0]\n",
        "jobs/prior.yaml": "jobs:\n  - prompt: a red sphere\n    prior: nope\n",
        "jobs/exp.yaml": "jobs:\n  - prompt: a red sphere\n    set: [recon.optim.lr=1e-3]\n",
        "jobs/bad.yaml": "jobs: [\n", "jobs/bin.txt": b"\xff\xfe\x00\x80", "jobs/empty.txt": "",
        "jobs/emptyprompt.jsonl": json.dumps({"prompt": "  "}) + "\n",
    })
    (root / "jobs" / "folder.yaml").mkdir()


def build(root: Path) -> None:
    """Everything the corpus points at, under `root`."""
    for make in (configs, images, weights, model_folders, scenes, run_folders, job_files):
        make(root)
    write_files(root, {"afile": "just a file"})
    (root / "loop").symlink_to(root / "loop")
    (root / "dangling").symlink_to(root / "nowhere")
    (root / "dir").mkdir()
