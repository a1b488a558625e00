// Building DOM nodes without HTML strings: every piece of data becomes a text node.
// Patient names, questions and report text are untrusted; nothing here ever parses markup.

/**
 * el("li", {className: "row", dataset: {id}, attrs: {title}, on: {click}}, child, "text", ...)
 * Children may be nodes, strings or numbers (become text nodes), or null/false (skipped).
 */
export function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  const { className, text, dataset, attrs, on, ...rest } = props;
  if (className) node.className = className;
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (dataset) Object.assign(node.dataset, dataset);
  if (attrs) {
    for (const [name, value] of Object.entries(attrs)) {
      if (/^on/i.test(name) || name === "style") throw new Error(`attribute ${name} is not allowed`);
      if (value !== undefined && value !== null && value !== false) node.setAttribute(name, String(value));
    }
  }
  for (const [name, value] of Object.entries(rest)) {
    if (value !== undefined) node[name] = value; // properties: type, value, disabled, hidden, checked ...
  }
  if (on) {
    for (const [type, handler] of Object.entries(on)) node.addEventListener(type, handler);
  }
  append(node, ...children);
  return node;
}

export function append(parent, ...children) {
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    parent.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return parent;
}

export function clear(node) {
  node.replaceChildren();
  return node;
}

export function $(selector, root = document) {
  const found = root.querySelector(selector);
  if (!found) throw new Error(`missing element ${selector}`);
  return found;
}

/** <option>s for a <select>: [[value, label], ...]. */
export function options(select, pairs, selected) {
  clear(select);
  for (const [value, label] of pairs) {
    select.append(el("option", { value, text: label, selected: value === selected }));
  }
  if (selected !== undefined) select.value = selected;
}
