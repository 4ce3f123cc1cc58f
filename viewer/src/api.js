// Talking to the gen3d server (docs/api.md) and small formatting helpers shared by both pages.

// A server that needs a token prints its URL with `?token=...`; on that first page load the server keeps
// the token as a cookie, which every later request (fetch, event stream, file link) carries by itself.
// Take it out of the address bar so it is not bookmarked or shared by accident.
const pageUrl = new URL(location.href);
if (pageUrl.searchParams.has("token")) {
  pageUrl.searchParams.delete("token");
  history.replaceState(history.state, "", pageUrl);
}

export async function getJSON(url) {
  const response = await fetch(url, { headers: { Accept: "application/json" } });
  const body = await response.json().catch(() => ({ error: `${response.status} ${response.statusText}` }));
  if (!response.ok) throw new Error(body.error || `${response.status} ${response.statusText}`);
  return body;
}

/** POST a job: JSON, or multipart when an image file rides along. Resolves to the queued job. */
export async function submitJob(kind, options, imageFile) {
  let init;
  if (imageFile) {
    const form = new FormData();
    form.append("kind", kind);
    form.append("options", JSON.stringify(options));
    form.append("image", imageFile, imageFile.name);
    init = { method: "POST", body: form };
  } else {
    init = { method: "POST", body: JSON.stringify({ kind, options }), headers: { "Content-Type": "application/json" } };
  }
  const response = await fetch("/api/jobs", init);
  const body = await response.json().catch(() => ({ error: `${response.status} ${response.statusText}` }));
  if (!response.ok) throw new Error(body.error || `${response.status} ${response.statusText}`);
  return body;
}

export async function cancelJob(id) {
  const response = await fetch(`/api/jobs/${id}/cancel`, { method: "POST" });
  if (!response.ok) throw new Error((await response.json()).error);
  return response.json();
}

/**
 * Follow a job's or a run's progress stream (server-sent events).
 * handlers: progress(event), status(statusObject), end(finalStatus). Returns the EventSource.
 */
export function follow(url, handlers) {
  const source = new EventSource(url);
  source.addEventListener("progress", (e) => handlers.progress?.(JSON.parse(e.data)));
  source.addEventListener("status", (e) => handlers.status?.(JSON.parse(e.data)));
  source.addEventListener("end", (e) => {
    source.close();
    handlers.end?.(JSON.parse(e.data).status);
  });
  return source;
}

/** Create an element: el("a", {href: "/", class: "x"}, "text", child). */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "dataset") Object.assign(node.dataset, value);
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

export function formatSeconds(seconds) {
  if (seconds === null || seconds === undefined) return "–";
  if (seconds < 60) return `${seconds.toFixed(seconds < 10 ? 1 : 0)} s`;
  const minutes = Math.floor(seconds / 60);
  if (minutes < 60) return `${minutes} min ${Math.round(seconds % 60)} s`;
  return `${Math.floor(minutes / 60)} h ${minutes % 60} min`;
}

export function formatNumber(value) {
  if (typeof value !== "number") return String(value);
  if (Number.isInteger(value)) return String(value);
  const magnitude = Math.abs(value);
  return magnitude !== 0 && (magnitude < 1e-3 || magnitude >= 1e5) ? value.toExponential(2) : value.toPrecision(4);
}

export function formatBytes(bytes) {
  if (typeof bytes !== "number") return "–";
  const units = ["B", "KB", "MB", "GB"];
  let i = 0;
  while (bytes >= 1024 && i < units.length - 1) {
    bytes /= 1024;
    i += 1;
  }
  return `${bytes.toFixed(i ? 1 : 0)} ${units[i]}`;
}

export function formatTime(epochSeconds) {
  if (!epochSeconds) return "";
  return new Date(epochSeconds * 1000).toLocaleString();
}

/** What a run is "of": its prompt, else its image or scene name, else its id. */
export function runTitle(run) {
  const inputs = run.inputs || {};
  if (run.prompt) return run.prompt;
  for (const key of ["image", "scene"]) {
    if (typeof inputs[key] === "string") return inputs[key].split("/").filter(Boolean).pop();
  }
  return run.id;
}

export function statusBadge(status) {
  return el("span", { class: `badge status-${status || "unknown"}`, dataset: { status: status || "unknown" } }, status || "unknown");
}

/** A progress bar element with an update(step, total, label) method. */
export function progressBar() {
  const fill = el("div", { class: "progress-fill" });
  const label = el("span", { class: "progress-label" });
  const bar = el("div", { class: "progress" }, fill, label);
  bar.update = (step, total, text) => {
    const fraction = total ? Math.min(1, step / total) : 0;
    fill.style.width = `${(fraction * 100).toFixed(1)}%`;
    label.textContent = text;
  };
  return bar;
}

/** The progress bar's label for one events.jsonl record. */
export function describeEvent(event) {
  const parts = [event.stage || ""];
  if (event.total) parts.push(`${event.step}/${event.total}`);
  if (typeof event.loss === "number") parts.push(`loss ${formatNumber(event.loss)}`);
  if (typeof event.psnr === "number") parts.push(`PSNR ${event.psnr.toFixed(2)} dB`);
  if (typeof event.eta_s === "number") parts.push(`ETA ${formatSeconds(event.eta_s)}`);
  if (event.message) parts.push(event.message);
  return parts.filter(Boolean).join(" · ");
}
