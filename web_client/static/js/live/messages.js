// What went wrong, as a dictionary key for a sentence people can act on: the signalling server's
// problem codes and close codes (docs/live.md), the browser's media errors, and refused requests.

import { ApiError } from "../api.js";

const PROBLEMS = {
  unauthenticated: "live_exam.error_unauthenticated",
  "not-found": "live_exam.error_not_found",
  forbidden: "live_exam.error_forbidden",
  "sender-replaced": "live_exam.error_replaced",
  "session-full": "live_exam.error_full",
  "session-ended": "live_exam.error_ended",
  "invalid-offer": "live_exam.error_invalid_offer",
  "invalid-message": "live_exam.error_protocol",
  "invalid-candidate": "live_exam.error_protocol",
  "invalid-annotation": "live_exam.error_annotation",
  "close-1011": "live_exam.error_server",
};

/** A problem code of the server (or "close-<code>" for a socket closed without one). */
export function problemKey(code) {
  if (PROBLEMS[code]) return PROBLEMS[code];
  return String(code).startsWith("close-") ? "live_exam.error_connection" : "live_exam.error_protocol";
}

/** getUserMedia's refusals (DOMException names). */
export function mediaErrorKey(error) {
  switch (error?.name) {
    case "NotAllowedError":
    case "SecurityError":
      return "live_exam.error_camera_denied";
    case "NotFoundError":
    case "OverconstrainedError":
      return "live_exam.error_no_camera";
    case "NotReadableError":
    case "AbortError":
      return "live_exam.error_camera_busy";
    default:
      return "live_exam.error_no_webrtc";
  }
}

/** A refused REST call of the live routes; snapshot tells a 409 apart (no picture yet, or ended). */
export function requestErrorKey(error, { snapshot = false } = {}) {
  if (!(error instanceof ApiError)) return "live_exam.error_unreachable";
  if (error.status === 404) return "live_exam.error_not_found";
  if (error.status === 403) return "live_exam.error_forbidden";
  if (error.status === 409) return snapshot ? "live_exam.snapshot_no_frame" : "live_exam.error_closed_consult";
  return "live_exam.error_request";
}
