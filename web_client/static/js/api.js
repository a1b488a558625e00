// Calls to teleconsult's REST and DICOMweb APIs (relative URLs: the app is served by the API).

import { authFetch } from "./session.js";
import { boundaryOf, splitMultipart } from "./multipart.js";

/** A refused request: status and the RFC 9457 problem body when there is one. */
export class ApiError extends Error {
  constructor(status, problem) {
    super(problem?.detail || `HTTP ${status}`);
    this.status = status;
    this.problem = problem;
    this.code = problem?.code || `http-${status}`;
  }
}

async function check(response) {
  if (response.ok) return response;
  let problem = null;
  try {
    problem = await response.json();
  } catch {
    problem = null;
  }
  throw new ApiError(response.status, problem);
}

async function getJson(url, accept = "application/json") {
  const response = await check(await authFetch(url, { headers: { Accept: accept } }));
  return response.json();
}

async function sendJson(method, url, body) {
  const init = { method, headers: { Accept: "application/json" } };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await check(await authFetch(url, init));
  return response.status === 204 ? null : response.json();
}

function query(params) {
  const search = new URLSearchParams();
  for (const [key, value] of Object.entries(params)) {
    if (value === undefined || value === null || value === "") continue;
    for (const item of Array.isArray(value) ? value : [value]) search.append(key, String(item));
  }
  const text = search.toString();
  return text ? `?${text}` : "";
}

const consultPath = (id) => `api/consults/${encodeURIComponent(id)}`;
const enc = encodeURIComponent;
const studyPath = (study) => `dicomweb/studies/${enc(study)}`;
const seriesPath = (study, series) => `${studyPath(study)}/series/${enc(series)}`;
const instancePath = (ref) => `${seriesPath(ref.study, ref.series)}/instances/${enc(ref.instance)}`;

// -- REST --------------------------------------------------------------------------------

export const me = () => getJson("api/me");
export const listConsults = (params = {}) => getJson(`api/consults${query({ limit: 500, ...params })}`);
export const readConsult = (id) => getJson(consultPath(id));
export const requestConsult = (body) => sendJson("POST", "api/consults", body);
export const acceptConsult = (id) => sendJson("POST", `${consultPath(id)}/accept`);
export const reportTemplates = () => getJson("api/report-templates");

/** The report of a consult, or null when none was written yet. */
export async function readReport(id) {
  try {
    return await getJson(`${consultPath(id)}/report`);
  } catch (error) {
    if (error instanceof ApiError && error.status === 404) return null;
    throw error;
  }
}

export const saveDraft = (id, draft) => sendJson("PUT", `${consultPath(id)}/report`, draft);
export const signReport = (id) => sendJson("POST", `${consultPath(id)}/report/sign`);
export const addAddendum = (id, body) => sendJson("POST", `${consultPath(id)}/report/addenda`, body);
export const verifyReport = (id) => getJson(`${consultPath(id)}/report/verify`);

export async function reportPdf(id) {
  const response = await check(await authFetch(`${consultPath(id)}/report/pdf`, { headers: { Accept: "application/pdf" } }));
  return response.blob();
}

// -- live exams (docs/live.md) -----------------------------------------------------------

const livePath = (id) => `api/live-sessions/${encodeURIComponent(id)}`;

/** Start the consult's live exam, or get the running one (both answer the session). */
export const startLiveSession = (consultId) => sendJson("POST", "api/live-sessions", { consult_id: consultId });
/** The consult's running session, or null: asking does not start one. */
export const runningLiveSession = async (consultId) => (await getJson(`api/live-sessions${query({ consult_id: consultId })}`))[0] ?? null;
export const readLiveSession = (id) => getJson(livePath(id));
export const endLiveSession = (id) => sendJson("POST", `${livePath(id)}/end`);
export const liveSnapshot = (id) => sendJson("POST", `${livePath(id)}/snapshot`);

// -- DICOMweb ----------------------------------------------------------------------------

const DICOM_JSON = "application/dicom+json";

export const searchStudies = (params = {}) => getJson(`dicomweb/studies${query(params)}`, DICOM_JSON);
export const searchSeries = (study) => getJson(`${studyPath(study)}/series`, DICOM_JSON);
export const searchInstances = (study, series) => getJson(`${seriesPath(study, series)}/instances`, DICOM_JSON);

/** The metadata of one instance: ref is {study, series, instance} (UIDs). */
export async function instanceMetadata(ref) {
  const [metadata] = await getJson(`${instancePath(ref)}/metadata`, DICOM_JSON);
  return metadata;
}

/** Uncompressed frames (1-based numbers) as Uint8Arrays, in the order asked. */
export async function frames(ref, numbers) {
  const url = `${instancePath(ref)}/frames/${numbers.join(",")}`;
  const response = await check(
    await authFetch(url, { headers: { Accept: 'multipart/related; type="application/octet-stream"' } }),
  );
  const boundary = boundaryOf(response.headers.get("Content-Type"));
  return splitMultipart(new Uint8Array(await response.arrayBuffer()), boundary).map((part) => part.body);
}

/** One frame rendered by the server (colour images, any photometric interpretation). */
export async function renderedFrame(ref, number) {
  const url = `${instancePath(ref)}/frames/${number}/rendered?accept=image/png`;
  const response = await check(await authFetch(url, { headers: { Accept: "image/png" } }));
  return response.blob();
}

/** A BulkDataURI of the metadata (same origin only), as raw bytes. */
export async function bulkData(uri) {
  const response = await check(await authFetch(uri, { headers: { Accept: "application/octet-stream" } }));
  return new Uint8Array(await response.arrayBuffer());
}
