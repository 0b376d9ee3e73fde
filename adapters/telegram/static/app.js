// Mini App launcher: trade Telegram's signed launch data for a join link, then open the web room.
// Telegram puts the launch parameters in the URL fragment (tgWebAppData), so no script from
// telegram.org is needed to read them.
const $ = (id) => document.getElementById(id);
const hash = new URLSearchParams(location.hash.slice(1));
const initData = hash.get("tgWebAppData") || (window.Telegram && window.Telegram.WebApp && window.Telegram.WebApp.initData) || "";
const spaceId = new URLSearchParams(location.search).get("space") || "";

function fail(message) {
  $("title").textContent = "Can't open the Space";
  $("status").textContent = message;
  const retry = $("retry");
  retry.href = location.href;
  retry.hidden = false;
  $("app").setAttribute("aria-busy", "false");
}

async function open() {
  if (!initData) { fail("Open this page from the bot's Join button in Telegram."); return; }
  let res;
  try {
    res = await fetch("/api/telegram/webapp", {
      method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ init_data: initData, space_id: spaceId }),
    });
  } catch (e) { fail("No connection to the server; check your network and try again."); return; }
  const body = await res.json().catch(() => ({}));
  if (!res.ok) { fail((body.error && body.error.message) || `The server refused (${res.status}).`); return; }
  $("title").textContent = body.title || "Joining…";
  location.replace(body.url);
}

open();
