// Starts a join before the room's module loads (docs/architecture.md, "Joins"): a classic script in
// the page's head, so the join token, the socket's hello, the database's join commit and the
// listener's offer run while room.js and its imports are still being fetched and parsed (that took
// ~0.2 s of every join). room.js adopts what is started here (window.__sbBoot) and replays the
// frames that arrived before it was ready. Not for HLS listening (#hls=1).
"use strict";
// Seconds a join token has left, from its payload (the server checks its signature).
window.sbTokenLeftS = (t) => {
  try { return JSON.parse(atob(t.split(".")[0].replace(/-/g, "+").replace(/_/g, "/"))).e - Date.now() / 1000; } catch { return -1; }
};
// Lasting addresses (docs/web-accounts.md): with no token in the URL, or one that has run out, the page
// mints one from the browser's session (a guest token for a public live Space when nobody is signed in).
window.sbSessionToken = async (spaceId) => {
  const me = await (await fetch("/api/me", { cache: "no-store" })).json();
  const r = await fetch(`/api/spaces/${spaceId}/join-token`, { method: "POST", headers: { "X-CSRF-Token": me.csrf } });
  const body = await r.json().catch(() => ({}));
  if (!r.ok) throw Object.assign(new Error((body.error && body.error.message) || `The server answered ${r.status}.`), { code: body.error && body.error.code });
  return body.token;
};
(() => {
  const params = new URLSearchParams(location.hash.slice(1));
  if (params.get("hls") === "1" || !window.RTCPeerConnection) return;
  const spaceId = location.pathname.split("/").filter(Boolean).pop();
  const boot = window.__sbBoot = { token: params.get("t") || "", minted: false, ws: null, frames: [], closed: null, error: null };
  // A listener's offer, as room.js's preparePc makes it; its candidates trickle after it under id m1.
  const pc = new RTCPeerConnection({ iceServers: [] });
  let trickle = [];
  const send = (msg) => { if (boot.ws && boot.ws.readyState === 1) boot.ws.send(JSON.stringify(msg)); };
  pc.onicecandidate = (ev) => {
    const c = { id: "m1", ...(ev.candidate ? { candidate: ev.candidate.candidate, sdpMid: ev.candidate.sdpMid } : { candidate: null }) };
    if (trickle) trickle.push(c); else if (pc.connectionState !== "closed") send({ type: "candidate", ...c });
  };
  pc.addTransceiver("audio", { direction: "recvonly" });
  const offered = pc.createOffer().then((o) => pc.setLocalDescription(o));
  // Settles with the connection once its offer went out right behind the hello (the server answers it
  // after the welcome); with null when the socket never opened, or with boot.error when no token could
  // be had (room.js says why).
  boot.ready = (async () => {
    if (!boot.token || window.sbTokenLeftS(boot.token) < 5) {
      boot.token = await window.sbSessionToken(spaceId);
      boot.minted = true;
    }
    const ws = boot.ws = new WebSocket(`${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/ws/${spaceId}`);
    ws.onmessage = (m) => boot.frames.push(m);
    ws.onclose = (ev) => { boot.closed = ev; };
    const opened = await new Promise((resolve) => {
      ws.onopen = () => { send({ type: "hello", token: boot.token }); resolve(true); };
      ws.onerror = () => resolve(false);
    });
    await offered;
    if (!opened || ws.readyState !== 1) { pc.close(); return null; }
    send({ type: "offer", id: "m1", sdp: pc.localDescription.sdp });
    for (const c of trickle) send({ type: "candidate", ...c });
    trickle = null;
    return pc;
  })().catch((err) => { boot.error = err; pc.close(); return null; });
})();
