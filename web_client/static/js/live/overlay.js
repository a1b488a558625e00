// Drawings over the live picture: pointers, arrows, circles and text, on a canvas laid over the
// <video>. Positions are fractions of the video picture (0..1 from its top left corner, as the
// annotations channel defines them), so a mark lands on the same spot of the picture whatever
// size each participant shows it at; the picture is letterboxed inside the stage (object-fit:
// contain), and the canvas maps fractions to that box.

const POINTER_SHOWN_MS = 4000; // a pointer that has not moved for this long disappears
const POINTER_SEND_MS = 50; // at most 20 pointer messages a second
const MIN_DRAG = 0.01; // shorter drags are clicks, not shapes
export const TOOLS = ["pointer", "arrow", "circle", "text"];

export class Overlay {
  /**
   * @param {HTMLCanvasElement} canvas laid exactly over video
   * @param {HTMLVideoElement} video
   * @param {object} options me (username), colour (#rrggbb of my marks), send(message) -> bool,
   *   text() -> the text to place (empty: needText() is called instead)
   */
  constructor(canvas, video, options) {
    this.canvas = canvas;
    this.video = video;
    this.options = options;
    this.tool = null;
    this.shapes = new Map(); // "author/id" -> annotation
    this.pointers = new Map(); // author -> {x, y, at}
    this.drag = null;
    this.lastPointerSent = 0;
    this.counter = 0;
    this.fadeTimer = null;
    this.resizer = new ResizeObserver(() => this.draw());
    this.resizer.observe(canvas);
    video.addEventListener("resize", () => this.draw());
    canvas.addEventListener("pointerdown", (event) => this.down(event));
    canvas.addEventListener("pointermove", (event) => this.move(event));
    canvas.addEventListener("pointerup", (event) => this.up(event));
    canvas.addEventListener("pointercancel", () => this.cancel());
  }

  destroy() {
    this.resizer.disconnect();
    clearTimeout(this.fadeTimer);
  }

  setTool(tool) {
    this.tool = TOOLS.includes(tool) ? tool : null;
    this.canvas.dataset.tool = this.tool ?? "none";
    this.cancel();
  }

  /** Forget every mark (a new session, or the page leaving it). */
  reset() {
    this.shapes.clear();
    this.pointers.clear();
    this.cancel();
  }

  /** An annotation another participant sent (pointer, arrow, circle, text, clear). */
  receive(message) {
    const author = message.from?.username ?? "?";
    if (message.type === "pointer") {
      this.pointers.set(author, { x: message.x, y: message.y, at: performance.now() });
    } else if (message.type === "clear") {
      this.remove(author, message.id);
    } else if (message.type === "arrow" || message.type === "circle" || message.type === "text") {
      this.shapes.set(`${author}/${message.id ?? `#${++this.counter}`}`, { ...message, author });
    } else {
      return;
    }
    this.draw();
  }

  /** Remove my marks here and everywhere else. */
  clearMine() {
    this.remove(this.options.me);
    this.options.send({ type: "clear" });
    this.draw();
  }

  remove(author, id) {
    if (id) {
      this.shapes.delete(`${author}/${id}`);
      return;
    }
    for (const [key, shape] of this.shapes) if (shape.author === author) this.shapes.delete(key);
  }

  // -- input: my marks -------------------------------------------------------------------

  /** The pointer event's position as fractions of the picture: null outside it, unless clamped to its edge. */
  position(event, clamped = false) {
    const bounds = this.canvas.getBoundingClientRect();
    const box = this.picture();
    const x = (event.clientX - bounds.left - box.x) / box.width;
    const y = (event.clientY - bounds.top - box.y) / box.height;
    if (!clamped && (x < 0 || x > 1 || y < 0 || y > 1)) return null;
    return { x: round(clamp(x)), y: round(clamp(y)) };
  }

  down(event) {
    const at = this.position(event);
    if (!this.tool || !at) return;
    event.preventDefault();
    if (this.tool === "text") {
      this.placeText(at);
    } else if (this.tool === "arrow" || this.tool === "circle") {
      this.canvas.setPointerCapture(event.pointerId);
      this.drag = { start: at, end: at };
    } else {
      this.sendPointer(at, true);
    }
  }

  move(event) {
    if (this.tool === "pointer") {
      const at = this.position(event);
      if (at) this.sendPointer(at, false);
      return;
    }
    if (!this.drag) return;
    this.drag.end = this.position(event, true);
    this.draw();
  }

  up(event) {
    if (!this.drag) return;
    this.move(event);
    const { start, end } = this.drag;
    this.drag = null;
    const shape = this.dragShape(start, end);
    if (length(start, end, this.picture()) >= MIN_DRAG) this.add(shape);
    this.draw();
  }

  /** What a drag from start to end draws with the current tool. */
  dragShape(start, end) {
    if (this.tool === "arrow") return { type: "arrow", start, end };
    // the radius is a fraction of the picture's width, whatever the drag's direction
    return { type: "circle", centre: start, radius: round(Math.min(length(start, end, this.picture()), 1)) };
  }

  cancel() {
    this.drag = null;
    this.draw();
  }

  placeText(at) {
    const text = this.options.text().trim();
    if (!text) {
      this.options.needText();
      return;
    }
    this.add({ type: "text", at, text: text.slice(0, 200) });
  }

  add(shape) {
    const annotation = { ...shape, id: `m${Date.now().toString(36)}.${++this.counter}`, colour: this.options.colour };
    this.shapes.set(`${this.options.me}/${annotation.id}`, { ...annotation, author: this.options.me });
    this.options.send(annotation);
    this.draw();
  }

  sendPointer(at, now) {
    const time = performance.now();
    if (!now && time - this.lastPointerSent < POINTER_SEND_MS) return;
    this.lastPointerSent = time;
    this.options.send({ type: "pointer", x: at.x, y: at.y });
  }

  // -- drawing ----------------------------------------------------------------------------

  /** The video picture's box in the canvas (CSS pixels), letterboxed like object-fit: contain. */
  picture() {
    const width = this.canvas.clientWidth;
    const height = this.canvas.clientHeight;
    const { videoWidth, videoHeight } = this.video;
    if (!videoWidth || !videoHeight || !width || !height) return { x: 0, y: 0, width: width || 1, height: height || 1 };
    const scale = Math.min(width / videoWidth, height / videoHeight);
    return { x: (width - videoWidth * scale) / 2, y: (height - videoHeight * scale) / 2, width: videoWidth * scale, height: videoHeight * scale };
  }

  draw() {
    const ratio = window.devicePixelRatio || 1;
    const width = Math.round(this.canvas.clientWidth * ratio);
    const height = Math.round(this.canvas.clientHeight * ratio);
    if (this.canvas.width !== width || this.canvas.height !== height) {
      this.canvas.width = width;
      this.canvas.height = height;
    }
    const ctx = this.canvas.getContext("2d");
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    ctx.clearRect(0, 0, width, height);
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    const box = this.picture();
    const at = (p) => [box.x + p.x * box.width, box.y + p.y * box.height];
    const line = Math.max(2, box.width * 0.005);
    for (const shape of this.shapes.values()) drawShape(ctx, shape, at, box, line);
    if (this.drag) drawShape(ctx, { ...this.dragShape(this.drag.start, this.drag.end), colour: this.options.colour }, at, box, line);
    this.drawPointers(ctx, at);
    this.canvas.dataset.shapes = String(this.shapes.size);
  }

  drawPointers(ctx, at) {
    const now = performance.now();
    clearTimeout(this.fadeTimer);
    let next = Infinity;
    for (const [author, pointer] of this.pointers) {
      const left = pointer.at + POINTER_SHOWN_MS - now;
      if (left <= 0) {
        this.pointers.delete(author);
        continue;
      }
      next = Math.min(next, left);
      const [x, y] = at(pointer);
      ctx.beginPath();
      ctx.arc(x, y, 9, 0, 2 * Math.PI);
      ctx.lineWidth = 3;
      ctx.strokeStyle = "#000000";
      ctx.stroke();
      ctx.fillStyle = "#ff3b30";
      ctx.fill();
      label(ctx, author, x + 12, y - 12, 13, "#ffffff");
    }
    this.canvas.dataset.pointers = String(this.pointers.size);
    if (next < Infinity) this.fadeTimer = setTimeout(() => this.draw(), next + 20);
  }
}

function drawShape(ctx, shape, at, box, line) {
  const colour = shape.colour || "#ffcc00";
  ctx.lineCap = "round";
  ctx.lineJoin = "round";
  if (shape.type === "arrow") {
    const [x0, y0] = at(shape.start);
    const [x1, y1] = at(shape.end);
    const head = Math.max(12, box.width * 0.03);
    const angle = Math.atan2(y1 - y0, x1 - x0);
    const path = new Path2D();
    path.moveTo(x0, y0);
    path.lineTo(x1, y1);
    path.moveTo(x1 - head * Math.cos(angle - 0.45), y1 - head * Math.sin(angle - 0.45));
    path.lineTo(x1, y1);
    path.lineTo(x1 - head * Math.cos(angle + 0.45), y1 - head * Math.sin(angle + 0.45));
    outlined(ctx, path, colour, line);
  } else if (shape.type === "circle") {
    const [x, y] = at(shape.centre);
    const path = new Path2D();
    path.arc(x, y, shape.radius * box.width, 0, 2 * Math.PI);
    outlined(ctx, path, colour, line);
  } else if (shape.type === "text") {
    const [x, y] = at(shape.at);
    label(ctx, shape.text, x, y, Math.max(14, box.width * 0.03), colour);
  }
}

/** A stroke with a dark edge, visible on bright and dark pictures alike. */
function outlined(ctx, path, colour, width) {
  ctx.strokeStyle = "rgba(0, 0, 0, 0.7)";
  ctx.lineWidth = width + 3;
  ctx.stroke(path);
  ctx.strokeStyle = colour;
  ctx.lineWidth = width;
  ctx.stroke(path);
}

/** Text on the canvas (never markup), with a dark edge. */
function label(ctx, text, x, y, size, colour) {
  ctx.font = `600 ${Math.round(size)}px system-ui, "PingFang SC", "Microsoft YaHei", "Noto Sans CJK SC", sans-serif`;
  ctx.textBaseline = "middle";
  ctx.lineWidth = Math.max(3, size / 5);
  ctx.strokeStyle = "rgba(0, 0, 0, 0.8)";
  ctx.strokeText(text, x, y);
  ctx.fillStyle = colour;
  ctx.fillText(text, x, y);
}

/** Distance between two picture positions in units of the picture's width. */
function length(start, end, box) {
  return Math.hypot(end.x - start.x, ((end.y - start.y) * box.height) / box.width);
}

const clamp = (value) => Math.min(1, Math.max(0, value));
const round = (value) => Math.round(value * 10000) / 10000;
