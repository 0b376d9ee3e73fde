// The Spacebridge web room: signaling over one WebSocket, audio over one RTCPeerConnection.
// Protocol: docs/webrtc-protocol.md. No dependencies, no external resources.

const ERRORS = {
  "token.expired": "This join link has expired. Ask for a new one.",
  "token.bad_signature": "This join link is not genuine. Ask for a new one.",
  "token.malformed": "This join link is damaged or incomplete. Ask for a new one.",
  "token.wrong_space": "This join link is for a different Space.",
  "space.ended": "This Space has ended.",
  "space.not_live": "This Space has not started yet.",
  "space.closed": "This Space is over.",
  "ticket.required": "This Space needs a ticket.",
  "space.blocked": "The host has blocked you from their Spaces.",
  "mic.denied": "Microphone access was denied: you can listen, but others cannot hear you. Allow the microphone and rejoin to speak.",
};
const $ = (id) => document.getElementById(id);
const spaceId = location.pathname.split("/").filter(Boolean).pop();
const hashParams = new URLSearchParams(location.hash.slice(1));
let token = hashParams.get("t") || "";
// Lasting addresses (docs/web-accounts.md): with no token in the URL, or one that has run out, the page
// mints one from the browser's session (a guest token for a public live Space when nobody is signed in).
function tokenLeftS(t) {
  try { return JSON.parse(atob(t.split(".")[0].replace(/-/g, "+").replace(/_/g, "/"))).e - Date.now() / 1000; } catch { return -1; }
}
async function sessionToken() {
  const me = await (await fetch("/api/me", { cache: "no-store" })).json();
  const r = await fetch(`/api/spaces/${spaceId}/join-token`, { method: "POST", headers: { "X-CSRF-Token": me.csrf } });
  const body = await r.json().catch(() => ({}));
  if (!r.ok) throw Object.assign(new Error((body.error && body.error.message) || `The server answered ${r.status}.`), { code: body.error && body.error.code });
  return body.token;
}
const wantHls = hashParams.get("hls") === "1";  // listen over HLS (a big audience, a poor network)

const state = { hls: null, me: null, role: "listener", space: null, names: {}, levels: {}, ws: null, pc: null, mic: null, n: 0, pending: {}, commands: [], drawn: null, retries: 0, left: false, timer: null };
const RANK = { listener: 0, speaker: 1, cohost: 2, host: 3 };
const NEEDS = { anyone: 0, speaker: 1, moderator: 2, host: 3 };

function say(message) { $("status").textContent = message || ""; }
function name(id) { return state.names[id] || (id && id.startsWith("guest") ? "Guest" : id) || ""; }
function onStage() { return ["host", "cohost", "speaker"].includes(state.role); }
// The command table (welcome.commands, core/commands.py): what this person may do in this Space's state.
function spaceState() { const s = state.space && state.space.state; return s === "cancelled" ? "ended" : s; }
function table(name) { return state.commands.find((c) => c.name === name); }
function allowed(c) {
  if (!c || (state.role === "guest" && !c.guest_ok)) return false;
  return (RANK[state.role] ?? 0) >= NEEDS[c.least_role] && c.states.includes(spaceState());
}
function moderator() { return ["host", "cohost"].includes(state.role); }
// A scheduled Space's page waits (no media) and moves into the room when the host starts it; an
// ended one only says so. Media starts once per live stretch, whichever frame showed the state first.
function waiting() {
  const s = spaceState();
  if (s === "live") return false;
  if (s === "scheduled") {
    const at = state.space.scheduled_for ? new Date(state.space.scheduled_for).toLocaleString() : "";
    say(`This Space has not started yet${at ? ` (it is planned for ${at})` : ""}; you will be moved in when it starts.`);
  } else say(state.space.state === "cancelled" ? "This Space was cancelled." : "This Space has ended.");
  return true;
}
async function enter() {
  if (waiting()) {
    if (spaceState() === "ended") teardown(); else if (early) { early.then((pc) => pc.close()); early = null; }
    return;
  }
  if (state.pc || state.hls || state.entered) return;
  state.entered = true; say(""); await startMedia(onStage());
}

function send(msg) { if (state.ws && state.ws.readyState === 1) state.ws.send(JSON.stringify(msg)); }
function command(name, args = {}) {
  const id = `c${++state.n}`;
  send({ type: "command", id, name, args });
  return new Promise((resolve) => { state.pending[id] = resolve; });
}

function render() {
  const s = state.space; if (!s) return;
  document.title = `${s.title} · Spacebridge`;
  $("title").textContent = s.title;
  $("host").textContent = `Hosted by ${s.host_name}`;
  $("count").textContent = `${s.listener_count} listening`;
  const stage = $("stage"); stage.replaceChildren();
  const roles = [[s.host_id, "Host"], ...s.cohosts.map((a) => [a, "Co-host"]), ...s.speakers.map((a) => [a, "Speaker"])];
  for (const [id, role] of roles) {
    const li = document.createElement("li");
    li.dataset.account = id;
    if ((state.levels[id] ?? -90) > -45) li.classList.add("speaking");
    const muted = s.muted.includes(id);
    li.innerHTML = `<div class="avatar" aria-hidden="true"></div><div class="who"></div><div class="role"></div>`;
    li.querySelector(".avatar").textContent = (name(id)[0] || "?").toUpperCase();
    li.querySelector(".who").textContent = name(id);
    li.querySelector(".role").textContent = role + (muted ? " · muted" : "");
    li.setAttribute("aria-label", `${name(id)}, ${role}${muted ? ", muted" : ""}`);
    if (moderator() && id !== state.me && id !== s.host_id) {
      const b = document.createElement("button"); b.type = "button";
      b.textContent = muted ? "Unmute" : "Mute"; b.setAttribute("aria-label", `${muted ? "Unmute" : "Mute"} ${name(id)}`);
      b.onclick = () => command(muted ? "unmute" : "mute", { person: id }).then(show);
      const d = document.createElement("button"); d.type = "button"; d.textContent = "To audience";
      d.setAttribute("aria-label", `Move ${name(id)} to the audience`);
      d.onclick = () => command("demote", { person: id }).then(show);
      li.append(b, d);
    }
    stage.append(li);
  }
  const queue = $("queue"); queue.replaceChildren();
  $("queue-box").hidden = !(s.queue.length && moderator());
  for (const id of s.queue) {
    const li = document.createElement("li"); li.textContent = name(id);
    for (const [label, cmd] of [["Approve", "approve"], ["Deny", "deny"]]) {
      const b = document.createElement("button"); b.type = "button"; b.textContent = label;
      b.setAttribute("aria-label", `${label} ${name(id)}`);
      b.onclick = () => command(cmd, { person: id }).then(show);
      li.append(b);
    }
    queue.append(li);
  }
  const pins = $("pins"); pins.replaceChildren(); $("pins-box").hidden = !s.pins.length;
  for (const p of s.pins) {
    const li = document.createElement("li");
    if (p.url) { const a = document.createElement("a"); a.href = p.url; a.rel = "noopener noreferrer"; a.target = "_blank"; a.textContent = p.title; li.append(a); }
    else li.textContent = p.title;
    pins.append(li);
  }
  $("captions-box").hidden = !s.captions_enabled;
  const hand = $("hand");
  const raised = s.queue.includes(state.me);
  hand.hidden = onStage() || !allowed(table("hand"));
  hand.setAttribute("aria-pressed", String(raised));
  hand.textContent = raised ? "✋ Lower hand" : "✋ Raise hand";
  $("mic").hidden = !onStage() || spaceState() !== "live";
  const mutedMe = s.muted.includes(state.me);
  $("mic").setAttribute("aria-pressed", String(mutedMe));
  $("mic").textContent = mutedMe ? "🎙 Unmute" : "🎙 Mute";
  $("badges").textContent = Object.values(s.badges || {}).join(" · ");
  controls();
  $("app").setAttribute("aria-busy", "false");
}

// The table's buttons for this role and state, redrawn only when either changes (never on "levels").
// hand and share have their own controls on the page; whoever is in the room needs no ticket.
const PAGE_OWN = ["hand", "share", "ticket"];
function offered(c) {
  if (PAGE_OWN.includes(c.name) || (c.name === "accept_invite" && !state.invited)) return false;
  const host = state.space && state.space.host_id === state.me;  // the host neither follows nor steps down
  return !(host && (c.name === "follow" || c.name === "step_down"));
}
function controls() {
  const key = `${state.role}|${spaceState()}|${state.commands.length}|${!!state.invited}`;
  if (key === state.drawn) return;
  state.drawn = key;
  const more = $("plugins"); more.replaceChildren();
  for (const c of state.commands) {
    if (!c.button || !offered(c) || !allowed(c)) continue;
    const b = document.createElement("button"); b.type = "button"; b.dataset.command = c.name;
    b.textContent = c.icon ? `${c.icon} ${c.button}` : c.button; b.title = c.summary;
    b.onclick = () => command(c.name).then(result);
    more.append(b);
  }
}

// The one reaction palette, from the table's react command.
function reactions() {
  const bar = $("reactions"); const react = table("react");
  const palette = (react && react.options[0].choices) || [];
  if (bar.dataset.palette === palette.join("")) return;
  bar.dataset.palette = palette.join(""); bar.replaceChildren();
  for (const e of palette) {
    const b = document.createElement("button"); b.type = "button"; b.textContent = e; b.setAttribute("aria-label", `React ${e}`);
    b.onclick = () => command("react", { emoji: e }).then(show); bar.append(b);
  }
}

// A table command's reply: a plugin's text and maybe a link (a clip, a replay); nothing to say otherwise.
function result(reply) {
  if (!reply || reply.type === "error") { show(reply); return; }
  const r = (reply.result && typeof reply.result === "object") ? reply.result : {};
  const box = $("status"); box.replaceChildren(document.createTextNode(r.text || ""));
  if (r.url) { const a = document.createElement("a"); a.href = r.url; a.target = "_blank"; a.rel = "noopener"; a.textContent = ` ${r.url}`; box.append(a); }
}

// A plugin's notice (e.g. "this Space is being recorded"); a recording notice offers the opt-out at once.
function notice(e) {
  const box = $("notice"); box.replaceChildren(document.createTextNode(e.text)); box.hidden = false;
  if (e.kind === "recording" && onStage() && state.commands.some((c) => c.name === "optout")) {
    const b = document.createElement("button"); b.type = "button"; b.textContent = "Leave my voice out";
    b.onclick = () => command("optout", { out: true }).then((r) => { result(r); box.hidden = true; });
    box.append(" ", b);
  }
}

function show(reply) { if (reply && reply.type === "error") say(reply.message); else say(""); }

function float(emoji) {
  const f = document.createElement("span"); f.className = "floater"; f.textContent = emoji;
  f.style.left = `${10 + Math.random() * 80}%`;
  $("floaters").append(f); setTimeout(() => f.remove(), 2300);
}

function caption(line) {
  const p = document.createElement("p"); const b = document.createElement("b");
  b.textContent = `${name(line.speaker_id)}: `; p.append(b, document.createTextNode(line.text));
  const box = $("captions"); box.append(p); while (box.children.length > 6) box.firstChild.remove();
}

function comment(c) {
  const li = document.createElement("li"); const b = document.createElement("b");
  b.textContent = `${c.display_name || name(c.account_id)}: `; li.append(b, document.createTextNode(c.text));
  const box = $("comments"); box.append(li); while (box.children.length > 50) box.firstChild.remove();
  box.scrollTop = box.scrollHeight;
}

// the whole Space again, over the socket (it answers "space"): works for unlisted Spaces and long stays alike
function refresh() { send({ type: "sync" }); }

function onEvent(e) {
  const s = state.space;
  switch (e.type) {
    case "reaction.sent": float(e.emoji); break;
    case "participant.joined": case "participant.left": s.listener_count = e.listener_count; render(); break;
    case "caption.line": caption(e); break;
    case "comment.posted": comment(e); break;
    case "space.notice": notice(e); break;
    case "participant.away":  // lost their connection; the seat (or the whole Space, for the host) waits
      if (e.role === "host") notice({ text: `${name(e.account_id)} (the host) lost their connection; the Space stays live while they come back.` });
      else if (e.role !== "listener") notice({ text: `${name(e.account_id)} lost their connection; their seat is kept for a while.` });
      break;
    case "participant.back":
      if (e.role !== "listener") notice({ text: `${name(e.account_id)} is back.` });
      break;
    case "space.badge": s.badges = s.badges || {}; if (e.text) s.badges[e.source] = e.text; else delete s.badges[e.source]; render(); break;
    case "space.ended": say("This Space has ended."); teardown(); break;
    case "space.started": s.state = "live"; render(); enter(); refresh(); break;
    default: refresh();
  }
  if (e.type === "role.changed" && e.account_id === state.me) { state.role = e.role === "host" ? "host" : e.role; state.invited = false; }
  if (e.type === "speaker.invited" && e.account_id === state.me) state.invited = true;  // the space frame that follows redraws
}

// ---- HLS listening: the room's own encode as fMP4 segments, played with Media Source Extensions ----
function parsePlaylist(text) {
  const out = { seq: 0, target: 1, map: null, segs: [], ended: false };
  for (const line of text.split("\n").map((l) => l.trim())) {
    if (line.startsWith("#EXT-X-MEDIA-SEQUENCE:")) out.seq = parseInt(line.split(":")[1], 10);
    else if (line.startsWith("#EXT-X-TARGETDURATION:")) out.target = parseFloat(line.split(":")[1]);
    else if (line.startsWith("#EXT-X-MAP:")) out.map = (line.match(/URI="([^"]+)"/) || [])[1];
    else if (line === "#EXT-X-ENDLIST") out.ended = true;
    else if (line && !line.startsWith("#")) out.segs.push(line);
  }
  return out;
}

function stopHls() {
  if (!state.hls) return;
  state.hls.stop = true; state.hls = null;
  const audio = $("audio"); audio.removeAttribute("src"); audio.load();
}

async function startHls(url, ttl) {
  if (state.pc) state.pc.close(); state.pc = null;
  stopHls();
  const me = { stop: false }; state.hls = me;
  const audio = $("audio"); audio.srcObject = null;
  const type = 'audio/mp4; codecs="opus"';
  if (!window.MediaSource || !MediaSource.isTypeSupported(type)) {
    if (audio.canPlayType("application/vnd.apple.mpegurl")) { audio.src = url; audio.play().catch(() => say("Press any button to start the audio.")); return; }
    say("This browser cannot play this Space's audio."); return;
  }
  const ms = new MediaSource(); audio.src = URL.createObjectURL(ms);
  await new Promise((resolve) => ms.addEventListener("sourceopen", resolve, { once: true }));
  const sb = ms.addSourceBuffer(type); sb.mode = "sequence";  // segments play back to back, across a failover too
  const append = (buf) => new Promise((resolve, reject) => {
    sb.addEventListener("updateend", resolve, { once: true }); sb.addEventListener("error", reject, { once: true }); sb.appendBuffer(buf);
  });
  const get = async (u) => { const r = await fetch(u, { cache: "no-store" }); if (!r.ok) throw new Error(`${r.status}`); return r; };
  // the URL carries this person's short-lived token: a fresh one is asked for over the socket at half its life
  // (or at once when refused) and swapped in without stopping the audio ("hls" frame with reason "renewed")
  me.base = new URL(url, location.href); me.renewAt = Date.now() + (ttl || 60) * 500;
  let next = -1; let init = null; let wait = 1000;
  while (!me.stop) {
    if (Date.now() >= me.renewAt) { me.renewAt = Date.now() + 5000; me.asked = Date.now(); send({ type: "hls", renew: true }); }
    const base = me.base;
    try {
      const pl = parsePlaylist(await (await get(base)).text());
      wait = pl.target * 500;
      if (next < 0) next = Math.max(pl.seq, pl.seq + pl.segs.length - 2);  // start two segments behind the live edge
      if (next < pl.seq) next = pl.seq;  // fell behind the window: skip ahead
      for (let i = next - pl.seq; i < pl.segs.length && !me.stop; i++) {
        const map = pl.map && pl.map.split("?")[0];  // the same init segment under a renewed token is not appended again
        if (map && map !== init) { await append(await (await get(new URL(pl.map, base))).arrayBuffer()); init = map; }
        await append(await (await get(new URL(pl.segs[i], base))).arrayBuffer());
        next = pl.seq + i + 1;
      }
      if (audio.paused) audio.play().catch(() => say("Press any button to start the audio."));
      if (sb.buffered.length && audio.currentTime - sb.buffered.start(0) > 30 && !sb.updating) {
        sb.remove(0, audio.currentTime - 10); await new Promise((resolve) => sb.addEventListener("updateend", resolve, { once: true }));
      }
      if (pl.ended) break;
    } catch (err) { wait = 1000; if (err.message === "403" && Date.now() - (me.asked || 0) > 3000) me.renewAt = 0; }  // not written yet, a segment rolled off, or the token ran out: try again
    await new Promise((resolve) => setTimeout(resolve, wait));
  }
}

// A peer connection with its offer made. Its ICE candidates are trickled: the offer goes out at
// once with what was gathered so far, the rest follow as "candidate" messages (waiting for gathering
// to complete cost ~100 ms of every join).
async function preparePc(publish) {
  const pc = new RTCPeerConnection({ iceServers: window.SPACEBRIDGE_ICE || [] });
  pc.trickle = [];  // candidates found before the offer was sent; null once sent
  pc.onicecandidate = (ev) => {
    const c = ev.candidate ? { candidate: ev.candidate.candidate, sdpMid: ev.candidate.sdpMid } : { candidate: null };
    if (pc.trickle) pc.trickle.push(c); else if (pc === state.pc) send({ type: "candidate", id: state.offer, ...c });
  };
  // The media process can go away (a restart, a failover): offer again; the server routes the new
  // offer to whichever process serves the Space now.
  pc.onconnectionstatechange = () => {
    if (pc === state.pc && pc.connectionState === "failed" && state.ws && state.ws.readyState === 1) startMedia(onStage());
  };
  pc.ontrack = (ev) => { $("audio").srcObject = ev.streams[0] || new MediaStream([ev.track]); $("audio").play().catch(() => say("Press any button to start the audio.")); };
  if (publish) {
    try {
      state.mic = state.mic || await navigator.mediaDevices.getUserMedia({ audio: { echoCancellation: true, noiseSuppression: true } });
      for (const t of state.mic.getAudioTracks()) pc.addTrack(t, state.mic);
    } catch (err) { say(ERRORS["mic.denied"]); pc.addTransceiver("audio", { direction: "recvonly" }); }
  } else {
    pc.addTransceiver("audio", { direction: "recvonly" });
  }
  await pc.setLocalDescription(await pc.createOffer());
  return pc;
}

// Most people join to listen: their offer is made while the socket connects and says hello, so it
// can go out the moment the welcome arrives (join-to-audio is what people notice).
let early = token && !wantHls ? preparePc(false) : null;

async function startMedia(publish) {
  stopHls();
  if (!publish && wantHls) { send({ type: "hls" }); return; }
  const gen = state.gen = (state.gen || 0) + 1;
  let pending = null;
  if (!publish && early) { pending = early; early = null; } else pending = preparePc(publish);
  if (early) { early.then((unused) => unused.close()); early = null; }  // on stage: the listener's offer is not needed
  const pc = await pending;
  if (gen !== state.gen) { pc.close(); return; }  // a newer start (a role change) came meanwhile
  if (state.pc) state.pc.close();
  state.pc = pc; state.offer = `m${gen}`;
  send({ type: "offer", id: state.offer, sdp: pc.localDescription.sdp });
  for (const c of pc.trickle) send({ type: "candidate", id: state.offer, ...c });
  pc.trickle = null;
}

function teardown() {
  state.gen = (state.gen || 0) + 1;  // a start still preparing is dropped
  stopHls();
  if (early) { early.then((pc) => pc.close()); early = null; }
  if (state.pc) state.pc.close(); state.pc = null;
  if (state.mic) state.mic.getTracks().forEach((t) => t.stop()); state.mic = null;
  for (const id of ["hand", "mic", "leave"]) $(id).disabled = true;
}

async function connect() {
  if (!token || tokenLeftS(token) < 5) {
    try { token = await sessionToken(); state.mintedAt = Date.now(); }
    catch (err) { say(ERRORS[err.code] || err.message); return; }
  }
  const ws = new WebSocket(`${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/ws/${spaceId}`);
  state.ws = ws;
  ws.onopen = () => { state.retries = 0; send({ type: "hello", token }); };
  ws.onmessage = async (m) => {
    const msg = JSON.parse(m.data);
    if (msg.id && state.pending[msg.id]) { state.pending[msg.id](msg); delete state.pending[msg.id]; }
    switch (msg.type) {
      case "welcome":
        state.me = msg.you.account_id; state.role = msg.you.role; state.space = msg.space; state.commands = msg.commands || []; state.drawn = null; reactions();
        state.invited = (msg.space.invited || []).includes(state.me);  // a reload keeps a pending invitation
        Object.assign(state.names, msg.space.names || {}); say("");
        $("captions").replaceChildren(); $("comments").replaceChildren();  // a reconnect sends them again
        for (const line of msg.captions || []) caption(line);
        for (const c of msg.comments || []) comment(c);
        $("comment-form").hidden = state.role === "guest";
        render(); state.entered = false; await enter(); break;
      case "answer":  // only the answer to our latest offer (we may have offered again meanwhile)
        if (state.pc && msg.id === state.offer) await state.pc.setRemoteDescription({ type: "answer", sdp: msg.sdp }).catch(() => startMedia(onStage()));
        break;
      case "renegotiate": state.role = msg.role; await startMedia(msg.publish); refresh(); break;
      case "reconnect_media": if (!state.hls) await startMedia(onStage()); break;
      case "hls":
        if (msg.reason === "renewed") { if (state.hls) { state.hls.base = new URL(msg.url, location.href); state.hls.renewAt = Date.now() + (msg.expires_in_s || 60) * 500; } break; }
        await startHls(msg.url, msg.expires_in_s); break;
      case "space": state.space = msg.space; Object.assign(state.names, msg.space.names || {}); state.invited = (msg.space.invited || []).includes(state.me); render(); enter(); break;
      case "event": onEvent(msg.event); break;
      case "levels": state.levels = msg.levels; render(); break;
      case "error":
        if (msg.code === "candidate.invalid") { console.warn("ICE candidate refused:", msg.message); break; }  // others still work
        if (msg.code === "media.unavailable" && (!msg.id || msg.id === state.offer)) { setTimeout(() => startMedia(onStage()), 1000); break; }
        // a token the server says ran out (or is not genuine): mint one from the session once, then reconnect
        if (!msg.id && (msg.code || "").startsWith("token.") && Date.now() - (state.mintedAt || 0) > 10000) { token = ""; state.renewToken = true; break; }
        if (!msg.id || msg.id === state.offer) say(ERRORS[msg.code] || msg.message);
        break;
    }
  };
  ws.onclose = (ev) => {
    if (ws !== state.ws) return;
    if (state.renewToken) { state.renewToken = false; connect(); return; }
    if (ev.code === 4000) { say("This Space has ended."); teardown(); return; }
    // 4001/4002: refused (its error frame said why). 1000: we left. Anything else is the network or a
    // server going away: come back, with growing pauses, as long as the page is open.
    if (state.left || ev.code === 4001 || ev.code === 4002 || ev.code === 1000) { if (!$("status").textContent) say("Disconnected."); teardown(); return; }
    // 1012 service restart, 1001 going away, 1006 dropped, 1011 server error, 1013 too slow (try again
    // later), 1009 a frame too big: the Space goes on, so come back (jittered, so a restarted server
    // is not hit by every page in the same instant)
    if (state.pc) state.pc.close(); state.pc = null;
    const wait = Math.min(10000, 500 * 2 ** state.retries++) * (0.5 + Math.random());
    say(ev.code === 1012 ? "The server is restarting; reconnecting…" : `Connection lost; reconnecting in ${Math.round(wait / 1000) || 1} s…`);
    clearTimeout(state.timer); state.timer = setTimeout(connect, wait);
  };
}

function setup() {
  $("hand").onclick = () => command("hand").then(show);  // the table's one raise/lower toggle
  $("mic").onclick = () => command(state.space.muted.includes(state.me) ? "unmute" : "mute").then(show);
  $("share").onclick = async () => {
    const url = `${location.origin}${location.pathname}`;
    try { if (navigator.share) await navigator.share({ title: state.space?.title, url }); else { await navigator.clipboard.writeText(url); say("Link copied."); } }
    catch { say(url); }
  };
  $("comment-form").onsubmit = (ev) => {
    ev.preventDefault();
    const input = $("comment-text"); const text = input.value.trim(); if (!text) return;
    command("comment", { text }).then((r) => { show(r); if (r.type === "ok") input.value = ""; });
  };
  // Leave is an explicit act (a host's Space ends or passes to a co-host); closing the tab is only a
  // disconnect, and the seat waits for a while. The server answers "leave" by closing with 1000.
  $("leave").onclick = () => {
    state.left = true; clearTimeout(state.timer);
    const ws = state.ws; send({ type: "leave" });
    if (ws) setTimeout(() => ws.close(1000), 2000);
    teardown(); say("You left the Space.");
  };
  connect();
}
setup();
