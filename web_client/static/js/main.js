// The app: sign-in, then the worklist, the study viewer and the report of the chosen row.

import * as api from "./api.js";
import { renderBanner } from "./banner.js";
import { renderConsultRequest } from "./consult-request.js";
import { $, clear } from "./dom.js";
import { language, loadLanguages, onLanguageChange, setLanguage, t } from "./i18n.js";
import { hasLiveExam, LivePage } from "./live/page.js";
import { Notifications } from "./notifications.js";
import { ReportEditor } from "./report-editor.js";
import * as session from "./session.js";
import { StudyViewer } from "./viewer/study-viewer.js";
import { Worklist } from "./worklist.js";

const state = { user: null, row: null, consult: null, live: "offline", tab: "images" };

const ui = {
  login: $("[data-role=login]"),
  loginForm: $("[data-role=login-form]"),
  loginMessage: $("[data-role=login-message]"),
  workbench: $("[data-role=workbench]"),
  user: $("[data-role=user]"),
  live: $("[data-role=live]"),
  logout: $("[data-role=logout]"),
  language: $("[data-role=language]"),
  alert: $("[data-role=alert]"),
  banner: $("[data-role=banner]"),
  placeholder: $("[data-role=placeholder]"),
  tabs: $("[data-role=tabs]"),
  liveTab: $("[data-tab=live]"),
  panels: $("[data-role=panels]"),
  viewer: $("[data-role=viewer]"),
  report: $("[data-role=report]"),
  liveExam: $("[data-role=live-exam]"),
};

const viewer = new StudyViewer(ui.viewer);
let editor = null;
const live = new LivePage(ui.liveExam, {
  onSnapshot: (snapshot) => viewer.refreshSeries(snapshot.study_instance_uid).catch(() => {}),
  onRunning: (running) => (ui.liveTab.dataset.running = String(running)),
});
const worklist = new Worklist($("[data-role=worklist]"), { onOpen: openRow, onAlert: showAlert });
const notifications = new Notifications({
  token: () => session.currentAccessToken(),
  refresh: () => session.refresh(),
  onEvent: (event) => worklist.handleEvent(event).then(() => refreshOpenConsult(event)).catch(() => {}),
  onState: (live) => {
    state.live = live;
    showLive();
  },
  onReconnected: () => worklist.load().catch(() => {}),
});

function showLive() {
  ui.live.dataset.state = state.live;
  ui.live.textContent = t(`live.${state.live}`);
}

function showAlert(data) {
  ui.alert.textContent = t("alert.critical", { reason: data.reason || "" });
  ui.alert.hidden = false;
}
ui.alert.addEventListener("click", () => (ui.alert.hidden = true));

function showLogin(messageKey = "") {
  ui.workbench.hidden = true;
  ui.logout.hidden = true;
  ui.live.hidden = true;
  ui.login.hidden = false;
  ui.user.textContent = "";
  ui.loginMessage.dataset.key = messageKey;
  ui.loginMessage.textContent = messageKey ? t(messageKey) : "";
  ui.loginForm.elements.password.value = "";
  ui.loginForm.elements.username.focus();
}

function showUser() {
  if (state.user) ui.user.textContent = t("app.user", { user: state.user.username, role: t(`role.${state.user.role}`), organisation: state.user.organisation });
}

async function startApp() {
  state.user = await api.me();
  editor = new ReportEditor(ui.report, { user: state.user, onConsultChanged: consultChanged });
  live.setUser(state.user);
  ui.login.hidden = true;
  ui.workbench.hidden = false;
  ui.logout.hidden = false;
  ui.live.hidden = false;
  showUser();
  showLive();
  notifications.start();
  await worklist.start(state.user.visible_organisations);
}

function stopApp() {
  notifications.stop();
  worklist.stop();
  viewer.close();
  live.close();
  editor?.close();
  editor = null;
  state.user = null;
  state.row = null;
  state.consult = null;
  clear(ui.banner);
  ui.tabs.hidden = true;
  ui.placeholder.hidden = false;
  ui.liveTab.hidden = true;
  for (const panel of ui.panels.children) panel.hidden = true;
}

function selectTab(tab) {
  if (tab === "live" && ui.liveTab.hidden) tab = "images";
  state.tab = tab;
  for (const button of ui.tabs.querySelectorAll("[data-tab]")) button.setAttribute("aria-selected", String(button.dataset.tab === tab));
  for (const panel of ui.panels.children) panel.hidden = panel.dataset.panel !== tab;
  ui.panels.dataset.shown = tab;
}
// Looking at the live exam: its state now, not at the next poll.
ui.liveTab.addEventListener("click", () => live.refresh());
for (const button of ui.tabs.querySelectorAll("[data-tab]")) button.addEventListener("click", () => selectTab(button.dataset.tab));

async function openRow(row) {
  state.row = row;
  state.consult = row.consult;
  ui.placeholder.hidden = true;
  ui.tabs.hidden = false;
  // Opening another consult leaves the live exam (a sender can resume it); the same one keeps it.
  const liveExam = hasLiveExam(state.user, row.consult);
  ui.liveTab.hidden = !liveExam;
  if (!liveExam) live.close();
  else if (!live.showing(row.consult.id)) live.open(row.consult);
  selectTab(state.tab);
  renderBanner(ui.banner, row.study, row.consult);
  editor.close();
  clear(ui.report);
  const work = [];
  if (row.study) work.push(viewer.open(row.study.uid));
  else viewer.close();
  if (row.consult) {
    work.push(
      api.readConsult(row.consult.id).then((consult) => {
        if (state.row !== row) return;
        state.consult = consult;
        live.update(consult);
        return editor.open(consult);
      }),
    );
  } else if (row.study && state.user.role !== "admin") {
    renderConsultRequest(ui.report, row.study, { onCreated: consultCreated });
  }
  await Promise.all(work).catch(() => {});
}

async function consultCreated(consult) {
  await worklist.refreshConsult(consult.id);
  worklist.open(`c:${consult.id}`);
}

function consultChanged(consult) {
  state.consult = consult;
  live.update(consult);
  worklist.refreshConsult(consult.id).catch(() => {});
}

/** Someone else signed or changed the open consult: show it (unless the user is typing in it). */
async function refreshOpenConsult(event) {
  const id = event.data?.consult_id;
  if (!id || state.consult?.id !== id || !event.type.startsWith("report.")) return;
  if (event.data.actor === state.user?.username) return; // our own signature: already shown
  if (editor && !editor.unsaved) await editor.open(await api.readConsult(id));
}

// -- sign-in, sign-out, language ---------------------------------------------------------

ui.loginForm.addEventListener("submit", async (event) => {
  event.preventDefault();
  const { username, password } = ui.loginForm.elements;
  ui.loginMessage.textContent = "";
  try {
    await session.login(username.value.trim(), password.value);
    password.value = "";
    await startApp();
  } catch (error) {
    showLogin(error instanceof session.AuthError ? "login.failed" : "login.unavailable");
  }
});

ui.logout.addEventListener("click", () => session.logout());
session.onSessionEnd((reason) => {
  stopApp();
  showLogin(reason === "expired" ? "login.expired" : "login.signed_out");
});

ui.language.addEventListener("change", () => setLanguage(ui.language.value));
onLanguageChange(() => {
  ui.language.value = language();
  showUser();
  showLive();
  if (ui.loginMessage.dataset.key) ui.loginMessage.textContent = t(ui.loginMessage.dataset.key);
  if (state.user) {
    worklist.renderFilters();
    worklist.render();
  }
  if (state.row) renderBanner(ui.banner, state.row.study, state.consult);
});

async function boot() {
  await loadLanguages();
  ui.language.value = language();
  if (await session.resume()) {
    try {
      await startApp();
      return;
    } catch {
      stopApp();
    }
  }
  showLogin();
}

boot();
