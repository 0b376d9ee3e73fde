// Spacebridge pages: local times, the countdown to a scheduled Space, and moving into the room when
// it starts (told over the room's socket). No dependencies; the pages work without it (times are also printed in UTC).
const fmt = new Intl.DateTimeFormat(undefined, { weekday: "short", day: "numeric", month: "short", hour: "2-digit", minute: "2-digit", timeZoneName: "short" });
for (const el of document.querySelectorAll("time[data-local]")) {
  const d = new Date(el.getAttribute("datetime"));
  if (!Number.isNaN(d.getTime())) el.textContent = fmt.format(d);
}

function left(ms) {
  const s = Math.max(0, Math.round(ms / 1000));
  const d = Math.floor(s / 86400), h = Math.floor((s % 86400) / 3600), m = Math.floor((s % 3600) / 60), sec = s % 60;
  if (d) return `${d} d ${h} h ${m} min`;
  if (h) return `${h} h ${m} min`;
  return `${m} min ${String(sec).padStart(2, "0")} s`;
}

// A scheduled Space's page waits on the room's socket (a waiting room, docs/webrtc-protocol.md) and
// moves into the room (its live page) the moment the host starts it; no polling.
function waitForStart(spaceId) {
  let tries = 0;
  const open = async () => {
    let token;
    try {
      const me = await (await fetch("/api/me", { cache: "no-store" })).json();
      const r = await fetch(`/api/spaces/${spaceId}/join-token`, { method: "POST", headers: { "X-CSRF-Token": me.csrf } });
      if (!r.ok) return;  // no access to wait here (unlisted, a ticket to buy, blocked): the page says what to do
      token = (await r.json()).token;
    } catch { setTimeout(open, Math.min(30000, 1000 * 2 ** tries++)); return; }
    const ws = new WebSocket(`${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/ws/${spaceId}`);
    ws.onopen = () => { tries = 0; ws.send(JSON.stringify({ type: "hello", token })); };
    ws.onmessage = (m) => {
      const msg = JSON.parse(m.data);
      const st = msg.type === "event" ? msg.event.type : (msg.space && msg.space.state);
      if (["space.started", "space.cancelled", "space.ended", "live", "ended", "cancelled"].includes(st)) {
        ws.onclose = null; ws.close(1000); location.reload();
      }
    };
    ws.onclose = (ev) => { if (ev.code !== 4001 && ev.code !== 4002) setTimeout(open, Math.min(30000, 1000 * 2 ** tries++)); };
  };
  open();
}

const countdown = document.querySelector("[data-countdown]");
const article = document.querySelector("article[data-space]");
if (countdown && article) {
  const at = new Date(countdown.dataset.countdown).getTime();
  const tick = () => {
    const ms = at - Date.now();
    countdown.textContent = ms > 0 ? `Starts in ${left(ms)}` : "Starting soon: waiting for the host…";
  };
  tick();
  setInterval(tick, 1000);
}
if (article && article.dataset.state === "scheduled") waitForStart(article.dataset.space);

// A personal link (/s/ID#t=TOKEN from a bot or the CLI) opened without signing in: the server never
// sees the token, so it answered with the page for someone it cannot let in (buy a ticket,
// subscribe). The room checks the token itself and says what is wrong if it does not open.
if (article && article.dataset.state === "live" && new URLSearchParams(location.hash.slice(1)).has("t")) {
  location.replace(`${location.pathname}?room=1${location.hash}`);
}
