// The gallery page (index.html): every run under RUNS_DIR as a card, with sorting and filtering, plus the
// job forms, the queue and the batches.

import { el, formatNumber, formatSeconds, formatTime, getJSON, runTitle, statusBadge } from "./api.js";
import { BatchesView } from "./batches.js";
import { JobQueueView, jobForms } from "./jobs.js";

const SORTS = {
  newest: (a, b) => (b.updated || 0) - (a.updated || 0),
  oldest: (a, b) => (a.updated || 0) - (b.updated || 0),
  longest: (a, b) => (b.duration_s ?? -1) - (a.duration_s ?? -1),
  shortest: (a, b) => (a.duration_s ?? Infinity) - (b.duration_s ?? Infinity),
  name: (a, b) => runTitle(a).localeCompare(runTitle(b)),
};

function card(run) {
  const metrics = Object.entries(run.metrics || {});
  return el("a", { class: "card", href: `run.html?id=${encodeURIComponent(run.id)}`, dataset: { runId: run.id, kind: run.kind || "", status: run.status || "" } },
    run.thumbnail ? el("img", { class: "thumb", src: run.thumbnail, alt: "", loading: "lazy" }) : el("div", { class: "thumb empty" }, run.kind || "?"),
    el("div", { class: "card-body" },
      el("h3", {}, runTitle(run)),
      el("p", { class: "meta" }, statusBadge(run.status), " ",
        run.frames ? [el("span", { class: "badge badge-4d", title: `${run.frames} frames` }, "4D"), " "] : null, run.kind || "", run.method ? ` · ${run.method}` : "", ` · ${formatSeconds(run.duration_s)}`),
      metrics.length ? el("p", { class: "metrics" }, metrics.map(([k, v]) => el("span", { class: "chip" }, `${k} ${formatNumber(v)}`))) : null,
      run.error ? el("p", { class: "error" }, run.error) : null,
      el("p", { class: "when" }, formatTime(run.updated))));
}

function select(id, label, values) {
  return el("label", {}, label, " ", el("select", { id }, el("option", { value: "" }, "all"), values.map((v) => el("option", { value: v }, v))));
}

class Gallery {
  constructor() {
    this.runs = [];
    this.grid = el("div", { class: "grid", id: "runs" });
    this.count = el("span", { class: "muted", id: "run-count" });
    this.search = el("input", { type: "search", id: "filter-text", placeholder: "filter by prompt, input, id, method…" });
    this.kind = select("filter-kind", "kind", []);
    this.status = select("filter-status", "status", []);
    this.sort = el("label", {}, "sort ", el("select", { id: "sort" }, Object.keys(SORTS).map((s) => el("option", { value: s }, s))));
    this.bar = el("div", { class: "filters" }, this.search, this.kind, this.status, this.sort, this.count);
    for (const input of [this.search, this.kind, this.status, this.sort]) input.addEventListener("input", () => this.draw());
    this.node = el("section", { class: "gallery" }, el("h2", {}, "Runs"), this.bar, this.grid);
  }

  async load() {
    ({ runs: this.runs } = await getJSON("/api/runs"));
    this.fillChoices(this.kind.querySelector("select"), this.runs.map((r) => r.kind));
    this.fillChoices(this.status.querySelector("select"), this.runs.map((r) => r.status));
    this.draw();
  }

  fillChoices(selectNode, values) {
    const current = selectNode.value;
    const unique = [...new Set(values.filter(Boolean))].sort();
    selectNode.replaceChildren(el("option", { value: "" }, "all"), ...unique.map((v) => el("option", { value: v }, v)));
    selectNode.value = unique.includes(current) ? current : "";
  }

  draw() {
    const text = this.search.value.trim().toLowerCase();
    const kind = this.kind.querySelector("select").value;
    const status = this.status.querySelector("select").value;
    const sort = SORTS[this.sort.querySelector("select").value];
    const shown = this.runs
      .filter((r) => !kind || r.kind === kind)
      .filter((r) => !status || r.status === status)
      .filter((r) => !text || [r.id, runTitle(r), r.method, r.kind, JSON.stringify(r.inputs || {})].join(" ").toLowerCase().includes(text))
      .sort(sort);
    this.grid.replaceChildren(...(shown.length ? shown.map(card) : [el("p", { class: "muted" }, this.runs.length ? "No run matches the filters." : "No runs yet: queue a job above.")]));
    this.count.textContent = `${shown.length} of ${this.runs.length} runs`;
  }
}

async function main() {
  const root = document.getElementById("app");
  const gallery = new Gallery();
  const queue = new JobQueueView(() => gallery.load());
  const batches = new BatchesView();
  const jobsPanel = el("section", { class: "panel new-job" }, el("h2", {}, "New job"), el("p", { class: "muted" }, "loading…"));
  root.append(jobsPanel, el("section", { class: "panel" }, el("h2", {}, "Queue"), queue.node), batches.node, gallery.node);
  try {
    const [{ kinds }] = await Promise.all([getJSON("/api/kinds"), gallery.load(), queue.refresh(), batches.refresh()]);
    jobsPanel.replaceChildren(el("h2", {}, "New job"), jobForms(kinds, gallery.runs, (job) => queue.add(job)));
  } catch (error) {
    root.prepend(el("p", { class: "error" }, `The server did not answer: ${error.message}`));
  }
}

main();
