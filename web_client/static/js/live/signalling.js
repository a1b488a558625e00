// The signalling WebSocket of one live session (docs/live.md): the token goes in the first
// message, never in the URL; then offer -> answer, candidates, ping, bye. One socket per attempt:
// a dropped socket is replaced by a new Signalling, not reopened.

const PING_MS = 20000;

/** A message the server could not act on ({"type": "error", "problem": {...}}). */
export class SignallingError extends Error {
  constructor(problem) {
    super(problem?.detail || problem?.code || "signalling error");
    this.code = problem?.code || "invalid-message";
    this.problem = problem;
  }
}

/** The socket closed before what was awaited arrived: code and reason of the close. */
export class SignallingClosed extends Error {
  constructor(code, reason) {
    super(`signalling closed (${code})`);
    this.code = code;
    this.reason = reason;
  }
}

export class Signalling {
  /**
   * @param {string} path the session's signal_path (/api/live-sessions/{id}/signal)
   * @param {object} hooks onMessage(message) for bye, error and anything unasked for;
   *   onClose(code, reason, problem) once, with the last error problem the server sent before closing.
   */
  constructor(path, hooks) {
    this.hooks = hooks;
    const url = new URL(path.replace(/^\//, ""), document.baseURI);
    url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
    this.url = url;
    this.socket = null;
    this.waiting = null; // {type, resolve, reject}: the one reply being awaited (ready, answer)
    this.lastProblem = null;
    this.pinger = null;
    this.closed = false;
  }

  /** Open and authenticate; resolves once the server says ready. */
  open(token) {
    const socket = new WebSocket(this.url);
    this.socket = socket;
    const ready = this.expect("ready");
    socket.addEventListener("open", () => socket.send(JSON.stringify({ type: "auth", token })));
    socket.addEventListener("message", (event) => this.receive(event.data));
    socket.addEventListener("close", (event) => this.onClosed(event.code, event.reason));
    return ready.then(() => {
      this.pinger = setInterval(() => this.send({ type: "ping" }), PING_MS);
    });
  }

  /** Send an offer; resolves with the answer's SDP, rejects with SignallingError or SignallingClosed. */
  async offer(sdp, role) {
    const answer = this.expect("answer");
    this.send({ type: "offer", sdp, role });
    return (await answer).sdp;
  }

  candidate(candidate) {
    this.send({ type: "candidate", candidate: candidate.candidate, sdpMid: candidate.sdpMid, sdpMLineIndex: candidate.sdpMLineIndex });
  }

  /** Leave: the server answers with a close 1000. */
  bye() {
    this.send({ type: "bye" });
  }

  send(message) {
    if (this.socket?.readyState === WebSocket.OPEN) this.socket.send(JSON.stringify(message));
  }

  /** Close from this side (the hooks are not called). */
  close() {
    this.closed = true;
    clearInterval(this.pinger);
    this.rejectWaiting(new SignallingClosed(1000, "closed by the page"));
    if (this.socket && this.socket.readyState <= WebSocket.OPEN) this.socket.close(1000, "left");
  }

  expect(type) {
    return new Promise((resolve, reject) => {
      this.waiting = { type, resolve, reject };
    });
  }

  rejectWaiting(error) {
    const waiting = this.waiting;
    this.waiting = null;
    waiting?.reject(error);
  }

  receive(data) {
    let message;
    try {
      message = JSON.parse(data);
    } catch {
      return;
    }
    if (!message || typeof message !== "object" || message.type === "pong") return;
    if (message.type === "error") {
      this.lastProblem = message.problem ?? null;
      if (this.waiting) {
        this.rejectWaiting(new SignallingError(message.problem));
        return;
      }
    } else if (this.waiting && message.type === this.waiting.type) {
      const waiting = this.waiting;
      this.waiting = null;
      waiting.resolve(message);
      return;
    }
    this.hooks.onMessage(message);
  }

  onClosed(code, reason) {
    clearInterval(this.pinger);
    this.rejectWaiting(new SignallingClosed(code, reason));
    if (this.closed) return;
    this.closed = true;
    this.hooks.onClose(code, reason, this.lastProblem);
  }
}
