// Grayscale pixel data from WADO-RS frames, and the VOI window that turns it into display grey.
// The browser keeps the stored values (8 or 16 bit) so window/level is redrawn locally on every
// mouse move, with no round trip to the server.

import { TAG, number, text, values } from "../dicom-json.js";

/** What the metadata says about an image's pixels. */
export function describePixels(metadata) {
  const rows = number(metadata, TAG.Rows, 0);
  const columns = number(metadata, TAG.Columns, 0);
  const spacing = pixelSpacing(metadata);
  return {
    rows,
    columns,
    frames: number(metadata, TAG.NumberOfFrames, 1),
    samplesPerPixel: number(metadata, TAG.SamplesPerPixel, 1),
    photometric: text(metadata, TAG.PhotometricInterpretation) || "MONOCHROME2",
    bitsAllocated: number(metadata, TAG.BitsAllocated, 8),
    bitsStored: number(metadata, TAG.BitsStored, number(metadata, TAG.BitsAllocated, 8)),
    signed: number(metadata, TAG.PixelRepresentation, 0) === 1,
    slope: number(metadata, TAG.RescaleSlope, 1),
    intercept: number(metadata, TAG.RescaleIntercept, 0),
    windowCenter: number(metadata, TAG.WindowCenter),
    windowWidth: number(metadata, TAG.WindowWidth),
    spacing,
    frameTimes: frameTimes(metadata),
  };
}

/** Grayscale images with 8 or 16 bits per sample are windowed in the browser; others are rendered by the server. */
export function isLocallyWindowed(pixels) {
  return pixels.samplesPerPixel === 1 && /^MONOCHROME[12]$/.test(pixels.photometric) && [8, 16].includes(pixels.bitsAllocated);
}

/**
 * Millimetres per pixel {row, column, source}: Pixel Spacing (patient), else Imager Pixel Spacing
 * (at the detector), else the first ultrasound region in cm; null when the image has no scale.
 */
export function pixelSpacing(metadata) {
  const fromPair = (tag, source) => {
    const pair = values(metadata, tag).map(Number);
    return pair.length === 2 && pair.every((v) => v > 0) ? { row: pair[0], column: pair[1], source } : null;
  };
  const direct = fromPair(TAG.PixelSpacing, "PixelSpacing") || fromPair(TAG.ImagerPixelSpacing, "ImagerPixelSpacing");
  if (direct) return direct;
  const [region] = values(metadata, TAG.SequenceOfUltrasoundRegions);
  const CENTIMETRES = 3;
  if (region && number(region, TAG.PhysicalUnitsXDirection) === CENTIMETRES && number(region, TAG.PhysicalUnitsYDirection) === CENTIMETRES) {
    const dx = Math.abs(number(region, TAG.PhysicalDeltaX, 0));
    const dy = Math.abs(number(region, TAG.PhysicalDeltaY, 0));
    if (dx > 0 && dy > 0) return { row: dy * 10, column: dx * 10, source: "SequenceOfUltrasoundRegions" };
  }
  return null;
}

/** Milliseconds each frame is shown: Frame Time Vector, Frame Time, Cine Rate, Recommended Display Frame Rate. */
export function frameTimes(metadata) {
  const frames = number(metadata, TAG.NumberOfFrames, 1);
  const vector = values(metadata, TAG.FrameTimeVector).map(Number);
  // The vector's first entry is 0 (the time of the first frame): entry i+1 is how long frame i shows.
  if (vector.length === frames && vector.slice(1).every((v) => v > 0)) {
    return { perFrame: [...vector.slice(1), vector[vector.length - 1]], source: "FrameTimeVector" };
  }
  const frameTime = number(metadata, TAG.FrameTime);
  if (frameTime > 0) return { perFrame: null, ms: frameTime, source: "FrameTime" };
  const cineRate = number(metadata, TAG.CineRate);
  if (cineRate > 0) return { perFrame: null, ms: 1000 / cineRate, source: "CineRate" };
  const recommended = number(metadata, TAG.RecommendedDisplayFrameRate);
  if (recommended > 0) return { perFrame: null, ms: 1000 / recommended, source: "RecommendedDisplayFrameRate" };
  return { perFrame: null, ms: 1000 / 25, source: "default" };
}

/** A frame's bytes (native little endian) as stored values, masked to Bits Stored and sign-extended. */
export function storedValues(bytes, pixels) {
  const count = pixels.rows * pixels.columns;
  let array;
  if (pixels.bitsAllocated === 8) {
    array = pixels.signed ? new Int8Array(bytes.buffer, bytes.byteOffset, count) : bytes.subarray(0, count);
  } else {
    // copy when the frame does not start on an even offset inside the multipart body
    const aligned = bytes.byteOffset % 2 === 0 ? bytes : bytes.slice();
    array = pixels.signed ? new Int16Array(aligned.buffer, aligned.byteOffset, count) : new Uint16Array(aligned.buffer, aligned.byteOffset, count);
  }
  if (pixels.bitsStored < pixels.bitsAllocated) {
    const bits = pixels.bitsStored;
    const mask = (1 << bits) - 1;
    const out = pixels.signed ? new Int32Array(count) : new Uint16Array(count);
    for (let i = 0; i < count; i++) {
      let v = array[i] & mask;
      if (pixels.signed && v & (1 << (bits - 1))) v -= 1 << bits;
      out[i] = v;
    }
    return out;
  }
  return array;
}

export function valueRange(array) {
  let min = Infinity;
  let max = -Infinity;
  for (let i = 0; i < array.length; i++) {
    const v = array[i];
    if (v < min) min = v;
    if (v > max) max = v;
  }
  return { min, max };
}

/** The window to start with: the data set's first, else the frame's range (in modality units). */
export function defaultWindow(pixels, range) {
  if (pixels.windowWidth > 0 && Number.isFinite(pixels.windowCenter)) {
    return { center: pixels.windowCenter, width: pixels.windowWidth };
  }
  const low = range.min * pixels.slope + pixels.intercept;
  const high = range.max * pixels.slope + pixels.intercept;
  return { center: (low + high) / 2, width: Math.max(1, Math.abs(high - low)) };
}

/**
 * A lookup table from stored value (offset by range.min) to an opaque grey RGBA pixel:
 * modality rescale, then the linear VOI function of PS3.3 C.11.2.1.2, then MONOCHROME1 inverted.
 */
export function windowLut(pixels, range, window) {
  const size = range.max - range.min + 1;
  const lut = new Uint32Array(size);
  const { center, width } = window;
  const low = center - 0.5 - (width - 1) / 2;
  const high = center - 0.5 + (width - 1) / 2;
  const invert = pixels.photometric === "MONOCHROME1";
  for (let i = 0; i < size; i++) {
    const value = (range.min + i) * pixels.slope + pixels.intercept;
    let grey;
    if (width <= 1) grey = value < center ? 0 : 255;
    else if (value <= low) grey = 0;
    else if (value > high) grey = 255;
    else grey = Math.round(((value - (center - 0.5)) / (width - 1) + 0.5) * 255);
    if (invert) grey = 255 - grey;
    lut[i] = 0xff000000 | (grey << 16) | (grey << 8) | grey; // little-endian RGBA
  }
  return lut;
}

/** Paint stored values through the LUT into an ImageData. */
export function applyLut(array, range, lut, imageData) {
  const out = new Uint32Array(imageData.data.buffer);
  const offset = range.min;
  for (let i = 0; i < array.length; i++) out[i] = lut[array[i] - offset];
  return imageData;
}
