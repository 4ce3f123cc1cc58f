"""The web viewer in a real browser (Debian's chromium, software WebGL) against a live `gen3d serve`.

The run page must draw a known box from a known camera where projecting its corners says it should be.
Skipped, with the reason, when /usr/bin/chromium or the playwright package is missing.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image
from viewer_helpers import CHROMIUM, CHROMIUM_ARGS, box_corners, live_server, make_moving_box_run, make_run

from gen3d.batch.folder import BATCH_FILE
from gen3d.cameras import from_fov, look_at, project
from gen3d.io import atomic_write_json

if not CHROMIUM.exists():
    pytest.skip(f"{CHROMIUM} is missing (install it with scripts/install_browser.sh)", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")

BOX_RUN = "20250101-000000-text-to-3d-a-blue-box"
MOVING_RUN = "20250104-000000-text-to-4d-a-moving-box"
FRAMES, STEP_X = 8, 0.1  # the moving box: 8 frames, 0.1 further along +x each
BACKGROUND = (0xF3, 0xF4, 0xF6)  # the viewer's background, #f3f4f6
CAMERA = {"position": [1.5, 1.0, 2.1], "target": [0.1, 0.05, -0.05], "fov": 40}
TOLERANCE_PX = 5


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    runs = tmp_path_factory.mktemp("viewer") / "runs"
    runs.mkdir()
    make_run(runs, BOX_RUN, inputs={"prompt": "a blue box"}, metrics={"psnr": 24.25, "mesh_psnr": 22.5})
    make_run(runs, "20250102-000000-reconstruct-fern", kind="reconstruct", status="failed",
             inputs={"scene": "/data/fern"}, glb=False)
    make_run(runs, "20250103-000000-image-to-3d-chair", kind="image-to-3d", inputs={"image": "/up/chair.png"},
             metrics={"psnr": 19.5})
    make_moving_box_run(runs, MOVING_RUN, FRAMES, STEP_X)
    atomic_write_json(runs / "batch-level" / BATCH_FILE, {"id": "batch-level", "jobs": [
        {"id": f"00{i}-selftest-selftest", "status": status, "seconds": 1.0, "metrics": {}}
        for i, status in enumerate(("done", "failed", "running", "pending"))]})
    with live_server(runs, workers=1) as live:
        yield live


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture()
def page(browser):
    context = browser.new_context(viewport={"width": 1200, "height": 900}, device_scale_factor=1)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    yield page
    context.close()
    assert errors == [], f"JavaScript errors: {errors}"


def drawn_mask(png: bytes) -> np.ndarray:
    """The pixels that differ from the background."""
    rgb = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(np.int16)
    return np.abs(rgb - np.array(BACKGROUND)).max(axis=-1) > 40


def silhouette_box(png: bytes) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1) of the pixels that differ from the background, x1/y1 exclusive."""
    ys, xs = np.nonzero(drawn_mask(png))
    assert len(xs) > 100, "nothing drawn"
    return xs.min(), ys.min(), xs.max() + 1, ys.max() + 1


def expected_box(width: int, height: int, shift_x: float = 0.0) -> tuple[float, float, float, float]:
    """Project the box's corners (moved `shift_x` along +x) through the same pinhole camera as three.js."""
    c2w = look_at(torch.tensor(CAMERA["position"]), torch.tensor(CAMERA["target"]), up=torch.tensor([0.0, 1.0, 0.0]))
    cams = from_fov(c2w, CAMERA["fov"], width, height)
    corners = box_corners() + np.array([shift_x, 0.0, 0.0])
    uv, depth = project(torch.tensor(corners, dtype=torch.float32), cams)
    assert (depth > 0).all()
    u, v = uv[0, :, 0], uv[0, :, 1]
    return u.min().item(), v.min().item(), u.max().item(), v.max().item()


def open_run(page, server, run_id: str = BOX_RUN, extra: str = "") -> None:
    cam = ",".join(map(str, CAMERA["position"]))
    target = ",".join(map(str, CAMERA["target"]))
    page.goto(f"{server.url}run.html?id={run_id}&cam={cam}&target={target}&fov={CAMERA['fov']}{extra}")
    page.wait_for_function("window.gen3dViewer && window.gen3dViewer.loaded", timeout=60_000)


def test_gallery_lists_runs_and_filters(page, server):
    page.goto(server.url)
    page.wait_for_selector(".card")
    cards = page.locator(".card")
    assert sorted(cards.evaluate_all("cs => cs.map(c => c.dataset.runId)")) == sorted(
        [BOX_RUN, "20250102-000000-reconstruct-fern", "20250103-000000-image-to-3d-chair", MOVING_RUN])
    box_card = page.locator(f'.card[data-run-id="{BOX_RUN}"]')
    assert "a blue box" in box_card.inner_text() and "psnr 24.25" in box_card.inner_text()
    assert page.locator(".card .badge-4d").evaluate_all("bs => bs.map(b => [b.closest('.card').dataset.runId, b.title])") \
        == [[MOVING_RUN, f"{FRAMES} frames"]]
    assert box_card.locator("img.thumb").evaluate("img => img.decode().then(() => img.naturalWidth)") == 32
    page.select_option("#filter-kind", "reconstruct")
    assert cards.evaluate_all("cs => cs.map(c => c.dataset.runId)") == ["20250102-000000-reconstruct-fern"]
    page.select_option("#filter-kind", "")
    page.select_option("#filter-status", "done")
    assert cards.count() == 3
    page.fill("#filter-text", "chair")
    assert cards.evaluate_all("cs => cs.map(c => c.dataset.runId)") == ["20250103-000000-image-to-3d-chair"]


def test_viewer_keeps_a_token_given_once_in_the_url(browser, tmp_path):
    """A server that needs a token: the printed URL carries it once; the gallery, the run page and its
    mesh then load with the cookie alone, and the token leaves the address bar."""
    runs = tmp_path / "runs"
    runs.mkdir()
    make_run(runs, BOX_RUN, inputs={"prompt": "a blue box"})
    with live_server(runs, args=("--token", "viewer-test-token-0123456789")) as server:
        context = browser.new_context()
        page = context.new_page()
        page.goto(server.printed)
        page.wait_for_selector(f'.card[data-run-id="{BOX_RUN}"]')
        assert "token" not in page.url
        page.goto(f"{server.url}run.html?id={BOX_RUN}")
        page.wait_for_function("window.gen3dViewer && window.gen3dViewer.loaded", timeout=60_000)
        context.close()


def test_gallery_shows_a_batch_as_a_group_with_its_progress(page, server):
    page.goto(server.url)
    group = page.locator('#batches details[data-batch-id="batch-level"]')
    group.wait_for()
    assert (group.get_attribute("data-finished"), group.get_attribute("data-total")) == ("2", "4")
    assert "2/4" in group.locator(".progress-label").inner_text()
    group.locator("summary").click()
    assert page.locator("#batches .batch-jobs li").count() == 4


def test_run_page_draws_the_box_where_the_camera_says(page, server):
    open_run(page, server)
    canvas = page.locator("#viewer-canvas")
    width, height = canvas.evaluate("c => [c.clientWidth, c.clientHeight]")
    x0, y0, x1, y1 = silhouette_box(canvas.screenshot())
    ex0, ey0, ex1, ey1 = expected_box(width, height)
    assert abs(x0 - ex0) <= TOLERANCE_PX and abs(x1 - ex1) <= TOLERANCE_PX, ((x0, x1), (ex0, ex1))
    assert abs(y0 - ey0) <= TOLERANCE_PX and abs(y1 - ey1) <= TOLERANCE_PX, ((y0, y1), (ey0, ey1))
    assert (x1 - x0) > 0.2 * width  # a real, sizeable silhouette, not a speck
    camera = page.evaluate("window.gen3dViewer.getCamera()")
    assert np.allclose(camera["position"], CAMERA["position"]) and camera["fov"] == CAMERA["fov"]


def test_display_toggles_change_the_pixels(page, server):
    open_run(page, server)
    canvas = page.locator("#viewer-canvas")
    solid_png = canvas.screenshot()
    solid = np.asarray(Image.open(io.BytesIO(solid_png)).convert("RGB")).astype(np.int16)
    page.check("#toggle-wireframe")
    wire_png = canvas.screenshot()
    wire = np.asarray(Image.open(io.BytesIO(wire_png)).convert("RGB")).astype(np.int16)
    filled = np.abs(solid - np.array(BACKGROUND)).max(-1) > 40
    changed = np.abs(solid - wire).max(-1) > 40
    assert changed.sum() > 0.5 * filled.sum()  # the faces' interiors are gone, only edges remain
    # The edges still outline the same box.
    assert np.abs(np.subtract(silhouette_box(solid_png), silhouette_box(wire_png))).max() <= TOLERANCE_PX
    page.uncheck("#toggle-wireframe")
    page.check("#toggle-normals")
    normals = np.asarray(Image.open(io.BytesIO(canvas.screenshot())).convert("RGB")).astype(np.int16)
    mean_solid, mean_normals = solid[filled].mean(0), normals[filled].mean(0)
    assert np.abs(mean_solid - mean_normals).max() > 20  # MeshNormalMaterial colours by normal, not by vertex colour


def test_time_slider_and_play_step_through_a_4d_run(page, server):
    open_run(page, server, MOVING_RUN)
    slider = page.locator("#time-slider")
    assert (slider.get_attribute("min"), slider.get_attribute("max")) == ("0", str(FRAMES - 1))
    assert page.locator("#time-label").inner_text() == f"frame 1 of {FRAMES} · t = 0.00"
    frame_views = page.locator("#frame-views img")
    assert frame_views.evaluate_all("is => is.map(i => i.alt)") == ["views/00-00.png", "views/00-01.png"]
    canvas = page.locator("#viewer-canvas")
    centroids = []
    for frame in (0, 3, FRAMES - 1):
        page.locator("#time-slider").fill(str(frame))
        page.wait_for_function("f => window.gen3dViewer.shown === f", arg=f"frames/{frame:03d}.glb")
        png = canvas.screenshot()
        centroids.append(np.nonzero(drawn_mask(png))[1].mean())
    assert centroids[0] + 20 < centroids[1] < centroids[2] - 20, centroids  # the box moves right (+x) in time
    # The last frame is drawn where projecting the box, moved (FRAMES - 1) * STEP_X along +x, says.
    width, height = canvas.evaluate("c => [c.clientWidth, c.clientHeight]")
    drawn, expected = silhouette_box(png), expected_box(width, height, (FRAMES - 1) * STEP_X)
    assert np.abs(np.subtract(drawn, expected)).max() <= TOLERANCE_PX, (drawn, expected)
    assert page.locator("#time-label").inner_text() == f"frame {FRAMES} of {FRAMES} · t = 1.00"
    page.wait_for_function("() => document.querySelector('#frame-views img').alt === 'views/07-00.png'")
    # Playing loops: from the last frame on to frames 0, 1, 2, ... until paused.
    page.click("#play-pause")
    page.wait_for_function("() => window.gen3dViewer.shown === 'frames/002.glb'", timeout=30_000)
    page.click("#play-pause")
    assert page.evaluate("window.gen3dViewer.timeline.playing") is False
    assert page.locator("#play-pause").inner_text().endswith("play")
    # The turntable and the views grid show as for any run.
    assert page.locator("img.turntable").evaluate("img => img.decode().then(() => img.naturalWidth)") == 8
    assert "views.png" in page.locator(".views-grid img").evaluate_all("is => is.map(i => i.alt)")


def test_run_page_shows_views_curves_metrics_and_downloads(page, server):
    open_run(page, server)
    assert page.locator("#metrics").inner_text().split() == ["psnr", "24.25", "mesh_psnr", "22.50"]
    assert page.locator("#fidelity").inner_text() == "PSNR: field 24.25 dB, exported mesh 22.50 dB (-1.75)"
    links = page.locator("#files a").evaluate_all("as => as.map(a => a.getAttribute('href'))")
    assert links == [f"/api/runs/{BOX_RUN}/files/views/view_000.png", f"/api/runs/{BOX_RUN}/files/mesh.glb"]
    assert page.locator(".views-grid img").evaluate("img => img.decode().then(() => img.naturalWidth)") == 32
    # The loss curve is drawn: its canvas has coloured (series) pixels, not only axes and text.
    series_pixels = page.locator("#chart-loss").evaluate("""c => {
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        let n = 0;
        for (let i = 0; i < d.length; i += 4) if (d[i + 2] > 180 && d[i] < 80 && d[i + 3] > 200) n += 1;
        return n;
    }""")
    assert series_pixels > 100
    # A static run has no time controls.
    assert page.locator("#time-slider, #play-pause, #frame-views").count() == 0
    assert page.evaluate("window.gen3dViewer.timeline") is None


@pytest.fixture(scope="module")
def ray_server(tmp_path_factory):
    """A server handing its queued jobs to Ray (a local instance) instead of local workers."""
    pytest.importorskip("ray")
    runs = tmp_path_factory.mktemp("viewer-ray") / "runs"
    runs.mkdir()
    with live_server(runs, workers=1, args=("--ray",)) as live:
        yield live


def test_job_submitted_from_the_form_runs_with_live_progress(page, server):
    submit_selftest_from_the_form(page, server)


def test_job_submitted_from_the_form_runs_on_ray(page, ray_server):
    submit_selftest_from_the_form(page, ray_server)
    with ray_server.client() as http:
        (job,) = http.get("/api/jobs").json()["jobs"]
    assert (job["status"], job["exit_code"]) == ("done", 0)


def submit_selftest_from_the_form(page, server):
    page.goto(server.url)
    page.click('button.tab[data-kind="selftest"]')
    page.fill("#opt-selftest-steps", "8")
    page.fill("#opt-selftest-step_seconds", "0.25")
    page.click('#form-selftest button[type="submit"]')
    row = page.locator("#jobs tr[data-job-id]").first
    row.wait_for()
    page.wait_for_selector('#jobs tr[data-job-id][data-status="done"]', timeout=300_000)
    assert int(row.get_attribute("data-events-seen")) >= 8  # every fake step arrived over the stream
    run_link = row.locator(".run-link a").inner_text()
    page.wait_for_selector(f'.card[data-run-id="{run_link}"]', timeout=30_000)  # the gallery picked it up
    assert page.locator(f'.card[data-run-id="{run_link}"] .badge').inner_text() == "done"
