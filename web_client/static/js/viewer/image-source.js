// The frames of one image instance, ready to paint: grayscale ones windowed in the browser from
// WADO-RS frames, colour ones rendered by the server (frames/{n}/rendered, PNG).

import * as api from "../api.js";
import { applyLut, defaultWindow, describePixels, isLocallyWindowed, storedValues, valueRange, windowLut } from "./pixels.js";

const FRAMES_PER_REQUEST = 32;
const RENDER_CONCURRENCY = 4;

/** Grayscale frames kept as stored values; window/level repaints through a lookup table. */
export class GrayscaleSource {
  constructor(pixels, arrays) {
    this.pixels = pixels;
    this.width = pixels.columns;
    this.height = pixels.rows;
    this.arrays = arrays;
    this.count = arrays.length;
    this.windowable = true;
    this.range = arrays.map(valueRange).reduce((a, b) => ({ min: Math.min(a.min, b.min), max: Math.max(a.max, b.max) }));
    this.initialWindow = defaultWindow(pixels, this.range);
    this.window = { ...this.initialWindow };
    this.lut = windowLut(pixels, this.range, this.window);
    this.imageData = new ImageData(this.width, this.height);
  }

  /** The modality value span, to scale mouse movement to window changes. */
  get span() {
    return Math.max(1, (this.range.max - this.range.min) * Math.abs(this.pixels.slope));
  }

  setWindow(window) {
    this.window = { center: window.center, width: Math.max(1, window.width) };
    this.lut = windowLut(this.pixels, this.range, this.window);
  }

  paint(index, context) {
    applyLut(this.arrays[index], this.range, this.lut, this.imageData);
    context.putImageData(this.imageData, 0, 0);
  }
}

/** Frames the server rendered (any photometric interpretation); no local window/level. */
export class RenderedSource {
  constructor(pixels, bitmaps) {
    this.pixels = pixels;
    this.width = bitmaps[0].width;
    this.height = bitmaps[0].height;
    this.bitmaps = bitmaps;
    this.count = bitmaps.length;
    this.windowable = false;
  }

  paint(index, context) {
    context.clearRect(0, 0, this.width, this.height);
    context.drawImage(this.bitmaps[index], 0, 0);
  }
}

async function grayscaleFrames(ref, pixels, onProgress) {
  const arrays = [];
  for (let start = 1; start <= pixels.frames; start += FRAMES_PER_REQUEST) {
    const numbers = [];
    for (let n = start; n < start + FRAMES_PER_REQUEST && n <= pixels.frames; n++) numbers.push(n);
    const parts = await api.frames(ref, numbers);
    for (const bytes of parts) arrays.push(storedValues(bytes, pixels));
    onProgress(arrays.length, pixels.frames);
  }
  return arrays;
}

async function renderedFrames(ref, pixels, onProgress) {
  const bitmaps = new Array(pixels.frames);
  let next = 0;
  let done = 0;
  const worker = async () => {
    while (next < pixels.frames) {
      const index = next++;
      const blob = await api.renderedFrame(ref, index + 1);
      bitmaps[index] = await createImageBitmap(blob);
      onProgress(++done, pixels.frames);
    }
  };
  await Promise.all(Array.from({ length: Math.min(RENDER_CONCURRENCY, pixels.frames) }, worker));
  return bitmaps;
}

/** Every frame of an instance ({study, series, instance}), given its metadata. */
export async function loadImageSource(ref, metadata, onProgress = () => {}) {
  const pixels = describePixels(metadata);
  if (!pixels.rows || !pixels.columns) throw new Error("the instance has no image");
  if (isLocallyWindowed(pixels)) return new GrayscaleSource(pixels, await grayscaleFrames(ref, pixels, onProgress));
  return new RenderedSource(pixels, await renderedFrames(ref, pixels, onProgress));
}
