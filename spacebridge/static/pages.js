// Spacebridge pages: local times, the countdown to a scheduled Space, and moving into the room when
// it starts. No dependencies; the pages work without it (times are also printed in UTC).
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

const countdown = document.querySelector("[data-countdown]");
const article = document.querySelector("article[data-space]");
if (countdown && article) {
  const at = new Date(countdown.dataset.countdown).getTime();
  let asking = false;
  const tick = async () => {
    const ms = at - Date.now();
    countdown.textContent = ms > 0 ? `Starts in ${left(ms)}` : "Starting soon: waiting for the host…";
    if (ms <= 0 && !asking) {  // past its time: look every few seconds whether the host has started
      asking = true;
      try {
        const r = await fetch(`/api/spaces/${article.dataset.space}`, { headers: { Accept: "application/json" } });
        if (r.ok && (await r.json()).state !== "scheduled") { location.reload(); return; }
      } catch { /* offline for a moment: try again */ }
      setTimeout(() => { asking = false; }, 5000);
    }
  };
  tick();
  setInterval(tick, 1000);
}
