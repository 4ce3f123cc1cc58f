// Job forms (built from GET /api/kinds) and the queue table with live progress per running job.

import { cancelJob, describeEvent, el, follow, getJSON, progressBar, statusBadge, submitJob } from "./api.js";

const PRIOR_SUGGESTIONS = ["shapeworld-mv", "shapeworld-4d", "sd", "zero123", "mvdream"];
const ACTIVE = ["queued", "running"];
const POLL_MS = 2000;

/** One form control for an option spec from /api/kinds. */
function control(kind, option, runs) {
  const id = `opt-${kind.name}-${option.name}`;
  const common = { id, name: option.name, required: option.required, title: option.help };
  let input;
  switch (option.type) {
    case "int":
    case "float":
      input = el("input", { ...common, type: "number", min: option.low, max: option.high, step: option.type === "int" ? 1 : "any", value: option.default ?? "" });
      break;
    case "bool":
      input = el("input", { ...common, type: "checkbox", checked: option.default === true });
      break;
    case "overrides":
      input = el("textarea", { ...common, rows: 2, placeholder: "key.sub=value" });
      break;
    case "image":
      input = el("input", { ...common, type: "file", accept: "image/png,image/jpeg,image/webp,image/bmp" });
      break;
    case "run": {
      const resumable = runs.filter((r) => ["interrupted", "failed"].includes(r.status));
      input = el("select", common, resumable.length ? resumable.map((r) => el("option", { value: r.id }, r.id)) : el("option", { value: "" }, "no interrupted runs"));
      break;
    }
    case "name":
      input = el("input", { ...common, type: "text", placeholder: "default", list: option.name === "prior" ? "prior-names" : null });
      break;
    default:
      input = el("input", { ...common, type: "text", placeholder: option.type === "scene" || option.type === "yaml" ? "path on the server" : "" });
  }
  return el("label", { class: `field field-${option.type}`, for: id }, el("span", {}, option.name, option.required ? " *" : ""), input, el("small", {}, option.help));
}

/** The options object for a form, and the image file if the kind takes one. */
function readForm(kind, form) {
  const options = {};
  let image = null;
  for (const option of kind.options) {
    const input = form.elements[option.name];
    if (option.type === "image") image = input.files[0] || null;
    else if (option.type === "bool") options[option.name] = input.checked;
    else if (input.value !== "") options[option.name] = option.type === "int" || option.type === "float" ? Number(input.value) : input.value;
  }
  return { options, image };
}

function jobForm(kind, runs, onSubmitted) {
  const message = el("p", { class: "form-message", role: "status" });
  const form = el("form", { class: "job-form", id: `form-${kind.name}`, dataset: { kind: kind.name } },
    el("p", { class: "muted" }, kind.help),
    kind.options.map((option) => control(kind, option, runs)),
    el("button", { type: "submit", disabled: !kind.available }, `Queue ${kind.title.toLowerCase()}`),
    kind.available ? null : el("p", { class: "muted" }, `Not available: this installation has no \`gen3d ${kind.name}\` command yet.`),
    message);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const { options, image } = readForm(kind, form);
    message.className = "form-message";
    message.textContent = "submitting…";
    try {
      const job = await submitJob(kind.name, options, image);
      message.textContent = `queued job ${job.id}`;
      onSubmitted(job);
    } catch (error) {
      message.className = "form-message error";
      message.textContent = error.message;
    }
  });
  return form;
}

/** Tabs with one form per job kind. */
export function jobForms(kinds, runs, onSubmitted) {
  const forms = kinds.map((kind) => jobForm(kind, runs, onSubmitted));
  const tabs = kinds.map((kind, i) => el("button", {
    type: "button", class: "tab", role: "tab", dataset: { kind: kind.name },
    onclick: () => select(i),
  }, kind.title));
  function select(index) {
    forms.forEach((f, i) => { f.hidden = i !== index; });
    tabs.forEach((t, i) => t.setAttribute("aria-selected", String(i === index)));
  }
  select(Math.max(0, kinds.findIndex((k) => k.available)));
  return el("div", { class: "job-forms" },
    el("datalist", { id: "prior-names" }, PRIOR_SUGGESTIONS.map((p) => el("option", { value: p }))),
    el("div", { class: "tabs", role: "tablist" }, tabs), forms);
}

/** The queue table; polls /api/jobs while jobs are active and follows each running job's stream. */
export class JobQueueView {
  constructor(onJobFinished) {
    this.onJobFinished = onJobFinished;
    this.rows = new Map();
    this.streams = new Map();
    this.submitted = null;
    this.body = el("tbody", {}, el("tr", { class: "empty" }, el("td", { colspan: 6, class: "muted" }, "No jobs yet.")));
    this.node = el("table", { class: "jobs", id: "jobs" },
      el("thead", {}, el("tr", {}, ["job", "kind", "status", "progress", "run", ""].map((h) => el("th", {}, h)))), this.body);
    this.timer = null;
  }

  async refresh() {
    const { jobs } = await getJSON("/api/jobs");
    for (const job of jobs.slice().reverse()) this.upsert(job);
    clearTimeout(this.timer);
    if (jobs.some((j) => ACTIVE.includes(j.status))) this.timer = setTimeout(() => this.refresh(), POLL_MS);
  }

  /** Called right after a submission, so the new job shows before the next poll. */
  add(job) {
    this.submitted = job.id;
    this.upsert(job);
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.refresh(), POLL_MS);
  }

  upsert(job) {
    let row = this.rows.get(job.id);
    if (!row) {
      row = this.makeRow(job);
      this.rows.set(job.id, row);
      this.body.querySelector("tr.empty")?.remove();
      this.body.prepend(row.node);
    }
    const wasActive = ACTIVE.includes(row.node.dataset.status);
    row.node.dataset.status = job.status;
    row.status.replaceChildren(statusBadge(job.status));
    row.cancel.hidden = !ACTIVE.includes(job.status);
    if (job.status !== "queued") row.run.replaceChildren(el("a", { href: `run.html?id=${encodeURIComponent(job.run_id)}` }, job.run_id));
    if (job.error) row.node.title = job.error;
    // Streams hold a connection each (browsers allow ~6 per server): follow running jobs and the job
    // just submitted from this page, not every queued one.
    if ((job.status === "running" || job.id === this.submitted) && ACTIVE.includes(job.status) && !this.streams.has(job.id)) this.followJob(job, row);
    if (wasActive && !ACTIVE.includes(job.status)) this.onJobFinished(job);
  }

  makeRow(job) {
    const bar = progressBar();
    const status = el("td");
    const run = el("td", { class: "run-link" }, "–");
    const cancel = el("button", { type: "button", class: "small", onclick: () => cancelJob(job.id).then((j) => this.upsert(j)) }, "cancel");
    const node = el("tr", { dataset: { jobId: job.id, status: job.status, eventsSeen: 0 } },
      el("td", {}, `#${job.id}`), el("td", {}, job.kind), status, el("td", {}, bar), run, el("td", {}, cancel));
    return { node, bar, status, run, cancel };
  }

  followJob(job, row) {
    let seen = 0;
    this.streams.set(job.id, follow(job.stream, {
      progress: (event) => {
        seen += 1;
        row.node.dataset.eventsSeen = seen;
        row.bar.update(event.step || 0, event.total, describeEvent(event));
      },
      status: (current) => current && current.status && this.upsert(current),
      end: (status) => {
        if (status === "done") row.bar.update(1, 1, "done");
        this.refresh();
      },
    }));
  }
}
