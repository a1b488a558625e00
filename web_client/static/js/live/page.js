// The "Live exam" panel of an open consult (docs/live.md).
// The requesting side (the township's sonographer or doctor) starts the exam and sends its camera
// or capture card; everyone else who sees the consult (the county specialists) joins as a viewer
// once it runs. Both see the picture with the marks drawn on it, talk and chat; either may
// capture the current frame into the study.

import * as api from "../api.js";
import { clear, el, options } from "../dom.js";
import { applyTranslations, onLanguageChange, t } from "../i18n.js";
import * as tokens from "../session.js";
import { Chat } from "./chat.js";
import { LiveConnection } from "./connection.js";
import { LocalMedia } from "./media.js";
import { mediaErrorKey, problemKey, requestErrorKey } from "./messages.js";
import { Overlay, TOOLS } from "./overlay.js";

const POLL_MS = 10000; // how often the session is read while the panel is open
const CLOSED = new Set(["declined", "cancelled"]);
const COLOURS = { sender: "#00e5ff", viewer: "#ffcc00" };
const STATE_KEYS = {
  idle: "live_exam.state_idle",
  connecting: "live_exam.state_connecting",
  connected: "live_exam.state_connected",
  reconnecting: "live_exam.state_reconnecting",
  ended: "live_exam.state_ended",
  stopped: "live_exam.state_idle",
};
const TOOL_KEYS = { pointer: "live_exam.tool_pointer", arrow: "live_exam.tool_arrow", circle: "live_exam.tool_circle", text: "live_exam.tool_text" };

/** Whether the user acts for the consult's requesting side, the only one that may send (docs/live.md). */
function maySend(user, consult) {
  if (!user.visible_organisations.includes(consult.source_organisation)) return false;
  return user.role !== "specialist" || consult.requested_by === user.username;
}

/** Whether the consult has a live exam for this user at all (not admins, not closed consults). */
export function hasLiveExam(user, consult) {
  return Boolean(user && consult) && user.role !== "admin" && !CLOSED.has(consult.status);
}

export class LivePage {
  /**
   * @param {HTMLElement} container the panel
   * @param {object} hooks onSnapshot(snapshot): a frame was stored in the study;
   *   onRunning(running): whether the consult has a running session (the tab shows it)
   */
  constructor(container, hooks) {
    this.container = container;
    this.hooks = hooks;
    this.user = null;
    this.consult = null;
    this.session = null; // the session taking part in
    this.running = null; // the consult's running session, while not taking part
    this.ended = false; // whether the session taken part in has ended
    this.known = false; // whether the consult's session has been looked up yet
    this.connection = null;
    this.media = null;
    this.timer = null;
    this.generation = 0;
    onLanguageChange(() => this.relabel());
  }

  get active() {
    return this.connection !== null && !this.connection.finished;
  }

  setUser(user) {
    this.user = user;
  }

  /** Whether the panel shows this consult's live exam already. */
  showing(consultId) {
    return this.consult?.id === consultId;
  }

  /** Show the live exam of a consult (and look for its running session every few seconds). */
  open(consult) {
    this.close();
    this.consult = consult;
    this.known = false;
    this.role = maySend(this.user, consult) ? "sender" : "viewer";
    this.render();
    this.poll();
  }

  /** The consult changed (accepted, reported ...): a running exam goes on. */
  update(consult) {
    if (this.consult?.id === consult.id) this.consult = consult;
  }

  close() {
    this.generation++;
    clearTimeout(this.timer);
    const connection = this.connection;
    this.connection = null; // first: its last state change is not this panel's business any more
    connection?.leave();
    this.stopMedia();
    this.overlay?.destroy();
    this.overlay = null;
    this.consult = null;
    this.session = null;
    this.running = null;
    this.ended = false;
    this.messageKey = null;
    clear(this.container);
    this.hooks.onRunning(false);
  }

  // -- the panel ---------------------------------------------------------------------------

  render() {
    const c = this.container;
    clear(c);
    c.dataset.liveRole = this.role;
    const button = (role, key, handler, extra = {}) =>
      el("button", { type: "button", dataset: { role, i18n: key }, on: { click: handler }, ...extra });

    this.state = el("span", { className: "live-state", dataset: { role: "live-state", state: "idle" } });
    this.info = el("p", { className: "live-info", dataset: { role: "live-info" } });
    this.startButton = button("live-start", this.role === "sender" ? "live_exam.start" : "live_exam.join", () => this.start(), { className: "primary" });
    this.message = el("p", { className: "message", dataset: { role: "live-message" }, attrs: { role: "alert" } });

    this.camera = el("select", { dataset: { role: "live-camera" }, on: { change: () => this.switchCamera() } });
    this.cameraField = el("label", { className: "live-camera", hidden: this.role !== "sender" }, el("span", { dataset: { i18n: "live_exam.camera" } }), this.camera);
    this.mute = button("live-mute", "live_exam.mute", () => this.toggleMute(), { attrs: { "aria-pressed": "false" } });
    this.snapshotButton = button("live-snapshot", "live_exam.snapshot", () => this.snapshot());
    this.leaveButton = button("live-leave", "live_exam.leave", () => this.leave(), { hidden: this.role === "sender" });
    this.endButton = button("live-end", "live_exam.end", () => this.end());
    this.soundButton = button("live-sound", "live_exam.sound_blocked", () => this.playAudio(), { hidden: true });
    this.controls = el("div", { className: "live-controls actions" }, this.cameraField, this.mute, this.snapshotButton, this.soundButton, this.leaveButton, this.endButton);

    this.video = el("video", { className: "live-video", autoplay: true, muted: true, playsInline: true, dataset: { role: "live-video" } });
    this.canvas = el("canvas", { className: "live-overlay", dataset: { role: "live-overlay", tool: "none", shapes: "0" } });
    this.waiting = el("p", { className: "live-waiting", dataset: { role: "live-waiting", i18n: "live_exam.waiting_picture" } });
    this.audio = el("audio", { autoplay: true, dataset: { role: "live-audio" } });
    this.stage = el("div", { className: "live-stage" }, this.video, this.canvas, this.waiting, this.audio);
    this.video.addEventListener("resize", () => (this.waiting.hidden = this.video.videoWidth > 0));

    this.text = el("input", { name: "live-text", maxLength: 200, autocomplete: "off", dataset: { role: "live-text", i18nPlaceholder: "live_exam.text_placeholder" } });
    this.toolButtons = TOOLS.map((tool) =>
      el("button", { type: "button", attrs: { "aria-pressed": "false" }, dataset: { role: "live-tool", tool, i18n: TOOL_KEYS[tool] }, on: { click: () => this.selectTool(tool) } }),
    );
    const clearButton = button("live-clear", "live_exam.clear_mine", () => this.overlay.clearMine());
    this.tools = el("div", { className: "live-tools actions" }, ...this.toolButtons, this.text, clearButton);

    this.chatBox = el("div", { className: "live-chat" });
    this.chat = new Chat(this.chatBox, { me: this.user.username, send: (message) => this.connection?.sendAnnotation(message) ?? false });
    this.workArea = el("div", { className: "live-work" }, el("div", { className: "live-main" }, this.stage, this.tools), this.chatBox);
    this.overlay = new Overlay(this.canvas, this.video, {
      me: this.user.username,
      colour: COLOURS[this.role],
      send: (message) => this.connection?.sendAnnotation(message) ?? false,
      text: () => this.text.value,
      needText: () => {
        this.say("live_exam.text_needed", {}, "error");
        this.text.focus();
      },
    });

    c.append(el("div", { className: "live-head" }, this.state, this.info, this.startButton), this.message, this.controls, this.workArea);
    this.showActive(false);
    this.relabel();
  }

  relabel() {
    if (!this.consult) return;
    applyTranslations(this.container);
    this.chat.relabel();
    this.showState(this.state.dataset.state);
    this.showInfo();
    if (this.messageKey) this.message.textContent = t(this.messageKey, this.messageParams);
    this.fillCameras().catch(() => {});
  }

  showActive(active) {
    this.controls.hidden = !active;
    this.workArea.hidden = !active;
    this.startButton.hidden = active;
    this.chat.setEnabled(active);
    if (!active) this.selectTool(null);
  }

  showState(state) {
    this.state.dataset.state = state;
    this.state.textContent = t(STATE_KEYS[state] ?? STATE_KEYS.idle);
  }

  /** What the consult's session is doing: none, running (who sends, who watches), ended. */
  showInfo() {
    const session = this.session ?? this.running;
    let text;
    if (!this.known) text = t("viewer.loading");
    else if (this.ended) text = t("live_exam.ended_message");
    else if (!session) text = t("live_exam.none");
    else if (session.status === "waiting") text = t("live_exam.waiting_sender", { user: session.started_by });
    else text = t("live_exam.participants", { sender: session.sender ?? "-", viewers: session.viewers.length ? session.viewers.join(", ") : "-" });
    this.info.textContent = text;
    this.info.dataset.status = !this.known ? "unknown" : this.ended ? "ended" : session?.status ?? "none";
    if (!this.active) {
      // a sender may start (or resume) at any time; a viewer joins a running session only
      this.startButton.disabled = !this.known || (this.role === "viewer" && !this.running);
      this.startButton.dataset.i18n = this.role === "viewer" ? "live_exam.join" : this.running ? "live_exam.resume" : "live_exam.start";
      this.startButton.textContent = t(this.startButton.dataset.i18n);
    }
  }

  /** A message under the state line (kind: error, ok or note), in the current language. */
  say(key, params = {}, kind = "note") {
    this.messageKey = key;
    this.messageParams = params;
    this.message.dataset.kind = key ? kind : "";
    this.message.dataset.key = key ?? "";
    this.message.textContent = key ? t(key, params) : "";
  }

  // -- the session's state, read every few seconds ------------------------------------------

  /** Read the session's state now (the user looks at the panel). */
  refresh() {
    if (this.consult) this.poll();
  }

  async poll() {
    clearTimeout(this.timer);
    if (!this.consult) return;
    const generation = this.generation;
    try {
      if (this.session && this.active) {
        const session = await api.readLiveSession(this.session.id);
        if (generation !== this.generation) return;
        if (this.active && this.session?.id === session.id) {
          this.session = session;
          if (session.status === "ended") this.connection.ended();
        }
      } else {
        const running = await api.runningLiveSession(this.consult.id);
        if (generation !== this.generation) return;
        this.running = this.active ? null : running;
        if (running) this.ended = false;
        this.hooks.onRunning(Boolean(running));
      }
    } catch {
      if (generation !== this.generation) return;
      // a failed read is retried at the next turn; the connection state shows what matters
    }
    this.known = true; // even after a failed read: a sender may still try to start
    this.showInfo();
    this.timer = setTimeout(() => this.poll(), POLL_MS);
  }

  // -- joining and leaving ----------------------------------------------------------------

  async start() {
    this.say(null);
    if (!window.RTCPeerConnection || !navigator.mediaDevices?.getUserMedia) {
      this.say("live_exam.error_no_webrtc", {}, "error");
      return;
    }
    const generation = this.generation;
    this.startButton.disabled = true;
    const media = new LocalMedia();
    let session;
    try {
      if (this.role === "sender") {
        await media.openSender();
        if (generation !== this.generation) return media.stop(); // the consult was left meanwhile
        session = await api.startLiveSession(this.consult.id);
      } else {
        session = this.running ?? (await api.runningLiveSession(this.consult.id));
        if (!session) {
          this.say("live_exam.none");
          return;
        }
        if (!(await media.openViewer())) this.say("live_exam.no_microphone");
      }
    } catch (error) {
      media.stop();
      if (generation === this.generation) this.say(error instanceof DOMException ? mediaErrorKey(error) : requestErrorKey(error), {}, "error");
      return;
    } finally {
      if (generation === this.generation) this.showInfo();
    }
    if (generation !== this.generation) {
      media.stop();
      return;
    }
    this.join(session, media);
  }

  join(session, media) {
    this.media = media;
    this.session = session;
    this.running = null;
    this.ended = false;
    this.overlay.reset();
    this.chat.reset();
    this.setMuted(false);
    this.waiting.hidden = false;
    this.video.srcObject = this.role === "sender" ? media.preview() : null;
    this.waiting.dataset.i18n = this.role === "sender" ? "live_exam.waiting_camera" : "live_exam.waiting_picture";
    this.waiting.textContent = t(this.waiting.dataset.i18n);
    this.mute.disabled = !media.audio;
    this.showActive(true);
    const current = (handler) => (...args) => this.connection === connection && handler(...args);
    const connection = new LiveConnection({
      session,
      role: this.role,
      media,
      token: () => tokens.currentAccessToken(),
      refresh: () => tokens.refresh(),
      onState: current((state, detail) => this.connectionState(state, detail)),
      onTrack: current((track) => this.remoteTrack(track)),
      onAnnotation: current((message) => this.annotation(message)),
      onProblem: current((code) => this.say(problemKey(code), {}, "error")),
    });
    this.connection = connection;
    connection.start();
    this.fillCameras().catch(() => {});
    this.poll();
  }

  annotation(message) {
    if (message.type === "chat") this.chat.receive(message);
    else this.overlay.receive(message);
    // someone the participants line does not name yet has joined: read it now, not at the next turn
    const author = message.from?.username;
    if (author && this.session && author !== this.session.sender && !this.session.viewers?.includes(author)) {
      this.session = { ...this.session, viewers: [...(this.session.viewers ?? []), author] };
      this.poll();
    }
  }

  connectionState(state, detail) {
    this.showState(state);
    this.snapshotButton.disabled = state !== "connected";
    if (state === "connected") {
      if (this.message.dataset.kind === "error") this.say(null);
      this.poll();
    } else if (state === "reconnecting" && detail.code) {
      this.say(problemKey(detail.code), {}, "error");
    } else if (state === "ended" || state === "stopped") {
      this.finish(state, detail.code);
    }
  }

  /** The connection is over: say why, release the camera and microphone, offer to start or join again. */
  finish(state, code) {
    this.stopMedia();
    this.session = null;
    this.ended = state === "ended";
    if (state === "ended") this.say("live_exam.error_ended", {}, "note");
    else if (code && code !== "left") this.say(problemKey(code), {}, "error");
    this.showActive(false);
    this.showInfo();
    this.poll();
  }

  remoteTrack(track) {
    const stream = new MediaStream([track]);
    if (track.kind === "video") {
      this.video.srcObject = stream;
    } else {
      this.audio.srcObject = stream;
      this.playAudio();
    }
  }

  playAudio() {
    this.audio.play().then(
      () => (this.soundButton.hidden = true),
      () => (this.soundButton.hidden = false), // the browser wants a tap before it plays sound
    );
  }

  stopMedia() {
    this.media?.stop();
    this.media = null;
    if (this.video) this.video.srcObject = null;
    if (this.audio) this.audio.srcObject = null;
  }

  leave() {
    this.connection?.leave();
  }

  async end() {
    const session = this.session;
    if (!session) return;
    this.endButton.disabled = true;
    try {
      await api.endLiveSession(session.id);
      this.connection?.ended("session-ended");
    } catch (error) {
      this.say(requestErrorKey(error), {}, "error");
    } finally {
      this.endButton.disabled = false;
    }
  }

  // -- while taking part ----------------------------------------------------------------------

  async snapshot() {
    if (!this.session) return;
    this.snapshotButton.disabled = true;
    try {
      const snapshot = await api.liveSnapshot(this.session.id);
      this.say("live_exam.snapshot_saved", { uid: snapshot.sop_instance_uid }, "ok");
      this.message.dataset.sopInstanceUid = snapshot.sop_instance_uid;
      this.hooks.onSnapshot(snapshot);
    } catch (error) {
      this.say(requestErrorKey(error, { snapshot: true }), {}, "error");
    } finally {
      this.snapshotButton.disabled = this.connection?.state !== "connected";
    }
  }

  selectTool(tool) {
    const chosen = tool && this.overlay?.tool !== tool ? tool : null; // a second press puts it down
    this.overlay?.setTool(chosen);
    for (const button of this.toolButtons ?? []) button.setAttribute("aria-pressed", String(button.dataset.tool === chosen));
  }

  toggleMute() {
    this.setMuted(!this.media?.muted);
  }

  setMuted(muted) {
    this.media?.setMuted(muted);
    this.mute.setAttribute("aria-pressed", String(muted));
    this.mute.dataset.i18n = muted ? "live_exam.unmute" : "live_exam.mute";
    this.mute.textContent = t(this.mute.dataset.i18n);
  }

  /** The cameras and capture cards the browser offers (labelled once the camera is allowed). */
  async fillCameras() {
    if (this.role !== "sender" || !this.media?.video) return;
    const cameras = await this.media.cameras();
    if (!this.media) return;
    options(
      this.camera,
      cameras.map((camera, index) => [camera.deviceId, camera.label || t("live_exam.camera_n", { n: index + 1 })]),
      this.media.currentCameraId(),
    );
  }

  async switchCamera() {
    if (!this.media || this.camera.value === this.media.currentCameraId()) return;
    try {
      const track = await this.media.switchCamera(this.camera.value);
      await this.connection?.replaceVideo(track);
      this.video.srcObject = this.media.preview();
    } catch (error) {
      this.say(mediaErrorKey(error), {}, "error");
      this.fillCameras().catch(() => {});
    }
  }
}
