// The web room's drawing helpers: one element per key, made once and updated in place, and a
// confirmation dialog. Split from room.js so each file stays short.

// The room redraws on every event, but never replaces a control that is still wanted, so a click in
// progress (press ... release) and keyboard focus survive; audio levels only repaint classes.
export function keyed(list, keys, make, update) {
  const want = new Set(keys);
  const have = new Map();
  for (const el of [...list.children]) { if (want.has(el.dataset.key)) have.set(el.dataset.key, el); else el.remove(); }
  let prev = null;
  for (const key of keys) {
    let el = have.get(key);
    if (!el) { el = make(key); el.dataset.key = key; }
    update(el, key);
    const at = prev ? prev.nextElementSibling : list.firstElementChild;
    if (at !== el) list.insertBefore(el, at);
    prev = el;
  }
}
export function setText(el, value) { if (el.textContent !== value) el.textContent = value; }
export function setAttr(el, attr, value) { if (el.getAttribute(attr) !== value) el.setAttribute(attr, value); }
// acts: [{key, label, aria?, run, danger?, pressed?}] drawn as buttons in box, in order.
export function buttons(box, acts) {
  const by = Object.fromEntries(acts.map((a) => [a.key, a]));
  keyed(box, acts.map((a) => a.key), () => {
    const b = document.createElement("button"); b.type = "button"; b.onclick = () => b.run && b.run(); return b;
  }, (b, key) => {
    const a = by[key]; setText(b, a.label); setAttr(b, "aria-label", a.aria || a.label); b.run = a.run;
    b.classList.toggle("danger", !!a.danger);
    if (a.pressed !== undefined) setAttr(b, "aria-pressed", String(a.pressed));
  });
}

// Confirmation for what cannot be undone (End, Remove): resolves true when confirmed.
export function ask($, { text, block = false, yes = "Confirm" }) {
  const d = $("confirm");
  $("confirm-text").textContent = text; $("confirm-yes").textContent = yes;
  $("confirm-block-row").hidden = !block; $("confirm-block").checked = false;
  d.returnValue = "";
  return new Promise((resolve) => {
    d.addEventListener("close", () => resolve(d.returnValue === "ok"), { once: true });
    d.showModal(); $("confirm-no").focus();
  });
}

// A reaction floating up the room, gone when its animation ends.
export function floatUp(box, emoji) {
  const f = document.createElement("span"); f.className = "floater"; f.textContent = emoji;
  f.style.left = `${10 + Math.random() * 80}%`;
  box.append(f); setTimeout(() => f.remove(), 2300);
}

// A "who: text" line (caption or comment) at the end of a box that keeps only its last `keep` lines.
export function appendLine(box, tag, who, text, keep) {
  const el = document.createElement(tag); const b = document.createElement("b");
  b.textContent = `${who}: `; el.append(b, document.createTextNode(text));
  box.append(el); while (box.children.length > keep) box.firstChild.remove();
  return el;
}
