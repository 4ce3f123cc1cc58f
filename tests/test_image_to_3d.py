"""image-to-3d: user images (every mode, bad files refused before a run folder exists), foreground
and framing, the prior's observed-view conditioning, and a short run with the CI preset."""

import json
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from gen3d.cli import main
from gen3d.data.foreground import ForegroundConfig, key_background, prepare_image

ROOT = Path(__file__).resolve().parents[1]
CI_CONFIG = ROOT / "configs" / "ci" / "image-to-3d.yaml"
PRIOR_WEIGHTS = ROOT / "gen3d" / "assets" / "priors" / "shapeworld-mv" / "multiview" / "model.safetensors"


def _object_image(width=80, height=60, box=(10, 30, 20, 40), colour=(200, 30, 30), background=(255, 255, 255)):
    """An RGB array: a coloured rectangle rows box[0]:box[1], columns box[2]:box[3] on a plain background."""
    pixels = np.empty((height, width, 3), np.uint8)
    pixels[:] = background
    top, bottom, left, right = box
    pixels[top:bottom, left:right] = colour
    return pixels


def _huge_png(path: Path) -> None:
    """A valid PNG header declaring 10000 x 6000 pixels (60 MP); the pixel data never gets read."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", 10000, 6000, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))


def _bad_file(tmp_path: Path, kind: str) -> Path:
    path = tmp_path / f"{kind}.png"
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "text":
        path.write_text("this is not an image\n")
    elif kind == "corrupt":
        Image.fromarray(_object_image()).save(path)
        path.write_bytes(path.read_bytes()[:60])
    elif kind == "huge":
        _huge_png(path)
    elif kind == "blank":  # decodes fine, but holds no object to reconstruct
        Image.fromarray(np.full((40, 40, 3), 128, np.uint8)).save(path)
    elif kind == "missing":
        pass
    return path


@pytest.mark.parametrize("kind", ["empty", "text", "corrupt", "huge", "blank", "missing"])
def test_bad_images_exit_2_with_one_line_and_no_run_folder(tmp_path, capsys, monkeypatch, kind):
    runs = tmp_path / "runs"
    monkeypatch.setenv("GEN3D_RUNS", str(runs))
    path = _bad_file(tmp_path, kind)
    out = tmp_path / "out"
    assert main(["image-to-3d", str(path), "--config", str(CI_CONFIG), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and path.name in err and "Traceback" not in err
    assert not out.exists() and not runs.exists()


def test_mask_of_wrong_size_is_refused_naming_the_mask(tmp_path, capsys):
    Image.fromarray(_object_image()).save(tmp_path / "photo.png")
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(tmp_path / "mask.png")
    code = main(["image-to-3d", str(tmp_path / "photo.png"), "--mask", str(tmp_path / "mask.png"), "--out", str(tmp_path / "o")])
    assert code == 2 and "mask.png" in capsys.readouterr().err and not (tmp_path / "o").exists()


def _save_mode(pixels: np.ndarray, mode: str, path: Path) -> Path:
    rgb = Image.fromarray(pixels)
    if mode == "RGBA":  # transparency outside the object: the alpha rule, not keying
        alpha = (np.abs(pixels.astype(int) - 255).sum(-1) > 0).astype(np.uint8) * 255
        image = Image.fromarray(np.dstack([pixels, alpha]), "RGBA")
    elif mode == "I;16":
        grey = np.asarray(rgb.convert("L")).astype(np.uint16) * 257
        image = Image.fromarray(grey)  # uint16 -> mode I;16
    elif mode == "JPEG":
        rgb.save(path.with_suffix(".jpg"), quality=95)
        return path.with_suffix(".jpg")
    else:
        image = rgb.convert(mode)
    image.save(path)
    return path


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "L", "I;16", "P", "JPEG"])
def test_every_mode_gives_a_centred_object_filling_the_frame(tmp_path, mode):
    # a 20x10 object off-centre in an 80x60 image
    path = _save_mode(_object_image(box=(10, 30, 20, 30)), mode, tmp_path / "photo.png")
    rgba = prepare_image(path, None, 64)
    assert rgba.shape == (4, 64, 64) and rgba.dtype == torch.float32
    ys, xs = torch.nonzero(rgba[3] > 0.5, as_tuple=True)
    height, width = (ys.max() - ys.min() + 1).item(), (xs.max() - xs.min() + 1).item()
    assert abs(height - 0.7 * 64) <= 2 and abs(width - 0.35 * 64) <= 2  # larger side fills 70%, aspect kept
    assert abs(ys.float().mean().item() - 31.5) <= 1.5 and abs(xs.float().mean().item() - 31.5) <= 1.5
    if mode not in ("L", "I;16"):
        colour = rgba[:3, ys, xs].mean(-1)
        assert colour[0] > 0.7 and colour[1] < 0.25 and colour[2] < 0.25  # still red, not mixed with the backdrop


def test_exif_orientation_is_honoured(tmp_path):
    # stored as a wide bar; EXIF orientation 6 (rotate 90 degrees) shows it as a tall bar
    pixels = _object_image(width=80, height=60, box=(25, 35, 10, 70))
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(pixels).save(tmp_path / "rotated.jpg", exif=exif, quality=95)
    alpha = prepare_image(tmp_path / "rotated.jpg", None, 64)[3] > 0.5
    ys, xs = torch.nonzero(alpha, as_tuple=True)
    assert (ys.max() - ys.min()) > 3 * (xs.max() - xs.min())


def test_keying_recovers_the_object_on_a_coloured_backdrop():
    pixels = _object_image(box=(10, 40, 15, 50), colour=(30, 60, 200), background=(120, 200, 120))
    alpha = key_background(torch.from_numpy(pixels).float() / 255, ForegroundConfig())
    truth = torch.zeros(60, 80, dtype=torch.bool)
    truth[10:40, 15:50] = True
    keyed = alpha > 0.5
    assert (keyed & truth).sum() / (keyed | truth).sum() > 0.98


def test_mask_file_overrides_keying(tmp_path):
    pixels = _object_image(box=(10, 30, 20, 30))
    Image.fromarray(pixels).save(tmp_path / "photo.png")
    mask = np.zeros((60, 80), np.uint8)
    mask[5:55, 40:60] = 255  # a different region than the red box: the mask wins
    Image.fromarray(mask).save(tmp_path / "mask.png")
    rgba = prepare_image(tmp_path / "photo.png", tmp_path / "mask.png", 64)
    ys, xs = torch.nonzero(rgba[3] > 0.5, as_tuple=True)
    assert abs((ys.max() - ys.min() + 1).item() - 0.7 * 64) <= 2
    assert abs((xs.max() - xs.min() + 1).item() - 0.7 * 64 * 20 / 50) <= 2
    assert rgba[:3, ys, xs].mean() > 0.95  # the masked region is white in the photo


@pytest.mark.skipif(not PRIOR_WEIGHTS.is_file(), reason="shapeworld-mv weights not shipped in this checkout")
def test_observed_view_conditions_the_generated_colour(tmp_path):
    from gen3d.cameras import pass_cameras
    from gen3d.models.prior import Observed
    from gen3d.pipelines.image_to_3d import input_camera
    from gen3d.pipelines.stages.resources import cached_prior
    from gen3d.shapeworld.scenes import FOV_Y_DEG, RADIUS

    prior = cached_prior("shapeworld-mv", None)
    cams = pass_cameras([4], [15.0], RADIUS, FOV_Y_DEG, 64)
    means = {}
    for name, colour in {"red": (220, 30, 30), "blue": (30, 30, 220)}.items():
        Image.fromarray(_object_image(box=(15, 45, 25, 55), colour=colour)).save(tmp_path / f"{name}.png")
        observed = Observed(prepare_image(tmp_path / f"{name}.png", None, 64)[None], input_camera(15.0, 64))
        views = prior.sample(None, cams, observed, steps=8, generator=torch.Generator().manual_seed(0))
        alpha = views[:, 3:]
        means[name] = (views[:, :3] * alpha).sum((0, 2, 3)) / alpha.sum()
    assert means["red"][0] > means["red"][2] + 0.1
    assert means["blue"][2] > means["blue"][0] + 0.1


@pytest.mark.skipif(not PRIOR_WEIGHTS.is_file(), reason="shapeworld-mv weights not shipped in this checkout")
def test_short_image_to_3d_run_is_complete(tmp_path):
    rgba = np.zeros((90, 120, 4), np.uint8)
    rgba[20:70, 35:85] = (230, 200, 40, 255)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "duck.png")
    out = tmp_path / "run"
    assert main(["image-to-3d", str(tmp_path / "duck.png"), "--config", str(CI_CONFIG), "--elevation", "20",
                 "--set", "recon.steps=20", "--out", str(out)]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["kind"] == "image-to-3d" and manifest["status"] == "done"
    assert manifest["config"]["elevation"] == 20.0 and manifest["inputs"]["image"].endswith("duck.png")
    assert [s["name"] for s in manifest["stages"]] == ["views", "fit", "export"]
    views = json.loads((out / "views.json").read_text())
    assert len(views["views"]) == 1 + 8  # the photo first, then two passes of four
    # the photo is view 0, at azimuth 0 and the given elevation
    eye = torch.tensor(views["c2w"][0])[:3, 3]
    assert abs(torch.rad2deg(torch.asin(eye[2] / eye.norm())).item() - 20.0) < 1e-3 and eye[1].abs() < 1e-4
    assert np.array_equal(np.asarray(Image.open(out / "views" / "000.png")), np.asarray(Image.open(out / "input.png")))
    roles = {a["role"] for a in manifest["artifacts"]}
    assert {"views", "checkpoint", "render"} <= roles
    assert len(list((out / "renders").glob("*.png"))) == 8


@pytest.mark.skipif(not PRIOR_WEIGHTS.is_file(), reason="shapeworld-mv weights not shipped in this checkout")
def test_short_sds_run_fits_the_photo_at_its_camera(tmp_path):
    rgba = np.zeros((64, 64, 4), np.uint8)
    rgba[16:48, 16:48] = (40, 200, 60, 255)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "cube.png")
    out = tmp_path / "run"
    assert main(["image-to-3d", str(tmp_path / "cube.png"), "--method", "sds", "--config", str(CI_CONFIG),
                 "--out", str(out)]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert [s["name"] for s in manifest["stages"]] == ["distill", "export"] and manifest["status"] == "done"
    events = [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()]
    reference = [e["reference_loss"] for e in events if "reference_loss" in e]
    assert len(reference) == 6 and reference[-1] < reference[0]  # the photo's own loss goes down
