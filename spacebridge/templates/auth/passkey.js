// Passkey sign-up and sign-in for /signin (docs/web-accounts.md). No dependencies.
"use strict";
(() => {
  const $ = (id) => document.getElementById(id);
  const csrf = () => document.querySelector('meta[name="csrf-token"]').content;
  const status = (text, error = false) => { const s = $("auth-status"); s.textContent = text; s.classList.toggle("error", error); };

  async function post(path, body) {
    const r = await fetch(path, { method: "POST", headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf() },
                                 body: JSON.stringify(body || {}) });
    const data = await r.json().catch(() => ({ error: { message: `The server answered ${r.status}.` } }));
    if (!r.ok) throw new Error((data.error && data.error.message) || `The server answered ${r.status}.`);
    return data;
  }

  function done(next) { location.assign(next || "/signin"); }

  function failed(err) {
    if (err && err.name === "InvalidStateError") status("This device already has a passkey for this account.", true);
    else if (err && err.name === "NotAllowedError") status("The passkey request was cancelled or timed out. Try again.", true);
    else status((err && err.message) || "Something went wrong. Try again.", true);
  }

  async function register(displayName, next) {
    status("Waiting for your passkey…");
    const options = await post("/api/auth/passkey/register/options", displayName ? { display_name: displayName } : {});
    const cred = await navigator.credentials.create({ publicKey: PublicKeyCredential.parseCreationOptionsFromJSON(options) });
    await post("/api/auth/passkey/register/verify", { credential: cred.toJSON() });
    status("Passkey saved.");
    done(next);
  }

  async function signIn(next) {
    status("Waiting for your passkey…");
    const options = await post("/api/auth/passkey/signin/options");
    const cred = await navigator.credentials.get({ publicKey: PublicKeyCredential.parseRequestOptionsFromJSON(options) });
    const me = await post("/api/auth/passkey/signin/verify", { credential: cred.toJSON() });
    status(`Signed in as ${me.account.display_name}.`);
    done(next);
  }

  if (!window.PublicKeyCredential) { status("This browser does not support passkeys.", true); return; }
  const form = $("signup-form");
  if (form) form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    register($("display-name").value.trim(), form.dataset.next).catch(failed);
  });
  const signin = $("signin-passkey");
  if (signin) signin.addEventListener("click", () => signIn(signin.dataset.next).catch(failed));
  const add = $("add-passkey");
  if (add) add.addEventListener("click", () => register("", add.dataset.next).catch(failed));
})();
