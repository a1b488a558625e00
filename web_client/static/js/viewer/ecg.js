// A DICOM ECG waveform (metadata + Waveform Data bulk data over WADO-RS) as leads in millivolts.

import * as api from "../api.js";
import { TAG, bulkDataUri, first, inlineBinary, items, number, text } from "../dicom-json.js";

export const STANDARD_LEADS = ["I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6"];
// CID 3001, coding scheme SCPECG: code value 5.6.3-9-<number> (EN 1064 lead numbers).
const SCPECG_NUMBERS = { 1: "I", 2: "II", 3: "V1", 4: "V2", 5: "V3", 6: "V4", 7: "V5", 8: "V6", 61: "III", 62: "aVR", 63: "aVL", 64: "aVF" };
const BY_UPPER = Object.fromEntries(STANDARD_LEADS.map((name) => [name.toUpperCase(), name]));
const MILLIVOLTS_PER_UNIT = { uV: 0.001, mV: 1, V: 1000 };

/** "Lead aVR", "Lead I (Einthoven)", "MDC_ECG_LEAD_AVR", "avr" -> "aVR" (else as given). */
export function leadName(channel) {
  const [source] = items(channel, TAG.ChannelSourceSequence);
  const code = text(source, TAG.CodeValue);
  const scp = /^5\.6\.3-9-(\d+)$/.exec(code);
  if (scp && SCPECG_NUMBERS[Number(scp[1])]) return SCPECG_NUMBERS[Number(scp[1])];
  for (const candidate of [text(channel, TAG.ChannelLabel), text(source, TAG.CodeMeaning)]) {
    const cleaned = candidate.replace(/\(.*\)/, "").replace(/^(MDC_ECG_LEAD_|LEAD[ _-]?)/i, "").trim();
    if (BY_UPPER[cleaned.toUpperCase()]) return BY_UPPER[cleaned.toUpperCase()];
  }
  return text(channel, TAG.ChannelLabel) || text(source, TAG.CodeMeaning) || "?";
}

function sampleReader(bytes, interpretation, bitsAllocated) {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (bitsAllocated === 16 && interpretation === "SS") return (i) => view.getInt16(i * 2, true);
  if (bitsAllocated === 16 && interpretation === "US") return (i) => view.getUint16(i * 2, true);
  if (bitsAllocated === 8 && interpretation === "SB") return (i) => view.getInt8(i);
  if (bitsAllocated === 8 && interpretation === "UB") return (i) => view.getUint8(i);
  throw new Error(`waveform samples ${interpretation}/${bitsAllocated} bits are not supported`);
}

/** The rhythm multiplex group (else the first) of an ECG instance's metadata. */
export function rhythmGroup(metadata) {
  const groups = items(metadata, TAG.WaveformSequence);
  if (!groups.length) throw new Error("the instance has no waveform");
  return groups.find((group) => text(group, TAG.MultiplexGroupLabel).toUpperCase() === "RHYTHM") ?? groups[0];
}

/** {frequency, seconds, leads: Map(name -> Float32Array of mV)} of the rhythm group. */
export async function loadEcg(metadata) {
  const group = rhythmGroup(metadata);
  const channels = items(group, TAG.ChannelDefinitionSequence);
  const count = number(group, TAG.NumberOfWaveformChannels, channels.length);
  const samples = number(group, TAG.NumberOfWaveformSamples, 0);
  const frequency = number(group, TAG.SamplingFrequency, 0);
  if (!count || !samples || !frequency) throw new Error("the waveform has no channels, samples or sampling frequency");
  const uri = bulkDataUri(group, TAG.WaveformData);
  const bytes = uri ? await api.bulkData(uri) : inlineBinary(group, TAG.WaveformData);
  if (!bytes) throw new Error("the waveform has no data");
  const read = sampleReader(bytes, text(group, TAG.WaveformSampleInterpretation), number(group, TAG.WaveformBitsAllocated, 16));
  const leads = new Map();
  channels.slice(0, count).forEach((channel, index) => {
    const [unit] = items(channel, TAG.ChannelSensitivityUnitsSequence);
    const toMv = MILLIVOLTS_PER_UNIT[first(unit, TAG.CodeValue, "uV")] ?? 0.001;
    const sensitivity = number(channel, TAG.ChannelSensitivity, 1) * number(channel, TAG.ChannelSensitivityCorrectionFactor, 1);
    const baseline = number(channel, TAG.ChannelBaseline, 0);
    const values = new Float32Array(samples);
    for (let s = 0; s < samples; s++) values[s] = (read(s * count + index) * sensitivity + baseline) * toMv;
    leads.set(leadName(channel), values);
  });
  return { frequency, seconds: samples / frequency, leads };
}
