// Batches (GET /api/batches): each `gen3d batch` folder in RUNS_DIR as one group with its progress and
// its jobs' statuses; polled while a batch is unfinished. Hidden when there are none.

import { el, formatSeconds, getJSON, progressBar, statusBadge } from "./api.js";

const POLL_MS = 3000;

function batchRow(batch) {
  const bar = progressBar();
  const finished = batch.counts.done + batch.counts.failed;
  const counts = Object.entries(batch.counts).filter(([, n]) => n).map(([status, n]) => `${n} ${status}`).join(" · ");
  bar.update(finished, batch.total, `${finished}/${batch.total} · ${counts}`);
  const jobs = batch.jobs.map((job) => el("li", { dataset: { jobId: job.id } }, statusBadge(job.status), ` ${job.id} · ${formatSeconds(job.seconds)}`));
  return el("details", { class: "batch", dataset: { batchId: batch.id, finished: String(finished), total: String(batch.total) } },
    el("summary", {}, el("strong", {}, batch.id), " ", bar),
    el("ul", { class: "batch-jobs" }, jobs));
}

export class BatchesView {
  constructor() {
    this.list = el("div", { id: "batches" });
    this.node = el("section", { class: "panel", hidden: true }, el("h2", {}, "Batches"), this.list);
  }

  async refresh() {
    const { batches } = await getJSON("/api/batches");
    const open = new Set([...this.list.querySelectorAll("details[open]")].map((d) => d.dataset.batchId));
    this.list.replaceChildren(...batches.map(batchRow));
    for (const node of this.list.querySelectorAll("details")) node.open = open.has(node.dataset.batchId);
    this.node.hidden = batches.length === 0;
    if (batches.some((b) => b.counts.pending + b.counts.running > 0)) setTimeout(() => this.refresh().catch(() => {}), POLL_MS);
  }
}
