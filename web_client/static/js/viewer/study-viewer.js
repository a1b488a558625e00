// A study's series and instances over DICOMweb, each shown by the viewer that fits it:
// images (ImageViewer) or ECG waveforms (ECG paper).

import * as api from "../api.js";
import { TAG, items, number, text } from "../dicom-json.js";
import { clear, el } from "../dom.js";
import { onLanguageChange, t } from "../i18n.js";
import { drawEcg, GAIN_MM_PER_MV, PAPER_SPEED_MM_PER_S } from "./ecg-paper.js";
import { loadEcg } from "./ecg.js";
import { loadImageSource } from "./image-source.js";
import { ImageViewer } from "./image-viewer.js";

const NOT_IMAGES = new Set(["SR", "DOC", "KO", "PR"]);

export class StudyViewer {
  constructor(container) {
    this.container = container;
    this.seriesBar = el("div", { className: "series-bar", dataset: { role: "series" } });
    this.instanceBar = el("div", { className: "instance-bar", dataset: { role: "instances" } });
    this.status = el("p", { className: "viewer-status", attrs: { role: "status" } });
    this.area = el("div", { className: "viewer-area" });
    container.append(this.seriesBar, this.instanceBar, this.status, this.area);
    this.imageViewer = null;
    this.ecg = null;
    this.generation = 0;
    onLanguageChange(() => this.relabel());
  }

  close() {
    this.generation++;
    this.studyUid = null;
    this.seriesUid = null;
    this.imageViewer?.destroy();
    this.imageViewer = null;
    this.ecgObserver?.disconnect();
    this.ecg = null;
    clear(this.seriesBar);
    clear(this.instanceBar);
    clear(this.area);
    this.setStatus("");
  }

  setStatus(key, params) {
    this.statusKey = key;
    this.statusParams = params;
    this.status.textContent = key ? t(key, params) : "";
  }

  relabel() {
    if (this.statusKey) this.setStatus(this.statusKey, this.statusParams);
    if (this.ecg) this.ecgLegend.textContent = this.legendText();
  }

  /** Every series of the study; the first one with images (else the first) is opened. */
  async open(studyUid) {
    this.close();
    const generation = this.generation;
    this.studyUid = studyUid;
    this.setStatus("viewer.loading");
    let series;
    try {
      series = await api.searchSeries(studyUid);
    } catch (error) {
      if (generation === this.generation) this.setStatus("viewer.failed", { reason: error.message });
      return;
    }
    if (generation !== this.generation) return;
    series.sort((a, b) => number(a, TAG.SeriesNumber, 0) - number(b, TAG.SeriesNumber, 0));
    if (!series.length) {
      this.setStatus("viewer.no_series");
      return;
    }
    this.showSeries(series);
    const preferred = series.find((s) => !NOT_IMAGES.has(text(s, TAG.Modality))) ?? series[0];
    await this.openSeries(text(preferred, TAG.SeriesInstanceUID));
  }

  showSeries(series) {
    clear(this.seriesBar);
    for (const result of series) {
      const uid = text(result, TAG.SeriesInstanceUID);
      const label = [text(result, TAG.Modality), text(result, TAG.SeriesDescription), `(${number(result, TAG.NumberOfSeriesRelatedInstances, 0)})`]
        .filter(Boolean)
        .join(" ");
      this.seriesBar.append(
        el("button", {
          type: "button",
          className: "series",
          text: label,
          dataset: { series: uid, modality: text(result, TAG.Modality) },
          attrs: { "aria-pressed": String(uid === this.seriesUid) },
          on: { click: () => this.openSeries(uid) },
        }),
      );
    }
  }

  /** List the study's series again (a frame was captured into it), keeping what is shown. */
  async refreshSeries(studyUid) {
    if (studyUid !== this.studyUid) return;
    const series = await api.searchSeries(studyUid);
    if (studyUid !== this.studyUid) return;
    series.sort((a, b) => number(a, TAG.SeriesNumber, 0) - number(b, TAG.SeriesNumber, 0));
    this.showSeries(series);
  }

  async openSeries(seriesUid) {
    const generation = ++this.generation;
    this.seriesUid = seriesUid;
    for (const button of this.seriesBar.children) button.setAttribute("aria-pressed", String(button.dataset.series === seriesUid));
    clear(this.instanceBar);
    let instances;
    try {
      instances = await api.searchInstances(this.studyUid, seriesUid);
    } catch (error) {
      if (generation === this.generation) this.setStatus("viewer.failed", { reason: error.message });
      return;
    }
    if (generation !== this.generation) return;
    instances.sort((a, b) => number(a, TAG.InstanceNumber, 0) - number(b, TAG.InstanceNumber, 0));
    if (instances.length > 1) {
      instances.forEach((result, index) => {
        const uid = text(result, TAG.SOPInstanceUID);
        this.instanceBar.append(
          el("button", { type: "button", className: "instance", text: String(number(result, TAG.InstanceNumber, index + 1)), dataset: { instance: uid }, on: { click: () => this.openInstance(seriesUid, uid) } }),
        );
      });
    }
    if (instances.length) await this.openInstance(seriesUid, text(instances[0], TAG.SOPInstanceUID));
  }

  async openInstance(seriesUid, instanceUid) {
    const generation = ++this.generation;
    const started = performance.now();
    for (const button of this.instanceBar.children) button.setAttribute("aria-pressed", String(button.dataset.instance === instanceUid));
    this.setStatus("viewer.loading");
    const ref = { study: this.studyUid, series: seriesUid, instance: instanceUid };
    try {
      const metadata = await api.instanceMetadata(ref);
      if (generation !== this.generation) return;
      if (items(metadata, TAG.WaveformSequence).length) {
        await this.showEcg(metadata, generation);
      } else if (number(metadata, TAG.Rows, 0) > 0) {
        const source = await loadImageSource(ref, metadata, (done, total) => {
          if (generation === this.generation && total > 1) this.setStatus("viewer.loading_frames", { done, total });
        });
        if (generation !== this.generation) return;
        this.showImage(source, started);
      } else {
        this.clearArea();
        this.setStatus("viewer.not_displayable");
        return;
      }
      this.setStatus("");
    } catch (error) {
      if (generation !== this.generation) return;
      this.setStatus("viewer.failed", { reason: error.message });
    }
  }

  clearArea() {
    this.imageViewer?.destroy();
    this.imageViewer = null;
    this.ecgObserver?.disconnect();
    this.ecg = null;
    clear(this.area);
  }

  showImage(source, started) {
    if (!this.imageViewer) {
      this.clearArea();
      const holder = el("div", { className: "image-viewer" });
      this.area.append(holder);
      this.imageViewer = new ImageViewer(holder);
    }
    this.imageViewer.show(source, started);
  }

  legendText() {
    return t("ecg.legend", { speed: PAPER_SPEED_MM_PER_S, gain: GAIN_MM_PER_MV, frequency: Math.round(this.ecg.frequency), seconds: this.ecg.seconds.toFixed(1) });
  }

  async showEcg(metadata, generation) {
    const ecg = await loadEcg(metadata);
    if (generation !== this.generation) return;
    this.clearArea();
    this.ecg = ecg;
    this.ecgLegend = el("p", { className: "ecg-legend", dataset: { role: "ecg-legend" } });
    const canvas = el("canvas", { className: "ecg-canvas", dataset: { role: "ecg" } });
    const paper = el("div", { className: "ecg-paper" }, canvas);
    this.area.append(this.ecgLegend, paper);
    this.ecgLegend.textContent = this.legendText();
    let width = 0;
    const draw = () => {
      const available = Math.floor(paper.clientWidth);
      if (!available || available === width) return;
      width = available;
      const drawn = drawEcg(canvas, ecg, available);
      canvas.dataset.leads = drawn.leads.join(",");
      canvas.dataset.pxPerMm = drawn.pxPerMm.toFixed(3);
    };
    this.ecgObserver = new ResizeObserver(draw);
    this.ecgObserver.observe(paper);
    draw();
  }
}
