// Taking part in one live session: a signalling socket and one RTCPeerConnection with the server
// (docs/live.md: no mesh), the annotations data channel, and the way back after a drop.
//
// States: connecting -> connected; reconnecting (the socket dropped or the peer connection
// failed: a new socket signs in again and makes a new offer; a sender's viewers get its picture
// back without renegotiating, a viewer simply re-offers); ended (the session is over); stopped
// (this page gave up: another connection took over, no access, the session is full, or it left).

import { SignallingClosed, SignallingError, Signalling } from "./signalling.js";

const ANNOTATIONS = "annotations"; // the data channel's label
const UNAUTHENTICATED = 4001;
const NORMAL = 1000;
// Close codes after which trying again cannot help (docs/live.md).
const FINAL_CLOSES = new Map([
  [4003, "forbidden"],
  [4004, "not-found"],
  [4009, "sender-replaced"],
  [4010, "session-ended"],
]);
// Refused offers after which trying again cannot help.
const FINAL_PROBLEMS = new Set(["forbidden", "session-full", "session-ended", "invalid-offer"]);
const GATHERING_MS = 3000; // send the offer with the candidates gathered by then; trickle the rest
const DISCONNECTED_MS = 5000; // ICE "disconnected" this long: renegotiate
const MAX_DELAY_MS = 15000;

export class LiveConnection {
  /**
   * @param {object} options
   *   session: the session as the API answers it (id, signal_path, ice_servers);
   *   role: "sender" | "viewer"; media: LocalMedia (its tracks are sent);
   *   token(): the access token; refresh(): Promise of a fresh one;
   *   onState(state, detail): detail is {code} for ended/stopped/reconnecting when known;
   *   onTrack(track): a remote track (the sender's video and audio, or the viewers' voices);
   *   onAnnotation(message): what another participant sent on the data channel;
   *   onProblem(code): an error the server sent that did not end the connection.
   */
  constructor(options) {
    this.options = options;
    this.state = "idle";
    this.signalling = null;
    this.pc = null;
    this.channel = null;
    this.delay = 1000;
    this.timer = null;
    this.disconnectTimer = null;
    this.videoSender = null;
    this.attempt = 0;
  }

  start() {
    this.connect(false);
  }

  setState(state, detail = {}) {
    this.state = state;
    this.options.onState(state, detail);
  }

  get finished() {
    return this.state === "ended" || this.state === "stopped";
  }

  /** Leave the session (it goes on for the others). */
  leave() {
    if (this.finished) return;
    this.signalling?.bye();
    this.teardown();
    this.setState("stopped", { code: "left" });
  }

  /** The session ended (told by the API or by the server): close everything. */
  ended(code = "session-ended") {
    if (this.finished) return;
    this.teardown();
    this.setState("ended", { code });
  }

  /** Send an annotation to everyone else; false when the channel is not open. */
  sendAnnotation(message) {
    if (this.channel?.readyState !== "open") return false;
    this.channel.send(JSON.stringify(message));
    return true;
  }

  /** A new camera track into the running peer connection (no renegotiation). */
  async replaceVideo(track) {
    await this.videoSender?.replaceTrack(track);
  }

  // -- one attempt: sign in, offer, answer -------------------------------------------------

  async connect(again) {
    if (this.finished) return;
    clearTimeout(this.timer);
    const attempt = ++this.attempt;
    this.setState(again ? "reconnecting" : "connecting");
    this.closePeer();
    this.signalling?.close();
    const signalling = new Signalling(this.options.session.signal_path, {
      onMessage: (message) => this.onMessage(signalling, message),
      onClose: (code, reason, problem) => this.onClose(signalling, code, problem),
    });
    this.signalling = signalling;
    try {
      await signalling.open(this.options.token());
      await this.negotiate(signalling, attempt);
    } catch (error) {
      if (error instanceof SignallingError) this.refused(error.code);
      // SignallingClosed: onClose decides what comes next
      else if (!(error instanceof SignallingClosed) && attempt === this.attempt) this.retry();
    }
  }

  /** A new peer connection and its offer on the open socket (first join, or after ICE failed). */
  async negotiate(signalling, attempt) {
    const { role, media, session } = this.options;
    this.closePeer();
    const pc = new RTCPeerConnection({ iceServers: iceServers(session.ice_servers) });
    this.pc = pc;
    if (role === "sender") {
      const stream = new MediaStream([media.video, media.audio].filter(Boolean));
      this.videoSender = pc.addTransceiver(media.video, { direction: "sendonly", streams: [stream] }).sender;
      // the viewers' voices come back mixed into one track
      if (media.audio) pc.addTransceiver(media.audio, { direction: "sendrecv", streams: [stream] });
      else pc.addTransceiver("audio", { direction: "recvonly" });
    } else {
      pc.addTransceiver("video", { direction: "recvonly" });
      if (media.audio) pc.addTransceiver(media.audio, { direction: "sendrecv", streams: [new MediaStream([media.audio])] });
      else pc.addTransceiver("audio", { direction: "recvonly" });
    }
    pc.addEventListener("track", (event) => this.options.onTrack(event.track));
    pc.addEventListener("connectionstatechange", () => this.onPeerState(pc, signalling));
    this.openChannel(pc.createDataChannel(ANNOTATIONS));

    await pc.setLocalDescription(await pc.createOffer());
    await gathered(pc, GATHERING_MS);
    if (attempt !== this.attempt || pc !== this.pc) return;
    let offerSent = false;
    pc.addEventListener("icecandidate", (event) => {
      if (offerSent && event.candidate && pc === this.pc) signalling.candidate(event.candidate);
    });
    const answer = signalling.offer(pc.localDescription.sdp, role);
    offerSent = true;
    const sdp = await answer;
    if (pc !== this.pc) return;
    await pc.setRemoteDescription({ type: "answer", sdp });
  }

  openChannel(channel) {
    this.channel = channel;
    channel.addEventListener("message", (event) => {
      let message;
      try {
        message = JSON.parse(event.data);
      } catch {
        return;
      }
      if (message?.type === "error") this.options.onProblem(message.code || "invalid-annotation");
      else if (message && typeof message.type === "string") this.options.onAnnotation(message);
    });
  }

  onPeerState(pc, signalling) {
    if (pc !== this.pc || this.finished) return;
    clearTimeout(this.disconnectTimer);
    const state = pc.connectionState;
    if (state === "connected") {
      this.delay = 1000;
      this.setState("connected");
    } else if (state === "failed") {
      this.renegotiate(signalling);
    } else if (state === "disconnected") {
      this.disconnectTimer = setTimeout(() => this.renegotiate(signalling), DISCONNECTED_MS);
    }
  }

  /** The media path broke while the socket is up: a new offer on the same socket (an ICE restart). */
  renegotiate(signalling) {
    if (this.finished) return;
    if (signalling !== this.signalling || signalling.closed) {
      this.retry();
      return;
    }
    this.setState("reconnecting");
    const attempt = ++this.attempt;
    this.negotiate(signalling, attempt).catch((error) => {
      if (error instanceof SignallingError) this.refused(error.code);
      else if (!(error instanceof SignallingClosed) && attempt === this.attempt) this.retry();
    });
  }

  // -- what the server says --------------------------------------------------------------

  onMessage(signalling, message) {
    if (signalling !== this.signalling) return;
    if (message.type === "bye") this.ended("session-ended");
    else if (message.type === "error") this.options.onProblem(message.problem?.code || "invalid-message");
  }

  refused(code) {
    if (FINAL_PROBLEMS.has(code)) {
      this.teardown();
      if (code === "session-ended") this.setState("ended", { code });
      else this.setState("stopped", { code });
    } else {
      this.options.onProblem(code);
      this.retry();
    }
  }

  async onClose(signalling, code, problem) {
    if (signalling !== this.signalling || this.finished) return;
    if (code === NORMAL || code === 4010) {
      this.ended(problem?.code || "session-ended");
      return;
    }
    if (FINAL_CLOSES.has(code)) {
      this.teardown();
      this.setState("stopped", { code: problem?.code || FINAL_CLOSES.get(code) });
      return;
    }
    if (code === UNAUTHENTICATED) {
      try {
        await this.options.refresh();
      } catch {
        this.teardown();
        this.setState("stopped", { code: "unauthenticated" });
        return;
      }
    }
    this.retry({ code: problem?.code || `close-${code}` });
  }

  /** Try again after a growing delay (1 s, 2 s, 4 s ... at most 15 s). */
  retry(detail = {}) {
    if (this.finished) return;
    clearTimeout(this.timer);
    this.setState("reconnecting", detail);
    this.timer = setTimeout(() => this.connect(true), this.delay);
    this.delay = Math.min(this.delay * 2, MAX_DELAY_MS);
  }

  closePeer() {
    clearTimeout(this.disconnectTimer);
    this.channel?.close();
    this.channel = null;
    this.pc?.close();
    this.pc = null;
    this.videoSender = null;
  }

  teardown() {
    clearTimeout(this.timer);
    this.attempt++;
    this.closePeer();
    this.signalling?.close();
    this.signalling = null;
  }
}

/** The session's ICE servers as RTCIceServer dictionaries (empty: host candidates only). */
function iceServers(list = []) {
  return list.map(({ urls, username, credential }) => (username ? { urls, username, credential } : { urls }));
}

/** Resolves when ICE gathering is complete, or after ms (the rest of the candidates trickle). */
function gathered(pc, ms) {
  if (pc.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    pc.addEventListener("icegatheringstatechange", () => {
      if (pc.iceGatheringState === "complete") {
        clearTimeout(timer);
        resolve();
      }
    });
  });
}
