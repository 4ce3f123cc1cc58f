// The run page (run.html?id=RUN_ID): 3D view, views, turntable, curves, metrics, config, downloads, and
// live progress while the run is going.
//
// URL parameters for a fixed view (used by the tests and handy for sharing a view):
//   cam=x,y,z  target=x,y,z  fov=degrees  wireframe=1  normals=1  colors=0  frame=K (a 4D run's frame, from 0)
// The same is scriptable through window.gen3dViewer (see docs/api.md).

import {
  describeEvent, el, follow, formatBytes, formatNumber, formatSeconds, getJSON, progressBar, runTitle, statusBadge,
} from "./api.js";
import { drawChart, seriesFromEvents } from "./chart.js";
import { MeshViewer } from "./mesh-viewer.js";
import { isTimed, Timeline, timelineControls, timelineSteps } from "./timeline.js";

const params = new URLSearchParams(location.search);
const runId = params.get("id");
const MESH_FORMATS = ["glb", "gltf", "ply", "obj"];
const VIDEO_FORMATS = ["mp4", "webm"];
const IMAGE_FORMATS = ["png", "jpg", "jpeg", "webp", "gif"];
const LIVE_STATUSES = ["queued", "running"];

const extension = (path) => path.split(".").pop().toLowerCase();
const numberList = (text) => (text ? text.split(",").map(Number) : null);
const isMeshFile = (f) => ["mesh", "pointcloud"].includes(f.role) && MESH_FORMATS.includes(extension(f.path));
const isImageFile = (f) => ["views", "render"].includes(f.role) && IMAGE_FORMATS.includes(extension(f.path));

/** A 4D run's frames (meshes and images with a `frame` or `time`), starting at `frame=K`; null for a static run. */
function runTimeline(files) {
  const steps = timelineSteps(files.filter((f) => isMeshFile(f) && isTimed(f)), files.filter((f) => isImageFile(f) && isTimed(f)));
  return steps.length ? new Timeline(steps, { start: Number(params.get("frame") || 0) }) : null;
}

function header(run) {
  const summary = run.summary;
  const facts = [
    ["kind", summary.kind],
    ["method", summary.method],
    ["seed", summary.seed],
    ["duration", formatSeconds(summary.duration_s)],
  ].filter(([, value]) => value !== null && value !== undefined);
  document.title = `${runTitle(summary)} · gen3d`;
  return el("header", { class: "run-header" },
    el("a", { href: "./", class: "back" }, "← all runs"),
    el("h1", {}, runTitle(summary), " ", statusBadge(summary.status)),
    el("p", { class: "run-id" }, run.id),
    el("dl", { class: "facts" }, facts.flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, String(v))])),
    run.manifest.error ? el("p", { class: "error" }, run.manifest.error) : null);
}

/** The 3D panel: canvas, toggles, file picker and, for 4D runs, the time controls over the frames' meshes. */
function meshPanel(files, timeline) {
  const meshes = files.filter(isMeshFile);
  const player = timeline ? timelineControls(timeline) : null;
  if (meshes.length === 0) return el("section", { class: "panel" }, el("p", { class: "muted" }, "No mesh in this run yet."), player);
  const statics = meshes.filter((f) => !isTimed(f));
  const canvas = el("canvas", { id: "viewer-canvas" });
  const viewer = new MeshViewer(canvas);
  const options = (file) => ({ format: extension(file.path), zUp: file.up === "z" || (file.up === undefined && extension(file.path) !== "glb" && extension(file.path) !== "gltf") });

  const toggle = (label, key, initial) => {
    const input = el("input", { type: "checkbox", id: `toggle-${key}`, checked: initial });
    input.addEventListener("change", () => viewer.setDisplay({ [key]: input.checked }));
    return el("label", { class: "toggle" }, input, label);
  };
  const display = {
    wireframe: params.get("wireframe") === "1",
    normals: params.get("normals") === "1",
    vertexColors: params.get("colors") !== "0",
  };
  viewer.setDisplay(display);
  const controls = [
    player,
    toggle("wireframe", "wireframe", display.wireframe),
    toggle("vertex colours", "vertexColors", display.vertexColors),
    toggle("normals", "normals", display.normals),
    el("button", { type: "button", onclick: () => viewer.fit() }, "reset view"),
  ];

  const initialCamera = params.get("cam") ? { position: numberList(params.get("cam")), target: numberList(params.get("target")) || [0, 0, 0], fov: Number(params.get("fov") || 40) } : null;
  const api = {
    loaded: false,
    shown: null, // the path of the file on screen
    timeline, // a 4D run's frames: seek(index), play(), pause(), index, playing, steps (null for a static run)
    setCamera: (camera) => viewer.setCamera(camera),
    getCamera: () => viewer.getCamera(),
    setDisplay: (changes) => viewer.setDisplay(changes),
    fit: () => viewer.fit(),
    render: () => viewer.render(),
  };
  window.gen3dViewer = api;
  const showFile = (file, fit) => viewer.show(file.url, { ...options(file), fit }).then((object) => {
    if (object) api.shown = file.path;
  });
  const failed = (file) => (error) => canvas.replaceWith(el("p", { class: "error" }, `could not show ${file.path}: ${error.message || error}`));

  // The picker lists the static meshes, and "animation" (the current frame's mesh) for a 4D run.
  let picker = null;
  if (statics.length + (timeline ? 1 : 0) > 1) {
    picker = el("select", { id: "mesh-picker" }, timeline ? el("option", { value: "" }, "animation") : null, statics.map((f, i) => el("option", { value: i }, f.path)));
    picker.addEventListener("change", () => {
      if (picker.value === "") {
        timeline.seek(timeline.index);
        return;
      }
      timeline?.pause();
      showFile(statics[picker.value], false).catch(failed(statics[picker.value]));
    });
    controls.push(picker);
  }
  timeline?.addDrawer((step) => {
    if (!step.mesh) return undefined;
    if (picker) picker.value = "";
    return showFile(step.mesh, false).catch(failed(step.mesh));
  });

  const first = timeline?.current.mesh ?? statics[0] ?? meshes[0];
  if (picker) picker.value = statics.includes(first) ? statics.indexOf(first) : "";
  api.ready = showFile(first, !initialCamera).then(() => {
    if (initialCamera) viewer.setCamera(initialCamera);
    api.loaded = true;
  });
  api.ready.catch(failed(first));
  // Then fetch the other frames one after another, so playing does not wait on the network.
  if (timeline) api.ready.then(() => prefetch(viewer, timeline.steps.map((s) => s.mesh).filter(Boolean), options), () => null);
  return el("section", { class: "panel viewer" }, el("div", { class: "viewer-box" }, canvas), el("div", { class: "toolbar" }, controls));
}

async function prefetch(viewer, files, options) {
  for (const file of files) await viewer.load(file.url, options(file)).catch(() => null); // shown when reached
}

/** "field 30.30 dB, mesh 27.80 dB (-2.50)": how much of the field's fidelity the exported file keeps. */
function fidelityLine(metrics) {
  const field = metrics.psnr ?? metrics.train_psnr;
  if (typeof field !== "number" || typeof metrics.mesh_psnr !== "number") return null;
  const gap = metrics.mesh_psnr - field;
  return el("p", { class: "fidelity", id: "fidelity" },
    `PSNR: field ${field.toFixed(2)} dB, exported mesh ${metrics.mesh_psnr.toFixed(2)} dB (${gap >= 0 ? "+" : ""}${gap.toFixed(2)})`);
}

function metricsPanel(manifest) {
  const metrics = Object.entries(manifest.metrics || {});
  const stages = manifest.stages || [];
  return el("section", { class: "panel side" },
    el("h2", {}, "Metrics"),
    fidelityLine(manifest.metrics || {}),
    metrics.length
      ? el("table", { class: "kv", id: "metrics" }, metrics.map(([k, v]) => el("tr", {}, el("th", {}, k), el("td", {}, typeof v === "object" ? JSON.stringify(v) : formatNumber(v)))))
      : el("p", { class: "muted" }, "none yet"),
    el("h2", {}, "Stages"),
    el("table", { class: "stages" },
      el("tr", {}, el("th", {}, "stage"), el("th", {}, "status"), el("th", {}, "time"), el("th", {}, "estimate")),
      stages.map((s) => el("tr", {}, el("td", {}, s.name), el("td", {}, statusBadge(s.status)), el("td", {}, formatSeconds(s.seconds)), el("td", {}, formatSeconds(s.estimated_seconds))))));
}

function figure(file, { lazy = true } = {}) {
  return el("figure", {}, el("a", { href: file.url }, el("img", { src: file.url, alt: file.path, loading: lazy ? "lazy" : null })), el("figcaption", {}, file.path.split("/").pop()));
}

/** The current frame's images (views/TT-CC.png), swapped in once they are decoded so playing never flickers. */
function frameImages(timeline) {
  const grid = el("div", { class: "views-grid", id: "frame-views" });
  let latest = 0;
  const draw = async (step) => {
    const request = (latest += 1);
    const figures = step.images.map((file) => figure(file, { lazy: false }));
    await Promise.all(figures.map((f) => f.querySelector("img").decode().catch(() => null)));
    if (request === latest) grid.replaceChildren(...figures);
  };
  timeline.addDrawer(draw);
  draw(timeline.current);
  return grid;
}

function mediaPanel(files, timeline) {
  const images = files.filter((f) => isImageFile(f) && !isTimed(f));
  const turntables = files.filter((f) => f.role === "turntable");
  const sections = [];
  for (const role of ["views", "render"]) {
    const group = images.filter((f) => f.role === role);
    if (group.length === 0) continue;
    sections.push(el("h2", {}, role === "views" ? "Generated views" : "Renders"), el("div", { class: "views-grid" }, group.map((f) => figure(f))));
  }
  if (timeline?.steps.some((step) => step.images.length)) {
    sections.push(el("h2", {}, "Views at the current frame ", el("span", { class: "muted" }, "(follows the time slider)")), frameImages(timeline));
  }
  const video = turntables.find((f) => VIDEO_FORMATS.includes(extension(f.path)));
  const gif = turntables.find((f) => extension(f.path) === "gif");
  if (video || gif) {
    sections.push(el("h2", {}, "Turntable"), video
      ? el("video", { src: video.url, controls: true, autoplay: true, loop: true, muted: true, playsinline: true, class: "turntable" })
      : el("img", { src: gif.url, alt: "turntable", class: "turntable" }));
  }
  return sections.length ? el("section", { class: "panel" }, sections) : null;
}

/** Every numeric field the events carry (loss, psnr, train_psnr, ...), losses first. */
function curveKeys(events) {
  const skip = new Set(["time", "step", "total", "eta_s"]);
  const keys = [];
  for (const event of events) {
    for (const [key, value] of Object.entries(event)) {
      if (typeof value === "number" && !skip.has(key) && !keys.includes(key)) keys.push(key);
    }
  }
  const isLoss = (key) => key.includes("loss");
  return [...keys.filter(isLoss), ...keys.filter((k) => !isLoss(k))];
}

/** One chart per numeric event field, x = step, one line per stage; losses on a log scale. */
function curvesPanel() {
  const charts = el("div", { class: "charts" });
  const node = el("section", { class: "panel" }, el("h2", {}, "Training curves"), charts);
  const canvases = new Map();
  let latest = [];
  const draw = (events) => {
    latest = events;
    const keys = curveKeys(events);
    if (keys.length === 0) charts.replaceChildren(el("p", { class: "muted" }, "No training events yet."));
    for (const key of keys.filter((k) => !canvases.has(k))) {
      charts.querySelector("p")?.remove();
      canvases.set(key, el("canvas", { class: "chart", id: `chart-${key}` }));
      charts.append(canvases.get(key));
    }
    // Drawn after every canvas is in the grid, so each is drawn at its final width.
    for (const key of keys) {
      const log = key.includes("loss");
      drawChart(canvases.get(key), seriesFromEvents(events, key), { title: log ? `${key} (log scale)` : key, xLabel: "step", log });
    }
  };
  let width = 0;
  new ResizeObserver(() => {
    if (charts.clientWidth !== width && latest.length) draw(latest);
    width = charts.clientWidth;
  }).observe(charts);
  return { node, draw };
}

function filesPanel(run) {
  const rows = run.files.map((f) => el("tr", {},
    el("td", {}, el("a", { href: f.url, download: f.path.split("/").pop() }, f.path)),
    el("td", {}, f.role || ""), el("td", {}, f.stage || ""), el("td", { class: "num" }, formatBytes(f.bytes)),
    el("td", { class: "hash", title: f.sha256 || "" }, (f.sha256 || "").slice(0, 12))));
  const extras = ["manifest.json", "events.jsonl", "log.txt"].map((name) => el("a", { href: `/api/runs/${encodeURIComponent(run.id)}/files/${name}`, download: name }, name));
  return el("section", { class: "panel" }, el("h2", {}, "Files"),
    el("table", { class: "files", id: "files" }, el("tr", {}, ["file", "role", "stage", "size", "sha256"].map((h) => el("th", {}, h))), rows),
    el("p", { class: "extras" }, extras.flatMap((a) => [a, " "])));
}

function configPanel(manifest) {
  return el("section", { class: "panel" }, el("details", { open: true }, el("summary", {}, "Resolved config"),
    el("pre", { class: "config" }, JSON.stringify({ inputs: manifest.inputs, seed: manifest.seed, config: manifest.config }, null, 2)),
    el("p", { class: "muted" }, `gen3d ${manifest.gen3d_version ?? "?"} · git ${manifest.git_rev ?? "?"} · torch ${manifest.torch_version ?? "?"} · ${manifest.num_threads ?? "?"} threads · ${manifest.device ?? "?"}`)));
}

/** While the run is queued or running: a progress bar fed by the SSE stream, redrawing the curves too. */
function liveProgress(run, events, curves) {
  const bar = progressBar();
  const node = el("section", { class: "panel live", id: "live" }, el("h2", {}, "Progress"), bar);
  const last = events[events.length - 1];
  if (last) bar.update(last.step || 0, last.total, describeEvent(last));
  follow(`/api/runs/${encodeURIComponent(run.id)}/stream?since=${events.length}`, {
    progress: (event) => {
      events.push(event);
      bar.update(event.step || 0, event.total, describeEvent(event));
      curves.draw(events);
    },
    end: () => setTimeout(() => location.reload(), 300),
  });
  return node;
}

async function main() {
  const root = document.getElementById("app");
  if (!runId) {
    root.append(el("p", { class: "error" }, "No run id given (run.html?id=RUN_ID)."));
    return;
  }
  let run;
  let events;
  try {
    [run, { events }] = await Promise.all([getJSON(`/api/runs/${encodeURIComponent(runId)}`), getJSON(`/api/runs/${encodeURIComponent(runId)}/events`)]);
  } catch (error) {
    root.append(el("a", { href: "./", class: "back" }, "← all runs"), el("p", { class: "error" }, error.message));
    return;
  }
  const curves = curvesPanel();
  const timeline = runTimeline(run.files);
  const sections = [
    header(run),
    LIVE_STATUSES.includes(run.summary.status) ? liveProgress(run, events, curves) : null,
    el("div", { class: "run-top" }, meshPanel(run.files, timeline), metricsPanel(run.manifest)),
    mediaPanel(run.files, timeline),
    curves.node,
    configPanel(run.manifest),
    filesPanel(run),
  ];
  root.append(...sections.filter(Boolean));
  curves.draw(events);
}

main();
