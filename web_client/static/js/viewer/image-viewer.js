// One image on a canvas: window/level by dragging, zoom (wheel or drag) and pan, distance
// measurements in mm, and cine playback of multi-frame images at their recorded frame rate.

import { el } from "../dom.js";
import { applyTranslations, onLanguageChange, t } from "../i18n.js";

const TOOLS = ["window", "pan", "zoom", "measure"];

export class ImageViewer {
  constructor(container) {
    this.container = container;
    this.source = null;
    this.tool = "window";
    this.frame = 0;
    this.playing = false;
    this.measurements = [];
    this.drag = null;
    this.view = { scale: 1, x: 0, y: 0 };
    this.pending = false;
    this.build();
    this.resizeObserver = new ResizeObserver(() => this.resize());
    this.resizeObserver.observe(this.stage);
    onLanguageChange(() => this.updateLabels());
  }

  build() {
    this.toolButtons = new Map(
      TOOLS.map((tool) => [
        tool,
        el("button", {
          type: "button",
          className: "tool",
          dataset: { tool, i18n: `viewer.tool.${tool}` },
          attrs: { "aria-pressed": String(tool === this.tool) },
          on: { click: () => this.setTool(tool) },
        }),
      ]),
    );
    this.playButton = el("button", { type: "button", dataset: { role: "play", i18n: "viewer.play" }, on: { click: () => this.togglePlay() } });
    this.slider = el("input", {
      type: "range",
      min: "1",
      value: "1",
      dataset: { role: "frame-slider", i18nAriaLabel: "viewer.frame" },
      on: { input: () => this.showFrame(Number(this.slider.value) - 1, true) },
    });
    this.frameLabel = el("span", { className: "frame-label", dataset: { role: "frame-label" } });
    this.cine = el("div", { className: "cine", hidden: true }, this.playButton, this.slider, this.frameLabel);
    this.canvas = el("canvas", { className: "image-canvas", dataset: { role: "image" } });
    this.stage = el("div", { className: "stage" }, this.canvas);
    this.windowLabel = el("span", { className: "window-label", dataset: { role: "window-label" } });
    this.scaleLabel = el("span", { className: "scale-label", dataset: { role: "scale-label" } });
    this.measureList = el("ul", { className: "measurements", dataset: { role: "measurements" } });
    const toolbar = el(
      "div",
      { className: "toolbar", attrs: { role: "toolbar" } },
      ...this.toolButtons.values(),
      el("button", { type: "button", dataset: { role: "reset", i18n: "viewer.reset" }, on: { click: () => this.reset() } }),
      el("button", { type: "button", dataset: { role: "clear-measurements", i18n: "viewer.clear_measurements" }, on: { click: () => this.clearMeasurements() } }),
      this.windowLabel,
      this.scaleLabel,
    );
    this.container.append(toolbar, this.stage, this.cine, this.measureList);
    applyTranslations(this.container);
    this.offscreen = document.createElement("canvas");
    this.canvas.addEventListener("pointerdown", (event) => this.pointerDown(event));
    this.canvas.addEventListener("pointermove", (event) => this.pointerMove(event));
    this.canvas.addEventListener("pointerup", (event) => this.pointerUp(event));
    this.canvas.addEventListener("pointercancel", () => (this.drag = null));
    this.canvas.addEventListener("wheel", (event) => this.wheel(event), { passive: false });
    this.canvas.addEventListener("dblclick", () => this.reset());
  }

  /** Show a source (see image-source.js); loadStarted is performance.now() when its loading began. */
  show(source, loadStarted) {
    this.stop();
    this.source = source;
    this.offscreen.width = source.width;
    this.offscreen.height = source.height;
    this.offscreenContext = this.offscreen.getContext("2d");
    this.measurements = [];
    this.frame = 0;
    this.toolButtons.get("window").disabled = !source.windowable;
    if (!source.windowable && this.tool === "window") this.setTool("pan");
    if (source.windowable && this.tool === "pan") this.setTool("window");
    this.cine.hidden = source.count < 2;
    this.slider.max = String(source.count);
    this.resize();
    this.fit();
    this.paintFrame();
    this.draw();
    this.canvas.dataset.frames = String(source.count);
    if (loadStarted !== undefined) this.canvas.dataset.loadMs = String(Math.round(performance.now() - loadStarted));
    this.updateLabels();
  }

  destroy() {
    this.stop();
    this.resizeObserver.disconnect();
    this.container.replaceChildren();
  }

  setTool(tool) {
    this.tool = tool;
    for (const [name, button] of this.toolButtons) button.setAttribute("aria-pressed", String(name === tool));
    this.canvas.dataset.tool = tool;
  }

  resize() {
    const rect = this.stage.getBoundingClientRect();
    const ratio = window.devicePixelRatio || 1;
    const width = Math.max(1, Math.round(rect.width * ratio));
    const height = Math.max(1, Math.round(rect.height * ratio));
    if (this.canvas.width === width && this.canvas.height === height) return;
    this.canvas.width = width;
    this.canvas.height = height;
    if (this.source) {
      this.fit();
      this.draw();
    }
  }

  fit() {
    if (!this.source) return;
    const scale = Math.min(this.canvas.width / this.source.width, this.canvas.height / this.source.height);
    this.view = {
      scale,
      x: (this.canvas.width - this.source.width * scale) / 2,
      y: (this.canvas.height - this.source.height * scale) / 2,
    };
  }

  reset() {
    if (!this.source) return;
    if (this.source.windowable) {
      this.source.setWindow(this.source.initialWindow);
      this.paintFrame();
    }
    this.fit();
    this.draw();
    this.updateLabels();
  }

  paintFrame() {
    this.source.paint(this.frame, this.offscreenContext);
    this.canvas.dataset.frame = String(this.frame + 1);
  }

  /** Redraw on the next animation frame (many pointer moves, one paint). */
  schedule(repaint) {
    this.repaint = this.repaint || repaint;
    if (this.pending) return;
    this.pending = true;
    requestAnimationFrame(() => {
      this.pending = false;
      if (!this.source) return;
      if (this.repaint) this.paintFrame();
      this.repaint = false;
      this.draw();
      this.updateLabels();
    });
  }

  draw() {
    const context = this.canvas.getContext("2d");
    context.setTransform(1, 0, 0, 1, 0, 0);
    context.fillStyle = "#000";
    context.fillRect(0, 0, this.canvas.width, this.canvas.height);
    if (!this.source) return;
    const { scale, x, y } = this.view;
    context.imageSmoothingEnabled = scale < 1;
    context.setTransform(scale, 0, 0, scale, x, y);
    context.drawImage(this.offscreen, 0, 0);
    context.setTransform(1, 0, 0, 1, 0, 0);
    const ratio = window.devicePixelRatio || 1;
    context.lineWidth = 2 * ratio;
    context.font = `${14 * ratio}px system-ui, sans-serif`;
    for (const line of this.measurements) {
      const a = this.toScreen(line.a);
      const b = this.toScreen(line.b);
      context.strokeStyle = "#ffd400";
      context.fillStyle = "#ffd400";
      context.beginPath();
      context.moveTo(a.x, a.y);
      context.lineTo(b.x, b.y);
      context.stroke();
      for (const end of [a, b]) context.fillRect(end.x - 3 * ratio, end.y - 3 * ratio, 6 * ratio, 6 * ratio);
      context.fillText(this.lengthText(line), b.x + 6 * ratio, b.y - 6 * ratio);
    }
  }

  toImage(event) {
    const rect = this.canvas.getBoundingClientRect();
    const ratio = this.canvas.width / rect.width;
    const { scale, x, y } = this.view;
    return { x: ((event.clientX - rect.left) * ratio - x) / scale, y: ((event.clientY - rect.top) * ratio - y) / scale };
  }

  toScreen(point) {
    const { scale, x, y } = this.view;
    return { x: point.x * scale + x, y: point.y * scale + y };
  }

  /** Length in mm from the pixel spacing (row spacing vertical, column spacing horizontal). */
  length(line) {
    const spacing = this.source.pixels.spacing;
    const dx = line.b.x - line.a.x;
    const dy = line.b.y - line.a.y;
    if (!spacing) return { value: Math.hypot(dx, dy), unit: "px" };
    return { value: Math.hypot(dx * spacing.column, dy * spacing.row), unit: "mm" };
  }

  lengthText(line) {
    const { value, unit } = this.length(line);
    return unit === "mm" ? t("viewer.length_mm", { value: value.toFixed(1) }) : t("viewer.length_px", { value: value.toFixed(0) });
  }

  pointerDown(event) {
    if (!this.source || event.button !== 0) return;
    this.canvas.setPointerCapture(event.pointerId);
    const start = { x: event.clientX, y: event.clientY };
    this.drag = { start, last: start, tool: this.tool, window: this.source.window && { ...this.source.window } };
    if (this.tool === "measure") {
      const point = this.toImage(event);
      this.drag.line = { a: point, b: point };
      this.measurements.push(this.drag.line);
    }
    if (this.tool === "zoom") this.drag.anchor = this.toImage(event);
  }

  pointerMove(event) {
    const drag = this.drag;
    if (!drag || !this.source) return;
    const ratio = this.canvas.width / this.canvas.getBoundingClientRect().width;
    const dx = event.clientX - drag.start.x;
    const dy = event.clientY - drag.start.y;
    if (drag.tool === "window" && this.source.windowable) {
      const step = this.source.span / 512; // the full range over about 512 px of movement
      this.source.setWindow({ center: drag.window.center + dy * step, width: drag.window.width + dx * step });
      this.schedule(true);
    } else if (drag.tool === "pan") {
      this.view.x += (event.clientX - drag.last.x) * ratio;
      this.view.y += (event.clientY - drag.last.y) * ratio;
      this.schedule(false);
    } else if (drag.tool === "zoom") {
      this.zoomAbout(drag.anchor, Math.exp(-(event.clientY - drag.last.y) / 150));
    } else if (drag.tool === "measure") {
      drag.line.b = this.toImage(event);
      this.schedule(false);
    }
    drag.last = { x: event.clientX, y: event.clientY };
  }

  pointerUp(event) {
    const drag = this.drag;
    this.drag = null;
    if (!drag) return;
    if (drag.tool === "measure") {
      const { value } = this.length(drag.line);
      const moved = Math.hypot(event.clientX - drag.start.x, event.clientY - drag.start.y);
      if (moved < 3 || value === 0) this.measurements.pop();
      this.renderMeasurements();
      this.schedule(false);
    }
  }

  wheel(event) {
    if (!this.source) return;
    event.preventDefault();
    this.zoomAbout(this.toImage(event), Math.exp(-event.deltaY / 500));
  }

  zoomAbout(point, factor) {
    const scale = Math.min(40, Math.max(0.05, this.view.scale * factor));
    const screen = this.toScreen(point);
    this.view = { scale, x: screen.x - point.x * scale, y: screen.y - point.y * scale };
    this.schedule(false);
  }

  clearMeasurements() {
    this.measurements = [];
    this.renderMeasurements();
    this.schedule(false);
  }

  renderMeasurements() {
    this.measureList.replaceChildren(...this.measurements.map((line) => el("li", { text: this.lengthText(line) })));
  }

  updateLabels() {
    if (!this.source) return;
    const voi = this.source.window;
    this.windowLabel.textContent = voi ? t("viewer.window", { center: Math.round(voi.center), width: Math.round(voi.width) }) : "";
    if (voi) this.canvas.dataset.window = `${Math.round(voi.center)}/${Math.round(voi.width)}`;
    // image pixels per CSS pixel, as a percentage
    this.scaleLabel.textContent = t("viewer.zoom", { percent: Math.round((this.view.scale / (window.devicePixelRatio || 1)) * 100) });
    if (this.source.count > 1) {
      const fps = 1000 / this.averageFrameTime();
      this.frameLabel.textContent = t("viewer.frame_of", { frame: this.frame + 1, count: this.source.count, fps: fps.toFixed(fps < 10 ? 1 : 0) });
      this.playButton.dataset.i18n = this.playing ? "viewer.pause" : "viewer.play";
      this.playButton.textContent = t(this.playButton.dataset.i18n);
      this.slider.value = String(this.frame + 1);
    }
    this.renderMeasurements();
  }

  // -- cine ------------------------------------------------------------------------------

  frameTime(index) {
    const times = this.source.pixels.frameTimes;
    return times.perFrame ? times.perFrame[index] : times.ms;
  }

  averageFrameTime() {
    let total = 0;
    for (let i = 0; i < this.source.count; i++) total += this.frameTime(i);
    return total / this.source.count;
  }

  showFrame(index, pause = false) {
    if (pause) this.stop();
    this.frame = ((index % this.source.count) + this.source.count) % this.source.count;
    this.schedule(true);
  }

  togglePlay() {
    if (this.playing) this.stop();
    else this.play();
    this.updateLabels();
  }

  /** Frames advance by the clock, so playback keeps the recorded rate even if painting is slow. */
  play() {
    if (!this.source || this.source.count < 2) return;
    this.playing = true;
    this.canvas.dataset.playing = "true";
    let shown = this.frame;
    let due = performance.now() + this.frameTime(shown);
    const step = (now) => {
      if (!this.playing) return;
      let advanced = false;
      while (now >= due) {
        shown = (shown + 1) % this.source.count;
        due += this.frameTime(shown);
        advanced = true;
      }
      if (advanced) {
        this.frame = shown;
        this.paintFrame();
        this.draw();
        this.updateLabels();
      }
      this.animation = requestAnimationFrame(step);
    };
    this.animation = requestAnimationFrame(step);
  }

  stop() {
    this.playing = false;
    if (this.canvas) this.canvas.dataset.playing = "false";
    cancelAnimationFrame(this.animation);
  }
}
