"use strict";
// Plays a recording (or a clip) with its captions, reactions, pins and stage changes in sync:
// the timeline's "t" is seconds from the start of the audio file.
const base = location.pathname.replace(/\/$/, "");
const audio = document.getElementById("audio");
let data = { events: [], names: {} };
let shown = 0;
const who = (id) => data.names[id] || id || "";
function describe(e) {
  switch (e.type) {
    case "caption.line": return `💬 ${who(e.speaker_id)}: ${e.text}`;
    case "reaction.sent": return `${e.emoji} from ${who(e.account_id)}`;
    case "pin.added": return `📌 pinned ${e.title}`;
    case "comment.posted": return `🗨 ${who(e.account_id)}: ${e.text}`;
    case "pin.removed": return "📌 unpinned";
    case "role.changed": return `🎙 ${who(e.account_id)} is now ${e.role}`;
    case "speaker.muted": return `${e.muted ? "🔇" : "🔊"} ${who(e.account_id)} ${e.muted ? "muted" : "unmuted"}`;
    default: return e.type;
  }
}
function clock(t) { const s = Math.floor(t); return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, "0")}`; }
function float(emoji) {
  const el = document.createElement("span");
  el.className = "float"; el.textContent = emoji; el.style.left = `${Math.random() * 90}%`;
  document.getElementById("stage").appendChild(el);
  setTimeout(() => el.remove(), 2600);
}
function tick() {
  const now = audio.currentTime;
  const line = [...data.events].reverse().find((e) => e.type === "caption.line" && e.t <= now && now <= e.end + 2);
  const cap = document.getElementById("caption");
  cap.replaceChildren();
  if (line) {
    const b = document.createElement("b"); b.textContent = who(line.speaker_id) + ": ";
    cap.append(b, line.text);
  }
  cap.dataset.t = line ? String(line.t) : "";
  while (shown < data.events.length && data.events[shown].t <= now) {
    const e = data.events[shown++];
    if (e.type === "reaction.sent") float(e.emoji);
  }
}
audio.addEventListener("timeupdate", tick);
audio.addEventListener("seeked", () => { shown = data.events.findIndex((e) => e.t > audio.currentTime); if (shown < 0) shown = data.events.length; tick(); });
fetch(base + "/timeline.json").then((r) => r.json()).then((d) => {
  data = d;
  data.events.sort((a, b) => a.t - b.t);
  document.getElementById("title").textContent = d.title || "Replay";
  document.getElementById("meta").textContent = `${d.clip ? "Clip" : "Recording"} · ${clock(d.duration_s)}`;
  const log = document.getElementById("log");
  for (const e of data.events) {
    const li = document.createElement("li");
    li.textContent = `${clock(e.t)}  ${describe(e)}`;
    li.addEventListener("click", () => { audio.currentTime = e.t; audio.play(); });
    log.appendChild(li);
  }
  audio.src = base + "/audio.ogg";
  document.body.dataset.ready = "1";
});
