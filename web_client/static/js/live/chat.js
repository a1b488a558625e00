// The chat of a live exam: messages travel on the annotations channel ({"type": "chat"}), and
// are shown as text nodes only (they are typed by people, and may hold anything).

import { clear, el } from "../dom.js";
import { language, t } from "../i18n.js";

const MAX_LENGTH = 2000; // the channel's limit (docs/live.md)

export class Chat {
  /**
   * @param {HTMLElement} container
   * @param {object} options me (username); send(message) -> false when the channel is not open
   */
  constructor(container, options) {
    this.options = options;
    this.log = el("ol", { className: "chat-log", dataset: { role: "chat-log" }, attrs: { "aria-live": "polite" } });
    this.input = el("input", { name: "chat", maxLength: MAX_LENGTH, autocomplete: "off", dataset: { role: "chat-input" } });
    this.button = el("button", { type: "submit", dataset: { role: "chat-send" } });
    this.form = el("form", { className: "chat-form" }, this.input, this.button);
    this.form.addEventListener("submit", (event) => {
      event.preventDefault();
      this.submit();
    });
    container.append(el("div", { className: "chat" }, this.log, this.form));
    this.relabel();
  }

  relabel() {
    this.input.placeholder = t("live_exam.chat_placeholder");
    this.input.setAttribute("aria-label", t("live_exam.chat_placeholder"));
    this.button.textContent = t("live_exam.chat_send");
  }

  setEnabled(enabled) {
    this.input.disabled = !enabled;
    this.button.disabled = !enabled;
  }

  submit() {
    const text = this.input.value.trim();
    if (!text) return;
    if (!this.options.send({ type: "chat", text })) return; // not connected: the text stays in the box
    this.add(this.options.me, text, new Date(), true);
    this.input.value = "";
  }

  /** A chat message another participant sent. */
  receive(message) {
    this.add(message.from?.username ?? "?", message.text, message.time ? new Date(message.time) : new Date(), false);
  }

  add(author, text, time, mine) {
    this.log.append(
      el(
        "li",
        { className: mine ? "mine" : "theirs", dataset: { author } },
        el("span", { className: "chat-meta", text: `${author} · ${time.toLocaleTimeString(language(), { hour: "2-digit", minute: "2-digit" })}` }),
        el("span", { className: "chat-text", text }),
      ),
    );
    this.log.scrollTop = this.log.scrollHeight;
  }

  reset() {
    clear(this.log);
    this.input.value = "";
  }
}
