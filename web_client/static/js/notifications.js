// The /api/events WebSocket: authenticate with the first message, hand events on, reconnect.
// The token is never put in the URL. Close 4001 means the token is no longer good: refresh and
// reconnect; anything else: reconnect with a growing delay (at most 30 s).

const UNAUTHENTICATED = 4001;

export class Notifications {
  /**
   * @param {object} hooks
   *   token(): the current access token;
   *   refresh(): Promise of a fresh token (rejects when the session is over);
   *   onEvent(event), onState("connecting" | "live" | "offline"), onReconnected() (catch up by REST).
   */
  constructor(hooks) {
    this.hooks = hooks;
    this.socket = null;
    this.stopped = true;
    this.delay = 1000;
    this.timer = null;
    this.everReady = false;
    this.seen = new Set(); // event ids: a reconnect may deliver one twice
  }

  start() {
    this.stopped = false;
    this.connect();
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.timer);
    if (this.socket) this.socket.close(1000, "signed out");
    this.socket = null;
  }

  connect() {
    if (this.stopped) return;
    this.hooks.onState("connecting");
    const url = new URL("api/events", document.baseURI);
    url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
    const socket = new WebSocket(url);
    this.socket = socket;
    socket.addEventListener("open", () => {
      socket.send(JSON.stringify({ type: "auth", token: this.hooks.token() }));
    });
    socket.addEventListener("message", (message) => this.receive(message));
    socket.addEventListener("close", (close) => this.closed(socket, close.code));
  }

  receive(message) {
    let event;
    try {
      event = JSON.parse(message.data);
    } catch {
      return;
    }
    if (event.type === "ready") {
      this.delay = 1000;
      this.hooks.onState("live");
      if (this.everReady) this.hooks.onReconnected();
      this.everReady = true;
      return;
    }
    if (event.type === "error" || event.type === "pong") return;
    if (event.id) {
      if (this.seen.has(event.id)) return;
      this.seen.add(event.id);
      if (this.seen.size > 2000) this.seen.delete(this.seen.values().next().value);
    }
    this.hooks.onEvent(event);
  }

  async closed(socket, code) {
    if (socket !== this.socket || this.stopped) return;
    this.socket = null;
    this.hooks.onState("offline");
    if (code === UNAUTHENTICATED) {
      try {
        await this.hooks.refresh();
      } catch {
        return; // the session is over; the app goes back to sign-in
      }
      this.timer = setTimeout(() => this.connect(), 0);
      return;
    }
    this.timer = setTimeout(() => this.connect(), this.delay);
    this.delay = Math.min(this.delay * 2, 30000);
  }
}
