// Starts a join before the room's module loads (docs/architecture.md, "Joins"): a classic script in
// the page's head, so the socket's hello, the database's join commit and the listener's offer run
// while room.js and its imports are still being fetched and parsed (that took ~0.2 s of every join).
// Only a personal link (#t=TOKEN, not yet run out) starts early; room.js adopts what is started here
// (window.__sbBoot) and replays the frames that arrived before it was ready.
"use strict";
// Seconds a join token has left, from its payload (the server checks its signature).
window.sbTokenLeftS = (t) => {
  try { return JSON.parse(atob(t.split(".")[0].replace(/-/g, "+").replace(/_/g, "/"))).e - Date.now() / 1000; } catch { return -1; }
};
(() => {
  const params = new URLSearchParams(location.hash.slice(1));
  const token = params.get("t") || "";
  if (!token || params.get("hls") === "1" || window.sbTokenLeftS(token) < 5 || !window.RTCPeerConnection) return;
  const spaceId = location.pathname.split("/").filter(Boolean).pop();
  const ws = new WebSocket(`${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/ws/${spaceId}`);
  const boot = window.__sbBoot = { token, ws, frames: [], closed: null, pc: null };
  ws.onmessage = (m) => boot.frames.push(m);
  ws.onclose = (ev) => { boot.closed = ev; };
  const send = (msg) => { if (ws.readyState === 1) ws.send(JSON.stringify(msg)); };
  const opened = new Promise((resolve) => { ws.onopen = () => { send({ type: "hello", token }); resolve(true); }; ws.onerror = () => resolve(false); });
  // A listener's offer, as room.js's preparePc makes it; its candidates trickle after it under id m1.
  const pc = new RTCPeerConnection({ iceServers: [] });
  let trickle = [];
  pc.onicecandidate = (ev) => {
    const c = { id: "m1", ...(ev.candidate ? { candidate: ev.candidate.candidate, sdpMid: ev.candidate.sdpMid } : { candidate: null }) };
    if (trickle) trickle.push(c); else if (pc.connectionState !== "closed") send({ type: "candidate", ...c });
  };
  pc.addTransceiver("audio", { direction: "recvonly" });
  // Settles once the offer went out right behind the hello (the server answers it after the welcome),
  // or with null when the socket never opened: room.js then makes its own.
  boot.ready = (async () => {
    await pc.setLocalDescription(await pc.createOffer());
    if (!(await opened) || ws.readyState !== 1) { pc.close(); return null; }
    send({ type: "offer", id: "m1", sdp: pc.localDescription.sdp });
    for (const c of trickle) send({ type: "candidate", ...c });
    trickle = null;
    return (boot.pc = pc);
  })().catch(() => { pc.close(); return null; });
})();
