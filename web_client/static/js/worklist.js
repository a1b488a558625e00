// The worklist: consults and newly arrived studies, most urgent first, with deadline countdowns,
// filters, and live updates from /api/events (no reload).

import * as api from "./api.js";
import { TAG, first, formatDate, formatPersonName, text, values } from "./dicom-json.js";
import { clear, el, options } from "./dom.js";
import { formatDateTime, t } from "./i18n.js";

export const URGENCIES = ["critical", "stat", "urgent", "routine"];
export const STATUSES = ["requested", "accepted", "in_review", "reported", "signed", "delivered", "declined", "cancelled"];
const OPEN = new Set(["requested", "accepted", "in_review", "reported"]);
const MODALITIES = ["US", "DX", "CR", "ECG", "CT", "MR", "SR", "DOC", "OT"];
const UID_BATCH = 40;
const FRESH_MS = 15000;

/** A study as the worklist shows it, from a QIDO-RS result (DICOM JSON). */
export function studyFromQido(result, organisation = null) {
  return {
    uid: text(result, TAG.StudyInstanceUID),
    patientName: first(result, TAG.PatientName, ""),
    patientId: text(result, TAG.PatientID),
    birthDate: text(result, TAG.PatientBirthDate),
    sex: text(result, TAG.PatientSex),
    date: text(result, TAG.StudyDate),
    description: text(result, TAG.StudyDescription),
    modalities: values(result, TAG.ModalitiesInStudy).map(String),
    organisation,
  };
}

/** The study summary a single consult carries (GET /api/consults/{id}). */
function studyFromConsult(consult) {
  const study = consult.study;
  return {
    uid: study.study_instance_uid,
    patientName: study.patient_name,
    patientId: consult.patient_id,
    birthDate: "",
    sex: "",
    date: study.study_date,
    description: study.study_description,
    modalities: study.modalities,
    organisation: consult.source_organisation,
  };
}

/** "1:02:03", or "2d 3h" past a day. */
export function formatDuration(ms) {
  const seconds = Math.floor(Math.abs(ms) / 1000);
  const days = Math.floor(seconds / 86400);
  const hours = Math.floor((seconds % 86400) / 3600);
  const minutes = Math.floor((seconds % 3600) / 60);
  const rest = seconds % 60;
  if (days > 0) return t("duration.days", { days, hours });
  const two = (n) => String(n).padStart(2, "0");
  return hours > 0 ? `${hours}:${two(minutes)}:${two(rest)}` : `${minutes}:${two(rest)}`;
}

export class Worklist {
  constructor(root, { onOpen, onAlert }) {
    this.root = root;
    this.onOpen = onOpen;
    this.onAlert = onAlert;
    this.consults = new Map(); // id -> consult JSON
    this.studies = new Map(); // study UID -> study
    this.fresh = new Map(); // row key -> time it arrived live
    this.selected = null;
    this.list = root.querySelector("[data-role=rows]");
    this.count = root.querySelector("[data-role=count]");
    this.filters = {
      organisation: root.querySelector("[name=organisation]"),
      modality: root.querySelector("[name=modality]"),
      status: root.querySelector("[name=status]"),
      from: root.querySelector("[name=date-from]"),
      to: root.querySelector("[name=date-to]"),
    };
    for (const input of Object.values(this.filters)) input.addEventListener("change", () => this.render());
    root.querySelector("[data-role=reset-filters]").addEventListener("click", () => {
      for (const input of Object.values(this.filters)) input.value = "";
      this.filters.status.value = "open";
      this.render();
    });
    this.organisations = [];
    this.ticker = null;
  }

  /** Filter choices, in the current language (again after a switch). */
  renderFilters() {
    const keep = Object.fromEntries(Object.entries(this.filters).map(([k, input]) => [k, input.value]));
    options(this.filters.organisation, [["", t("filter.all_organisations")], ...this.organisations.map((o) => [o, o])], keep.organisation);
    options(this.filters.modality, [["", t("filter.all_modalities")], ...MODALITIES.map((m) => [m, m])], keep.modality);
    options(
      this.filters.status,
      [
        ["open", t("filter.status_open")],
        ["new", t("filter.status_new")],
        ["all", t("filter.status_all")],
        ...STATUSES.map((s) => [s, t(`status.${s}`)]),
      ],
      keep.status || "open",
    );
  }

  async start(organisations) {
    this.organisations = organisations;
    this.renderFilters();
    await this.load();
    clearInterval(this.ticker);
    this.ticker = setInterval(() => this.tick(), 1000);
  }

  stop() {
    clearInterval(this.ticker);
    this.consults.clear();
    this.studies.clear();
    this.fresh.clear();
    this.selected = null;
    clear(this.list);
  }

  /** Everything from REST: the consults, the newest studies, and the studies of the consults. */
  async load() {
    const [consults, recent] = await Promise.all([api.listConsults(), api.searchStudies({ limit: 100 })]);
    this.consults = new Map(consults.map((c) => [c.id, c]));
    for (const result of recent) {
      const study = studyFromQido(result, this.studies.get(text(result, TAG.StudyInstanceUID))?.organisation ?? null);
      this.studies.set(study.uid, study);
    }
    await this.fetchStudies(consults.filter((c) => c.study_instance_uid && !this.studies.has(c.study_instance_uid)));
    for (const consult of this.consults.values()) this.adopt(consult);
    this.render();
  }

  /** The studies of these consults: QIDO-RS in batches, then (shared from outside the caller's tree) the consult. */
  async fetchStudies(consults) {
    const uids = [...new Set(consults.map((c) => c.study_instance_uid))];
    for (let i = 0; i < uids.length; i += UID_BATCH) {
      const found = await api.searchStudies({ StudyInstanceUID: uids.slice(i, i + UID_BATCH).join(","), limit: UID_BATCH });
      for (const result of found) {
        const study = studyFromQido(result);
        this.studies.set(study.uid, study);
      }
    }
    const shared = consults.filter((c) => !this.studies.has(c.study_instance_uid)).slice(0, 20);
    for (const consult of shared) {
      try {
        const full = await api.readConsult(consult.id);
        if (full.study) this.studies.set(full.study.study_instance_uid, studyFromConsult(full));
      } catch {
        // not readable any more: the row shows without its study
      }
    }
  }

  /** A consult's study learns its organisation from the consult. */
  adopt(consult) {
    const study = this.studies.get(consult.study_instance_uid);
    if (study && !study.organisation) study.organisation = consult.source_organisation;
  }

  /** An event of /api/events: update the rows it concerns, without reloading. */
  async handleEvent(event) {
    const data = event.data || {};
    if (event.type === "study.stored" || event.type === "alert.critical") {
      const uid = data.study_instance_uid;
      if (uid) {
        const [result] = await api.searchStudies({ StudyInstanceUID: uid, limit: 1 });
        if (result) {
          const known = this.studies.get(uid);
          this.studies.set(uid, studyFromQido(result, data.source_organisation || known?.organisation || null));
          if (!known) this.fresh.set(`s:${uid}`, Date.now());
        }
      }
      if (event.type === "alert.critical") this.onAlert(data);
    } else if (data.consult_id && (event.type.startsWith("consult.") || event.type.startsWith("report."))) {
      await this.refreshConsult(data.consult_id, false);
    } else {
      return;
    }
    this.render();
  }

  /** Read one consult again (it changed, or was just made here); drop it when no longer visible. */
  async refreshConsult(id, render = true) {
    const known = this.consults.has(id);
    try {
      const consult = await api.readConsult(id);
      this.consults.set(consult.id, consult);
      if (consult.study) {
        const uid = consult.study.study_instance_uid;
        this.studies.set(uid, { ...this.studies.get(uid), ...studyFromConsult(consult) });
      }
      this.adopt(consult);
      if (!known) this.fresh.set(`c:${consult.id}`, Date.now());
    } catch (error) {
      if (error instanceof api.ApiError && error.status === 404) this.consults.delete(id);
      else throw error;
    }
    if (render) this.render();
  }

  rows() {
    const consulted = new Set();
    const rows = [];
    for (const consult of this.consults.values()) {
      if (consult.study_instance_uid) consulted.add(consult.study_instance_uid);
      rows.push({ key: `c:${consult.id}`, consult, study: this.studies.get(consult.study_instance_uid) ?? null });
    }
    for (const study of this.studies.values()) {
      if (!consulted.has(study.uid)) rows.push({ key: `s:${study.uid}`, consult: null, study });
    }
    return rows;
  }

  row(key) {
    return this.rows().find((row) => row.key === key) ?? null;
  }

  matches(row) {
    const { organisation, modality, status, from, to } = Object.fromEntries(
      Object.entries(this.filters).map(([k, input]) => [k, input.value]),
    );
    const consult = row.consult;
    if (status === "new" && consult) return false;
    if (status === "open" && consult && !OPEN.has(consult.status)) return false;
    if (STATUSES.includes(status) && consult?.status !== status) return false;
    if (STATUSES.includes(status) && !consult) return false;
    const rowOrganisation = consult?.source_organisation ?? row.study?.organisation ?? "";
    if (organisation && rowOrganisation !== organisation) return false;
    if (modality && !(row.study?.modalities ?? []).includes(modality)) return false;
    const date = rowDate(row);
    if (from && (!date || date < from)) return false;
    if (to && (!date || date > to)) return false;
    return true;
  }

  render() {
    const now = Date.now();
    for (const [key, time] of this.fresh) if (now - time > FRESH_MS) this.fresh.delete(key);
    const rows = this.rows().filter((row) => this.matches(row)).sort(compareRows);
    clear(this.list);
    for (const row of rows) this.list.append(this.rowElement(row));
    this.count.textContent = t("worklist.count", { count: rows.length });
    if (!rows.length) this.list.append(el("li", { className: "empty", text: t("worklist.empty") }));
    this.tick();
  }

  rowElement(row) {
    const { consult, study } = row;
    const urgency = consult?.urgency ?? "new";
    const item = el("li", {
      className: `row urgency-${urgency}`,
      tabIndex: 0,
      dataset: { key: row.key, urgency },
      attrs: { role: "button", "aria-current": this.selected === row.key ? "true" : null },
      on: {
        click: () => this.open(row.key),
        keydown: (event) => {
          if (event.key === "Enter" || event.key === " ") {
            event.preventDefault();
            this.open(row.key);
          }
        },
      },
    });
    if (this.fresh.has(row.key)) item.classList.add("fresh");
    const name = study ? formatPersonName(study.patientName) : consult ? consult.patient_id : "";
    item.append(
      el("span", { className: "badge", text: consult ? t(`urgency.${urgency}`) : t("worklist.new_study") }),
      el("span", { className: "name", text: name || t("patient.unknown") }),
      el("span", { className: "meta", text: [(study?.modalities ?? []).join("/"), consult?.source_organisation ?? study?.organisation, formatDate(rowDate(row))].filter(Boolean).join(" · ") }),
    );
    if (consult) {
      item.append(
        el("span", { className: "question", text: consult.question }),
        el("span", { className: `status status-${consult.status}`, text: t(`status.${consult.status}`) }),
        el("span", { className: "countdown", dataset: { due: consult.due_at, status: consult.status } }),
      );
    } else if (study?.description) {
      item.append(el("span", { className: "question", text: study.description }));
    }
    return item;
  }

  /** Deadline countdowns, every second. */
  tick() {
    const now = Date.now();
    for (const node of this.list.querySelectorAll(".countdown")) {
      const { due, status } = node.dataset;
      if (!OPEN.has(status)) {
        node.textContent = "";
        continue;
      }
      const left = new Date(due).getTime() - now;
      node.textContent = left >= 0 ? t("sla.left", { time: formatDuration(left) }) : t("sla.over", { time: formatDuration(left) });
      node.classList.toggle("overdue", left < 0);
      node.classList.toggle("soon", left >= 0 && left < 15 * 60 * 1000);
      node.title = t("sla.due", { time: formatDateTime(due) });
    }
  }

  open(key) {
    const row = this.row(key);
    if (!row) return;
    this.selected = key;
    for (const node of this.list.querySelectorAll(".row")) {
      if (node.dataset.key === key) node.setAttribute("aria-current", "true");
      else node.removeAttribute("aria-current");
    }
    this.onOpen(row);
  }
}

/** The exam date (YYYY-MM-DD): the study's, else the day of the request. */
function rowDate(row) {
  if (row.study?.date) return formatDate(row.study.date);
  if (row.consult) return row.consult.requested_at.slice(0, 10);
  return "";
}

function compareRows(a, b) {
  const rank = (row) => (row.consult ? URGENCIES.indexOf(row.consult.urgency) : URGENCIES.length);
  const open = (row) => (row.consult && !OPEN.has(row.consult.status) ? 1 : 0);
  return (
    open(a) - open(b) ||
    rank(a) - rank(b) ||
    (a.consult && b.consult ? Date.parse(a.consult.due_at) - Date.parse(b.consult.due_at) : 0) ||
    rowDate(b).localeCompare(rowDate(a))
  );
}
