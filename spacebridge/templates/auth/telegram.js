// Sign in with Telegram for /signin (docs/web-accounts.md): a code the bot confirms, then polling;
// and the Login Widget's callback when the page shows it. No dependencies.
"use strict";
(() => {
  const $ = (id) => document.getElementById(id);
  const csrf = () => document.querySelector('meta[name="csrf-token"]').content;
  const status = (text, error = false) => { const s = $("auth-status"); s.textContent = text; s.classList.toggle("error", error); };
  const box = $("telegram-signin");
  const next = (box && box.dataset.next) || "/signin";

  async function post(path, body) {
    const r = await fetch(path, { method: "POST", headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf() },
                                 body: JSON.stringify(body || {}) });
    const data = await r.json().catch(() => ({ error: { message: `The server answered ${r.status}.` } }));
    if (!r.ok) throw new Error((data.error && data.error.message) || `The server answered ${r.status}.`);
    return data;
  }

  async function waitForBot(deadline) {
    while (Date.now() < deadline) {
      const r = await post("/api/auth/telegram/poll");
      if (r.status !== "pending") { status(`Signed in as ${r.account.display_name}.`); location.assign(next); return; }
      await new Promise((ok) => setTimeout(ok, 2000));
    }
    status("That code has expired. Ask for a new one.", true);
  }

  const start = $("telegram-code");
  if (start) start.addEventListener("click", async () => {
    try {
      const r = await post("/api/auth/telegram/code");
      $("telegram-link").href = r.url;
      $("telegram-command").textContent = `/start login_${r.code}`;
      $("telegram-steps").hidden = false;
      status(`Your code is ${r.code}. Waiting for the Telegram bot to confirm it…`);
      await waitForBot(Date.now() + r.expires_in_s * 1000);
    } catch (err) { status((err && err.message) || "Something went wrong. Try again.", true); }
  });

  window.spacebridgeTelegramWidget = (user) => {
    post("/signin/telegram/widget", user)
      .then((r) => { status(`Signed in as ${r.account.display_name}.`); location.assign(next); })
      .catch((err) => status((err && err.message) || "Something went wrong. Try again.", true));
  };
})();
