// Asking the county for a consult on a study that has none yet.

import * as api from "./api.js";
import { el, options } from "./dom.js";
import { t } from "./i18n.js";
import { URGENCIES } from "./worklist.js";

export function renderConsultRequest(container, study, { onCreated }) {
  const urgency = el("select", { name: "urgency", dataset: { role: "urgency" } });
  options(urgency, URGENCIES.map((u) => [u, t(`urgency.${u}`)]), "routine");
  const question = el("textarea", { name: "question", rows: 3, required: true, dataset: { role: "question" } });
  const message = el("p", { className: "message", attrs: { role: "status" } });
  const submit = el("button", { type: "submit", className: "primary", dataset: { role: "request-consult" }, text: t("consult.request") });
  const form = el(
    "form",
    { className: "consult-request" },
    el("h3", { text: t("consult.request_title") }),
    el("label", { className: "field" }, el("span", { text: t("consult.urgency") }), urgency),
    el("label", { className: "field" }, el("span", { text: t("consult.question") }), question),
    submit,
    message,
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    if (!question.value.trim()) {
      message.textContent = t("consult.question_needed");
      return;
    }
    submit.disabled = true;
    try {
      const consult = await api.requestConsult({ study_instance_uid: study.uid, urgency: urgency.value, question: question.value.trim() });
      onCreated(consult);
    } catch (error) {
      message.textContent = t("report.error", { detail: error.message });
      submit.disabled = false;
    }
  });
  container.append(form);
}
