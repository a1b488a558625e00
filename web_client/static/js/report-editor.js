// The report of a consult: template, findings, impression; save a draft, sign (performing, by the
// township) and co-sign (reviewing, by the county specialist), addenda, signature verification
// and the PDF of the signed report.

import * as api from "./api.js";
import { clear, el, options } from "./dom.js";
import { formatDateTime, localLabel, onLanguageChange, t } from "./i18n.js";

const CLOSED = new Set(["declined", "cancelled"]);
const FINAL = new Set(["final", "amended"]);
// A template to start from, by the study's modalities.
const TEMPLATE_BY_MODALITY = { US: "abdominal_ultrasound", DX: "chest_dr", CR: "chest_dr", ECG: "ecg_12_lead" };
const PDF_ATTEMPTS = 20;

let templatesPromise = null;
function templates() {
  templatesPromise ??= api.reportTemplates().catch((error) => {
    templatesPromise = null;
    throw error;
  });
  return templatesPromise;
}

export class ReportEditor {
  constructor(container, { user, onConsultChanged }) {
    this.container = container;
    this.user = user;
    this.onConsultChanged = onConsultChanged;
    this.consult = null;
    this.report = null;
    this.pdfUrl = null;
    this.generation = 0;
    onLanguageChange(() => this.consult && this.render());
  }

  close() {
    this.generation++;
    this.consult = null;
    this.report = null;
    this.verification = null;
    this.unsaved = null;
    this.messageKey = null;
    this.revokePdf();
    clear(this.container);
  }

  revokePdf() {
    if (this.pdfUrl) URL.revokeObjectURL(this.pdfUrl);
    this.pdfUrl = null;
  }

  async open(consult) {
    this.close();
    const generation = this.generation;
    this.consult = consult;
    const [list, report] = await Promise.all([templates(), api.readReport(consult.id)]);
    if (generation !== this.generation) return;
    this.templates = list;
    this.report = report;
    this.template = report?.template ?? this.guessTemplate();
    this.render();
    if (report?.signatures.length) await this.verify();
  }

  guessTemplate() {
    const modalities = this.consult.study?.modalities ?? [];
    for (const modality of modalities) if (TEMPLATE_BY_MODALITY[modality]) return TEMPLATE_BY_MODALITY[modality];
    return this.templates[0]?.code;
  }

  get isFinal() {
    return FINAL.has(this.report?.status);
  }

  get editable() {
    return this.user.role !== "admin" && !this.isFinal && !CLOSED.has(this.consult.status);
  }

  get isReviewer() {
    return this.user.role === "specialist";
  }

  message(key, params, kind = "info") {
    this.messageKey = { key, params, kind };
    if (!this.messageNode) return;
    this.messageNode.textContent = key ? t(key, params) : "";
    this.messageNode.dataset.kind = kind;
  }

  failed(error) {
    const detail = error instanceof api.ApiError ? error.message : String(error.message || error);
    this.message("report.error", { detail }, "error");
  }

  render() {
    const consult = this.consult;
    clear(this.container);
    this.messageNode = el("p", { className: "message", attrs: { role: "status", "aria-live": "polite" }, dataset: { role: "report-message" } });
    this.container.append(this.consultSummary(consult));
    if (consult.status === "requested" && this.isReviewer) {
      this.container.append(el("button", { type: "button", className: "primary", dataset: { role: "accept" }, text: t("consult.accept"), on: { click: () => this.accept() } }));
    }
    this.container.append(this.form(), this.messageNode, this.signatures(), this.verificationBox());
    if (this.isFinal) this.container.append(this.addenda(), this.pdfBox());
    if (this.messageKey) this.message(this.messageKey.key, this.messageKey.params, this.messageKey.kind);
  }

  consultSummary(consult) {
    const rows = [
      ["consult.question", consult.question],
      ["consult.urgency", t(`urgency.${consult.urgency}`)],
      ["consult.status", t(`status.${consult.status}`)],
      ["consult.requested_by", `${consult.requested_by} (${consult.source_organisation}), ${formatDateTime(consult.requested_at)}`],
      ["consult.target", [consult.target.organisation, consult.target.department, consult.target.specialist].filter(Boolean).join(" / ")],
      ["consult.assignee", consult.assignee ?? "—"],
      ["consult.due", formatDateTime(consult.due_at)],
    ];
    return el("dl", { className: "consult-summary" }, ...rows.flatMap(([key, value]) => [el("dt", { text: t(key) }), el("dd", { text: value })]));
  }

  currentTemplate() {
    return this.templates.find((template) => template.code === this.template) ?? this.templates[0];
  }

  form() {
    const template = this.currentTemplate();
    const report = this.report;
    const disabled = !this.editable;
    const select = el("select", { name: "template", disabled, dataset: { role: "template" } });
    options(select, this.templates.map((tpl) => [tpl.code, localLabel(tpl.label)]), template?.code);
    select.addEventListener("change", () => {
      this.collectDraft(); // keep what was typed in fields both templates share
      this.template = select.value;
      this.render();
    });
    const form = el("form", { className: "report-form", dataset: { role: "report-form" } });
    form.addEventListener("submit", (event) => event.preventDefault());
    form.append(el("label", { className: "field" }, el("span", { text: t("report.template") }), select));
    const findings = this.unsaved?.findings ?? report?.findings ?? {};
    for (const section of template?.sections ?? []) {
      const fieldset = el("fieldset", { dataset: { section: section.key } }, el("legend", { text: localLabel(section.label) }));
      for (const field of section.fields) fieldset.append(this.fieldInput(section, field, findings[section.key]?.[field.key], disabled));
      form.append(fieldset);
    }
    const impression = el("textarea", { name: "impression", rows: 3, disabled, dataset: { role: "impression" }, value: this.unsaved?.impression ?? report?.impression ?? "" });
    form.append(el("label", { className: "field" }, el("span", { text: template ? localLabel(template.impression_label) : t("report.impression") }), impression));
    const status = report ? t("report.state", { status: t(`report_status.${report.status}`), version: report.version }) : t("report.none");
    form.append(el("p", { className: "report-state", dataset: { role: "report-state", status: report?.status ?? "none" }, text: status }));
    if (this.editable) {
      form.append(
        el(
          "div",
          { className: "actions" },
          el("button", { type: "button", dataset: { role: "save" }, text: t("report.save"), on: { click: () => this.save() } }),
          el("button", { type: "button", className: "primary", dataset: { role: "sign" }, text: this.isReviewer ? t("report.cosign") : t("report.sign"), on: { click: () => this.sign() } }),
        ),
      );
    }
    this.formNode = form;
    return form;
  }

  fieldInput(section, field, value, disabled) {
    const name = `${section.key}.${field.key}`;
    const label = localLabel(field.label) + (field.unit ? ` (${field.unit})` : "") + (field.required ? " *" : "");
    let input;
    if (field.kind === "number") {
      input = el("input", { type: "number", name, step: "any", disabled, value: value ?? "" });
      if (field.minimum !== null && field.minimum !== undefined) input.min = String(field.minimum);
      if (field.maximum !== null && field.maximum !== undefined) input.max = String(field.maximum);
    } else if (field.kind === "choice") {
      input = el("select", { name, disabled });
      options(input, [["", "—"], ...(field.choices ?? []).map((choice) => [choice.value, localLabel(choice.label)])], value ?? "");
    } else {
      input = el("textarea", { name, rows: 2, disabled, value: value ?? "" });
    }
    input.dataset.kind = field.kind;
    return el("label", { className: "field" }, el("span", { text: label }), input);
  }

  /** The draft as the form holds it: empty fields are left out. */
  collectDraft() {
    const findings = {};
    for (const input of this.formNode.querySelectorAll("fieldset [name]")) {
      const [section, field] = input.name.split(".");
      const raw = input.value.trim();
      if (!raw) continue;
      findings[section] ??= {};
      findings[section][field] = input.dataset.kind === "number" ? Number(raw) : raw;
    }
    const impression = this.formNode.querySelector("[name=impression]").value;
    this.unsaved = { findings, impression };
    return { template: this.template, findings, impression };
  }

  async run(action, successKey) {
    const buttons = this.container.querySelectorAll("button");
    for (const button of buttons) button.disabled = true;
    try {
      await action();
      if (successKey) this.message(successKey, {}, "ok");
    } catch (error) {
      this.failed(error);
    }
    this.render();
  }

  async reloadConsult() {
    this.consult = await api.readConsult(this.consult.id);
    this.onConsultChanged(this.consult);
  }

  accept() {
    return this.run(async () => {
      await api.acceptConsult(this.consult.id);
      await this.reloadConsult();
    }, "consult.accepted");
  }

  /** Whether the form differs from the saved report (always true before the first save). */
  changed(draft) {
    const report = this.report;
    if (!report) return true;
    return draft.template !== report.template || draft.impression !== report.impression || JSON.stringify(sorted(draft.findings)) !== JSON.stringify(sorted(report.findings));
  }

  async saveNow(onlyIfChanged = false) {
    const draft = this.collectDraft();
    if (onlyIfChanged && !this.changed(draft)) return;
    if (this.report) draft.base_version = this.report.version;
    this.report = await api.saveDraft(this.consult.id, draft);
    this.unsaved = null;
  }

  save() {
    return this.run(() => this.saveNow(), "report.saved");
  }

  sign() {
    return this.run(async () => {
      await this.saveNow(true); // sign what the form shows
      this.report = await api.signReport(this.consult.id);
      await this.reloadConsult();
      await this.verify(false);
    }, "report.signed");
  }

  signatures() {
    const list = el("ul", { className: "signatures", dataset: { role: "signatures" } });
    for (const signature of this.report?.signatures ?? []) {
      list.append(
        el(
          "li",
          { dataset: { role: signature.role } },
          el("strong", { text: t(`signature.${signature.role}`) }),
          ` ${signature.signer_name || signature.signer} (${signature.signer_organisation}) · v${signature.version} · ${formatDateTime(signature.signed_at)}`,
          el("code", { text: signature.key_fingerprint.slice(0, 23) + "…", attrs: { title: signature.key_fingerprint } }),
        ),
      );
    }
    return el("section", { className: "signature-box" }, el("h3", { text: t("report.signatures") }), list.children.length ? list : el("p", { text: t("report.no_signatures") }));
  }

  async verify(render = true) {
    try {
      this.verification = await api.verifyReport(this.consult.id);
    } catch (error) {
      this.verification = { error: error.message };
    }
    if (render) this.render();
  }

  verificationBox() {
    const box = el("section", { className: "verification", dataset: { role: "verification" } });
    const result = this.verification;
    if (!result || !this.report?.signatures.length) return box;
    box.append(el("h3", { text: t("verify.title") }));
    if (result.error) {
      box.dataset.valid = "unknown";
      box.append(el("p", { text: t("verify.failed", { detail: result.error }) }));
      return box;
    }
    box.dataset.valid = String(result.valid);
    box.append(el("p", { className: result.valid ? "ok" : "bad", text: result.valid ? t("verify.valid", { count: result.signatures.length }) : t("verify.invalid") }));
    const list = el("ul");
    for (const check of result.signatures) {
      list.append(el("li", { className: check.valid ? "ok" : "bad", text: `${t(`signature.${check.role}`)} · ${check.signer} · v${check.version}: ${check.valid ? t("verify.signature_valid") : check.reason}` }));
    }
    box.append(list, el("button", { type: "button", text: t("verify.again"), on: { click: () => this.verify() } }));
    return box;
  }

  addenda() {
    const box = el("section", { className: "addenda", dataset: { role: "addenda" } }, el("h3", { text: t("addendum.title") }));
    for (const addendum of this.report.addenda) {
      box.append(el("blockquote", { text: addendum.content.text }), el("p", { className: "small", text: `${addendum.content.reason || ""} — ${addendum.author}, ${formatDateTime(addendum.created_at)}` }));
    }
    if (this.isReviewer && this.consult.assignee === this.user.username) {
      const text = el("textarea", { name: "addendum", rows: 2, dataset: { role: "addendum-text" } });
      const reason = el("input", { type: "text", name: "addendum-reason", dataset: { role: "addendum-reason" } });
      box.append(
        el("label", { className: "field" }, el("span", { text: t("addendum.text") }), text),
        el("label", { className: "field" }, el("span", { text: t("addendum.reason") }), reason),
        el("button", {
          type: "button",
          dataset: { role: "add-addendum" },
          text: t("addendum.add"),
          on: {
            click: () =>
              this.run(async () => {
                this.report = await api.addAddendum(this.consult.id, { text: text.value, reason: reason.value });
                await this.verify(false);
              }, "addendum.added"),
          },
        }),
      );
    }
    return box;
  }

  pdfBox() {
    const box = el("section", { className: "pdf-box", dataset: { role: "pdf" } }, el("h3", { text: t("pdf.title") }));
    const button = el("button", { type: "button", dataset: { role: "show-pdf" }, text: t("pdf.show"), on: { click: () => this.loadPdf() } });
    box.append(button);
    if (this.pdfUrl) {
      box.append(
        el("iframe", { className: "pdf-frame", src: this.pdfUrl, title: t("pdf.title"), dataset: { role: "pdf-frame", bytes: String(this.pdfBytes) } }),
        el("a", { href: this.pdfUrl, download: `report-v${this.report.version}.pdf`, text: t("pdf.download") }),
      );
    }
    return box;
  }

  /** The PDF is made just after the final signature: retry while it is "being made" (404). */
  async loadPdf() {
    const generation = this.generation;
    this.message("pdf.loading");
    for (let attempt = 0; attempt < PDF_ATTEMPTS; attempt++) {
      try {
        const blob = await api.reportPdf(this.consult.id);
        if (generation !== this.generation) return;
        this.revokePdf();
        this.pdfUrl = URL.createObjectURL(new Blob([blob], { type: "application/pdf" }));
        this.pdfBytes = blob.size;
        this.message("pdf.loaded", { kb: Math.max(1, Math.round(blob.size / 1024)) }, "ok");
        this.render();
        return;
      } catch (error) {
        if (!(error instanceof api.ApiError && error.status === 404)) {
          this.failed(error);
          return;
        }
        await new Promise((resolve) => setTimeout(resolve, 500));
      }
    }
    this.message("pdf.not_ready", {}, "error");
  }
}

/** A findings object with its keys in order, to compare two of them. */
function sorted(findings) {
  return Object.fromEntries(
    Object.keys(findings ?? {})
      .sort()
      .map((section) => [section, Object.fromEntries(Object.entries(findings[section] ?? {}).sort(([a], [b]) => a.localeCompare(b)))]),
  );
}
