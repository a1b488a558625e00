// The patient banner: name (Chinese and Latin forms), ID, sex, birth date, study. All text nodes.

import { formatDate, personName } from "./dicom-json.js";
import { clear, el } from "./dom.js";
import { t } from "./i18n.js";

/** study: as the worklist keeps it (patientName as DICOM JSON or PN string). */
export function renderBanner(container, study, consult) {
  clear(container);
  if (!study && !consult) return;
  const { primary, secondary } = personName(study?.patientName ?? "");
  const facts = [
    [t("patient.id"), study?.patientId || consult?.patient_id],
    [t("patient.sex"), study?.sex ? t(`sex.${study.sex}`) : ""],
    [t("patient.birth_date"), formatDate(study?.birthDate)],
    [t("study.date"), formatDate(study?.date)],
    [t("study.modalities"), (study?.modalities ?? []).join("/")],
    [t("study.description"), study?.description],
    [t("study.organisation"), consult?.source_organisation ?? study?.organisation],
  ].filter(([, value]) => value);
  container.append(
    el(
      "div",
      { className: "patient-name" },
      el("span", { className: "primary", dataset: { role: "patient-name" }, text: primary || t("patient.unknown") }),
      secondary ? el("span", { className: "secondary", text: secondary }) : null,
    ),
    el("dl", { className: "facts" }, ...facts.flatMap(([label, value]) => [el("dt", { text: label }), el("dd", { text: value })])),
  );
}
