// A 4D run's frames in time: which frame is current, a looping play/pause, and the controls for them.
// The 3D view and the per-frame views register as drawers; playing waits until every drawer has drawn a
// frame before moving on, so a slow load (software WebGL, a big GLB) slows the loop down instead of
// skipping frames or piling up requests.

import { el } from "./api.js";

export const PLAYBACK_FPS = 8;

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, Math.max(0, ms)));

/** Whether an artifact belongs to one moment of a 4D run (a `frame` index or a `time` in [0, 1]). */
export const isTimed = (file) => typeof file.frame === "number" || typeof file.time === "number";

/**
 * The frames of a run, in order: [{key, time, mesh, images}], one per `frame` (or `time`, for entries that
 * only carry a time), holding the first mesh and every image of that frame (images ordered by `view`).
 */
export function timelineSteps(meshes, images) {
  const steps = new Map();
  const stepOf = (file) => {
    const key = typeof file.frame === "number" ? file.frame : file.time;
    if (!steps.has(key)) steps.set(key, { key, time: null, mesh: null, images: [] });
    const step = steps.get(key);
    if (typeof file.time === "number") step.time ??= file.time;
    return step;
  };
  for (const file of meshes) stepOf(file).mesh ??= file;
  for (const file of images) stepOf(file).images.push(file);
  for (const step of steps.values()) step.images.sort((a, b) => (a.view ?? 0) - (b.view ?? 0) || a.path.localeCompare(b.path));
  return [...steps.values()].sort((a, b) => a.key - b.key);
}

export class Timeline {
  constructor(steps, { start = 0, fps = PLAYBACK_FPS } = {}) {
    this.steps = steps;
    this.fps = fps;
    this.index = this.wrap(start);
    this.playing = false;
    this.drawers = [];
    this.observers = [];
    this.loops = 0; // a new play() starts a new loop; an older one still sleeping sees it and stops
  }

  get current() {
    return this.steps[this.index];
  }

  wrap(index) {
    const count = this.steps.length;
    return ((Math.round(index) % count) + count) % count;
  }

  /** drawer(step) draws a frame and may return a promise; it must not reject (report errors itself). */
  addDrawer(drawer) {
    this.drawers.push(drawer);
  }

  /** observer(timeline) hears every change of frame or of play/pause (the controls); called once now. */
  addObserver(observer) {
    this.observers.push(observer);
    observer(this);
  }

  notify() {
    for (const observer of this.observers) observer(this);
  }

  /** Show frame `index` (wrapped around); resolves once every drawer has drawn it. */
  seek(index) {
    this.index = this.wrap(index);
    this.notify();
    const step = this.current;
    return Promise.all(this.drawers.map((draw) => draw(step)));
  }

  play() {
    if (this.playing) return;
    this.playing = true;
    this.notify();
    this.loop(++this.loops);
  }

  pause() {
    if (!this.playing) return;
    this.playing = false;
    this.notify();
  }

  toggle() {
    if (this.playing) this.pause();
    else this.play();
  }

  /** One frame every 1/fps seconds, or as fast as the drawers manage when they are slower. */
  async loop(id) {
    const period = 1000 / this.fps;
    let due = performance.now() + period;
    for (;;) {
      await sleep(due - performance.now());
      if (!this.playing || id !== this.loops) return;
      due = performance.now() + period;
      await this.seek(this.index + 1);
    }
  }
}

function stepLabel(timeline) {
  const { time } = timeline.current;
  const frame = `frame ${timeline.index + 1} of ${timeline.steps.length}`;
  return typeof time === "number" ? `${frame} · t = ${time.toFixed(2)}` : frame;
}

/** Play/pause, a slider over the frames (dragging it pauses) and the current frame and time. */
export function timelineControls(timeline) {
  const slider = el("input", { type: "range", id: "time-slider", min: 0, max: timeline.steps.length - 1, step: 1, "aria-label": "frame" });
  const button = el("button", { type: "button", id: "play-pause", onclick: () => timeline.toggle() });
  const label = el("span", { class: "time-label", id: "time-label" });
  slider.addEventListener("input", () => {
    timeline.pause();
    timeline.seek(Number(slider.value));
  });
  timeline.addObserver(() => {
    slider.value = timeline.index;
    button.textContent = timeline.playing ? "❚❚ pause" : "▶ play";
    button.setAttribute("aria-pressed", String(timeline.playing));
    label.textContent = stepLabel(timeline);
  });
  return el("div", { class: "player" }, button, slider, label);
}
