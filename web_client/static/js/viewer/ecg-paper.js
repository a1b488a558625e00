// A 12-lead ECG on standard paper: 25 mm/s, 10 mm/mV, 1 mm and 5 mm grid, a 1 mV calibration
// pulse per row, the 3 x 4 layout (I aVR V1 V4 / II aVL V2 V5 / III aVF V3 V6, 2.5 s each,
// recorded together) and a lead II rhythm strip over the whole record (10 s).

export const PAPER_SPEED_MM_PER_S = 25;
export const GAIN_MM_PER_MV = 10;
export const LAYOUT = [
  ["I", "aVR", "V1", "V4"],
  ["II", "aVL", "V2", "V5"],
  ["III", "aVF", "V3", "V6"],
];
export const RHYTHM_LEAD = "II";
const MARGIN_MM = 10; // left, for the calibration pulse
const ROW_MM = 40;
const TOP_MM = 5;
const MIN_PX_PER_MM = 3; // below this the 1 mm grid blurs: the paper scrolls instead
export const COLOURS = { paper: "#fff8f8", minor: "#f4c2c2", major: "#e06666", trace: "#000000" };

/** Paper size in mm for a record of `seconds` (the rhythm strip sets the width, 10 s -> 250 mm). */
export function paperSize(seconds) {
  const stripSeconds = Math.min(seconds, 10);
  return { width: MARGIN_MM + stripSeconds * PAPER_SPEED_MM_PER_S + 5, height: TOP_MM + ROW_MM * (LAYOUT.length + 1) };
}

function grid(context, width, height, pxPerMm) {
  context.fillStyle = COLOURS.paper;
  context.fillRect(0, 0, width * pxPerMm, height * pxPerMm);
  for (const [step, colour, lineWidth] of [[1, COLOURS.minor, 1], [5, COLOURS.major, 1.5]]) {
    context.strokeStyle = colour;
    context.lineWidth = lineWidth;
    context.beginPath();
    for (let x = 0; x <= width + 1e-6; x += step) {
      const px = Math.round(x * pxPerMm) + 0.5;
      context.moveTo(px, 0);
      context.lineTo(px, height * pxPerMm);
    }
    for (let y = 0; y <= height + 1e-6; y += step) {
      const py = Math.round(y * pxPerMm) + 0.5;
      context.moveTo(0, py);
      context.lineTo(width * pxPerMm, py);
    }
    context.stroke();
  }
}

function calibrationPulse(context, baselineY, pxPerMm) {
  const x0 = 2 * pxPerMm;
  const up = GAIN_MM_PER_MV * pxPerMm; // 1 mV
  const wide = 0.2 * PAPER_SPEED_MM_PER_S * pxPerMm; // 200 ms
  context.beginPath();
  context.moveTo(x0, baselineY);
  context.lineTo(x0 + pxPerMm, baselineY);
  context.lineTo(x0 + pxPerMm, baselineY - up);
  context.lineTo(x0 + pxPerMm + wide, baselineY - up);
  context.lineTo(x0 + pxPerMm + wide, baselineY);
  context.lineTo(x0 + 2 * pxPerMm + wide, baselineY);
  context.stroke();
}

/** Samples [from, to) of a lead, from x (mm), on a baseline (px). */
function trace(context, values, frequency, from, to, xMm, baselineY, pxPerMm) {
  const mmPerSample = PAPER_SPEED_MM_PER_S / frequency;
  context.beginPath();
  for (let s = from; s < to && s < values.length; s++) {
    const x = (xMm + (s - from) * mmPerSample) * pxPerMm;
    const y = baselineY - values[s] * GAIN_MM_PER_MV * pxPerMm;
    if (s === from) context.moveTo(x, y);
    else context.lineTo(x, y);
  }
  context.stroke();
}

/**
 * Draw `ecg` ({frequency, seconds, leads}) on `canvas`, `cssWidth` CSS pixels wide at least.
 * Returns what was drawn: {pxPerMm (CSS), leads: names in drawing order, rhythm}.
 */
export function drawEcg(canvas, ecg, cssWidth) {
  const size = paperSize(ecg.seconds);
  const cssPxPerMm = Math.max(MIN_PX_PER_MM, cssWidth / size.width);
  const ratio = window.devicePixelRatio || 1;
  const pxPerMm = cssPxPerMm * ratio;
  canvas.width = Math.round(size.width * pxPerMm);
  canvas.height = Math.round(size.height * pxPerMm);
  canvas.style.width = `${Math.round(size.width * cssPxPerMm)}px`;
  canvas.style.height = `${Math.round(size.height * cssPxPerMm)}px`;
  const context = canvas.getContext("2d");
  grid(context, size.width, size.height, pxPerMm);

  context.strokeStyle = COLOURS.trace;
  context.fillStyle = COLOURS.trace;
  context.lineWidth = Math.max(1, 0.25 * pxPerMm);
  context.lineJoin = "round";
  context.font = `${Math.round(3.5 * pxPerMm)}px system-ui, sans-serif`;
  const columnSeconds = Math.min(ecg.seconds, 10) / 4;
  const columnSamples = Math.floor(columnSeconds * ecg.frequency);
  const drawn = [];
  const rows = [...LAYOUT, [RHYTHM_LEAD]];
  rows.forEach((row, rowIndex) => {
    const baselineY = (TOP_MM + ROW_MM * rowIndex + ROW_MM * 0.6) * pxPerMm;
    calibrationPulse(context, baselineY, pxPerMm);
    const rhythm = rowIndex === LAYOUT.length;
    row.forEach((name, column) => {
      const values = ecg.leads.get(name);
      const xMm = MARGIN_MM + column * columnSeconds * PAPER_SPEED_MM_PER_S;
      context.fillText(rhythm ? `${name}` : name, (xMm + 1) * pxPerMm, baselineY - 12 * pxPerMm);
      if (column > 0) {
        context.beginPath();
        context.moveTo(xMm * pxPerMm, baselineY - 3 * pxPerMm);
        context.lineTo(xMm * pxPerMm, baselineY + 3 * pxPerMm);
        context.stroke();
      }
      if (!values) return;
      const from = rhythm ? 0 : column * columnSamples;
      const to = rhythm ? Math.floor(Math.min(ecg.seconds, 10) * ecg.frequency) : from + columnSamples;
      trace(context, values, ecg.frequency, from, to, xMm, baselineY, pxPerMm);
      drawn.push(rhythm ? `${name}-rhythm` : name);
    });
  });
  return { pxPerMm: cssPxPerMm, leads: drawn };
}
