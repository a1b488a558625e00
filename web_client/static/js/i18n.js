// The two UI languages: every string the app shows comes from i18n/<lang>.json.
// Elements carry data-i18n (text), data-i18n-placeholder, data-i18n-title or data-i18n-aria-label.

export const LANGUAGES = ["zh-CN", "en"];
const STORAGE_KEY = "teleconsult.language"; // a preference, not patient data
const dictionaries = {};
const listeners = new Set();
let current = "zh-CN";

export async function loadLanguages() {
  await Promise.all(
    LANGUAGES.map(async (lang) => {
      const response = await fetch(`i18n/${lang}.json`, { cache: "no-cache" });
      if (!response.ok) throw new Error(`language ${lang} could not be loaded (${response.status})`);
      dictionaries[lang] = await response.json();
    }),
  );
  const saved = localStorage.getItem(STORAGE_KEY);
  setLanguage(LANGUAGES.includes(saved) ? saved : "zh-CN");
}

export function language() {
  return current;
}

/** The string for key in the current language, {name} placeholders filled from params. */
export function t(key, params = {}) {
  const text = dictionaries[current]?.[key] ?? dictionaries.en?.[key] ?? key;
  return text.replace(/\{(\w+)\}/g, (whole, name) => (name in params ? String(params[name]) : whole));
}

/** A {"zh-CN": ..., "en": ...} label from the API, in the current language. */
export function localLabel(label) {
  if (!label) return "";
  return label[current] ?? label.en ?? "";
}

export function setLanguage(lang) {
  if (!LANGUAGES.includes(lang)) return;
  current = lang;
  localStorage.setItem(STORAGE_KEY, lang);
  document.documentElement.lang = lang;
  applyTranslations(document);
  for (const listener of listeners) listener(lang);
}

export function onLanguageChange(listener) {
  listeners.add(listener);
}

export function applyTranslations(root) {
  for (const node of root.querySelectorAll("[data-i18n]")) node.textContent = t(node.dataset.i18n);
  for (const node of root.querySelectorAll("[data-i18n-placeholder]")) {
    node.placeholder = t(node.dataset.i18nPlaceholder);
  }
  for (const node of root.querySelectorAll("[data-i18n-title]")) node.title = t(node.dataset.i18nTitle);
  for (const node of root.querySelectorAll("[data-i18n-aria-label]")) {
    node.setAttribute("aria-label", t(node.dataset.i18nAriaLabel));
  }
  if (root === document) document.title = t("app.title");
}

/** Date and time in the current language's format (local time zone). */
export function formatDateTime(value) {
  const date = value instanceof Date ? value : new Date(value);
  if (Number.isNaN(date.getTime())) return "";
  return date.toLocaleString(current, { dateStyle: "short", timeStyle: "short" });
}
