// Line charts on a <canvas>, drawn by hand: training curves need axes, ticks and a few series, not a library.

const COLORS = ["#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2"];
const PAD = { left: 56, right: 12, top: 24, bottom: 30 };

/** About `count` round tick values covering [lo, hi]. */
export function niceTicks(lo, hi, count = 5) {
  if (!(hi > lo)) return [lo];
  const raw = (hi - lo) / count;
  const power = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((m) => m * power).find((s) => s >= raw);
  const ticks = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) ticks.push(Number(v.toPrecision(12)));
  return ticks;
}

/** Ticks for a log10 axis spanning [lo, hi] (in log10 units): decades, 1-2-5 steps, or plain steps for a narrow range. */
export function logTicks(lo, hi) {
  const all = [];
  for (let k = Math.floor(lo); k <= Math.ceil(hi); k += 1) {
    for (const m of [1, 2, 5]) all.push({ value: k + Math.log10(m), decade: m === 1 });
  }
  const inside = all.filter((t) => t.value >= lo - 1e-9 && t.value <= hi + 1e-9);
  const decades = inside.filter((t) => t.decade);
  if (decades.length >= 3) return decades.map((t) => t.value);
  if (inside.length >= 2) return inside.map((t) => t.value);
  return niceTicks(10 ** lo, 10 ** hi, 4).filter((v) => v > 0).map(Math.log10); // less than a 1-2-5 step
}

function extent(values) {
  let lo = Infinity;
  let hi = -Infinity;
  for (const v of values) {
    if (v < lo) lo = v;
    if (v > hi) hi = v;
  }
  if (lo === hi) {
    lo -= Math.abs(lo) * 0.1 || 1;
    hi += Math.abs(hi) * 0.1 || 1;
  }
  return [lo, hi];
}

function tickLabel(value, log) {
  const v = log ? 10 ** value : value;
  const magnitude = Math.abs(v);
  return magnitude !== 0 && (magnitude < 1e-2 || magnitude >= 1e4) ? v.toExponential(0) : String(Number(v.toPrecision(3)));
}

/**
 * Draw series [{name, points: [[x, y], ...]}] into `canvas`.
 * options: {title, xLabel, log (log10 y axis; non-positive values dropped)}.
 */
export function drawChart(canvas, series, options = {}) {
  const ratio = window.devicePixelRatio || 1;
  const width = canvas.clientWidth || 480;
  const height = canvas.clientHeight || 220;
  canvas.width = Math.round(width * ratio);
  canvas.height = Math.round(height * ratio);
  const ctx = canvas.getContext("2d");
  ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
  ctx.clearRect(0, 0, width, height);
  ctx.font = "12px system-ui, sans-serif";

  const prepared = series
    .map((s) => ({ ...s, points: s.points.filter(([x, y]) => Number.isFinite(x) && Number.isFinite(y) && (!options.log || y > 0)) }))
    .map((s) => ({ ...s, points: options.log ? s.points.map(([x, y]) => [x, Math.log10(y)]) : s.points }))
    .filter((s) => s.points.length > 0);
  ctx.fillStyle = "#111";
  ctx.fillText(options.title || "", PAD.left, 15);
  if (prepared.length === 0) {
    ctx.fillStyle = "#888";
    ctx.fillText("no data yet", width / 2 - 30, height / 2);
    return;
  }
  const [x0, x1] = extent(prepared.flatMap((s) => s.points.map((p) => p[0])));
  const [y0, y1] = extent(prepared.flatMap((s) => s.points.map((p) => p[1])));
  const plotW = width - PAD.left - PAD.right;
  const plotH = height - PAD.top - PAD.bottom;
  const px = (x) => PAD.left + ((x - x0) / (x1 - x0)) * plotW;
  const py = (y) => PAD.top + (1 - (y - y0) / (y1 - y0)) * plotH;

  ctx.strokeStyle = "#e5e7eb";
  ctx.fillStyle = "#555";
  ctx.lineWidth = 1;
  ctx.textAlign = "right";
  const yTicks = options.log ? logTicks(y0, y1) : niceTicks(y0, y1);
  for (const t of yTicks) {
    ctx.beginPath();
    ctx.moveTo(PAD.left, py(t));
    ctx.lineTo(width - PAD.right, py(t));
    ctx.stroke();
    ctx.fillText(tickLabel(t, options.log), PAD.left - 6, py(t) + 4);
  }
  ctx.textAlign = "center";
  for (const t of niceTicks(x0, x1, 6)) {
    ctx.fillText(String(t), px(t), height - PAD.bottom + 16);
  }
  ctx.strokeStyle = "#9ca3af";
  ctx.strokeRect(PAD.left, PAD.top, plotW, plotH);
  if (options.xLabel) ctx.fillText(options.xLabel, PAD.left + plotW / 2, height - 2);

  prepared.forEach((s, i) => {
    ctx.strokeStyle = COLORS[i % COLORS.length];
    ctx.lineWidth = 1.5;
    ctx.beginPath();
    s.points.forEach(([x, y], j) => (j === 0 ? ctx.moveTo(px(x), py(y)) : ctx.lineTo(px(x), py(y))));
    ctx.stroke();
    if (prepared.length > 1 || s.name) {
      ctx.fillStyle = COLORS[i % COLORS.length];
      ctx.textAlign = "right";
      ctx.fillText(s.name || "", width - PAD.right - 4, PAD.top + 14 + i * 14);
    }
  });
}

/** Curves from events.jsonl records: one series per stage for `key` (e.g. "loss"), x = step. */
export function seriesFromEvents(events, key) {
  const byStage = new Map();
  for (const e of events) {
    if (typeof e[key] !== "number" || typeof e.step !== "number") continue;
    const stage = e.stage || "";
    if (!byStage.has(stage)) byStage.set(stage, []);
    byStage.get(stage).push([e.step, e[key]]);
  }
  return [...byStage].map(([name, points]) => ({ name, points }));
}
