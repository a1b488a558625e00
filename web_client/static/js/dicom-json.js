// Reading the DICOM JSON model (PS3.18 F.2): attributes by tag, person names, dates.

export const TAG = {
  SpecificCharacterSet: "00080005",
  StudyDate: "00080020",
  Modality: "00080060",
  ModalitiesInStudy: "00080061",
  SOPClassUID: "00080016",
  SOPInstanceUID: "00080018",
  InstitutionName: "00080080",
  StudyDescription: "00081030",
  SeriesDescription: "0008103E",
  RecommendedDisplayFrameRate: "00082144",
  CodeValue: "00080100",
  CodeMeaning: "00080104",
  PatientName: "00100010",
  PatientID: "00100020",
  PatientBirthDate: "00100030",
  PatientSex: "00100040",
  CineRate: "00180040",
  FrameTime: "00181063",
  FrameTimeVector: "00181065",
  ImagerPixelSpacing: "00181164",
  SequenceOfUltrasoundRegions: "00186011",
  PhysicalUnitsXDirection: "00186024",
  PhysicalUnitsYDirection: "00186026",
  PhysicalDeltaX: "0018602C",
  PhysicalDeltaY: "0018602E",
  StudyInstanceUID: "0020000D",
  SeriesInstanceUID: "0020000E",
  SeriesNumber: "00200011",
  InstanceNumber: "00200013",
  NumberOfStudyRelatedInstances: "00201208",
  NumberOfSeriesRelatedInstances: "00201209",
  SamplesPerPixel: "00280002",
  PhotometricInterpretation: "00280004",
  NumberOfFrames: "00280008",
  Rows: "00280010",
  Columns: "00280011",
  PixelSpacing: "00280030",
  BitsAllocated: "00280100",
  BitsStored: "00280101",
  PixelRepresentation: "00280103",
  WindowCenter: "00281050",
  WindowWidth: "00281051",
  RescaleIntercept: "00281052",
  RescaleSlope: "00281053",
  NumberOfWaveformChannels: "003A0005",
  NumberOfWaveformSamples: "003A0010",
  SamplingFrequency: "003A001A",
  MultiplexGroupLabel: "003A0020",
  ChannelDefinitionSequence: "003A0200",
  ChannelLabel: "003A0203",
  ChannelSourceSequence: "003A0208",
  ChannelSensitivity: "003A0210",
  ChannelSensitivityUnitsSequence: "003A0211",
  ChannelSensitivityCorrectionFactor: "003A0212",
  ChannelBaseline: "003A0213",
  WaveformSequence: "54000100",
  WaveformBitsAllocated: "54001004",
  WaveformSampleInterpretation: "54001006",
  WaveformData: "54001010",
};

export function values(dataset, tag) {
  return dataset?.[tag]?.Value ?? [];
}

export function first(dataset, tag, fallback = undefined) {
  const found = values(dataset, tag);
  return found.length ? found[0] : fallback;
}

export function number(dataset, tag, fallback = undefined, index = 0) {
  const found = values(dataset, tag);
  const value = Number(found[index]);
  return found.length > index && Number.isFinite(value) ? value : fallback;
}

export function text(dataset, tag) {
  const value = first(dataset, tag, "");
  return value === null ? "" : String(value);
}

export function items(dataset, tag) {
  return values(dataset, tag);
}

export function bulkDataUri(dataset, tag) {
  return dataset?.[tag]?.BulkDataURI ?? null;
}

export function inlineBinary(dataset, tag) {
  const encoded = dataset?.[tag]?.InlineBinary;
  if (!encoded) return null;
  return Uint8Array.from(atob(encoded), (c) => c.charCodeAt(0));
}

const CJK = /[\u3000-\u9fff\uf900-\ufaff\u{20000}-\u{2fa1f}]/u;

/** One component group, "Family^Given^Middle^Prefix^Suffix", as people read it. */
function formatGroup(group) {
  const [family = "", given = "", middle = "", prefix = "", suffix = ""] = group.split("^").map((part) => part.trim());
  if (CJK.test(group)) return [prefix, family, given, middle, suffix].join(""); // 王^小明 reads 王小明
  const names = [given, middle].filter(Boolean).join(" ");
  const core = family && names ? `${family}, ${names}` : family || names;
  return [prefix, core, suffix].filter(Boolean).join(" ");
}

/**
 * A person name for display: a PN value of DICOM JSON ({Alphabetic, Ideographic, Phonetic}) or
 * a PN string ("Wang^XiaoMing=王^小明=wang^xiao ming"). Returns {primary, secondary}: the
 * ideographic (or otherwise Chinese) form first when there is one, the alphabetic one after it.
 */
export function personName(value) {
  let groups;
  if (value && typeof value === "object") {
    groups = [value.Alphabetic || "", value.Ideographic || "", value.Phonetic || ""];
  } else {
    groups = String(value || "").split("=");
  }
  const [alphabetic = "", ideographic = "", phonetic = ""] = groups.map(formatGroup);
  const chinese = ideographic || (CJK.test(alphabetic) ? alphabetic : "");
  const latin = chinese === alphabetic ? phonetic : alphabetic || phonetic;
  return { primary: chinese || latin, secondary: chinese ? latin : "" };
}

export function formatPersonName(value) {
  const { primary, secondary } = personName(value);
  return secondary ? `${primary} (${secondary})` : primary;
}

/** DA "20261123" as "2026-11-23" (else as given). */
export function formatDate(da) {
  const match = /^(\d{4})(\d{2})(\d{2})$/.exec(String(da || ""));
  return match ? `${match[1]}-${match[2]}-${match[3]}` : String(da || "");
}
