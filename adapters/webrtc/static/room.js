// The Spacebridge web room: signaling over one WebSocket, audio over one RTCPeerConnection.
// Protocol: docs/webrtc-protocol.md. No dependencies, no external resources.

import { keyed, setText, setAttr, buttons, ask, floatUp, appendLine } from "./room_dom.js";
import { playHls } from "./room_hls.js";
import { ERRORS } from "./room_words.js";

const $ = (id) => document.getElementById(id);
const spaceId = location.pathname.split("/").filter(Boolean).pop();
const hashParams = new URLSearchParams(location.hash.slice(1));
let token = hashParams.get("t") || "";
const tokenLeftS = window.sbTokenLeftS, sessionToken = () => window.sbSessionToken(spaceId);  // room_boot.js
const boot = window.__sbBoot;  // room_boot.js: the first socket and listener offer, started before this module
const wantHls = hashParams.get("hls") === "1";  // listen over HLS (a big audience, a poor network)

const state = { hls: null, me: null, role: "listener", space: null, names: {}, levels: {}, ws: null, pc: null, mic: null, n: 0, pending: {}, commands: [], retries: 0, left: false, timer: null, away: {}, seen: {} };
const RANK = { listener: 0, speaker: 1, cohost: 2, host: 3 };
const NEEDS = { anyone: 0, speaker: 1, moderator: 2, host: 3 };

// Errors in red, information ("Link copied.", "You left") in blue: the status line says which it is.
function say(message, kind = "error") { const s = $("status"); s.textContent = message || ""; s.className = message ? kind : ""; }
function info(message) { say(message, "info"); }
function name(id) { return state.names[id] || (id && id.startsWith("guest") ? "Guest" : id) || ""; }
function onStage() { return ["host", "cohost", "speaker"].includes(state.role); }
// The command table (welcome.commands, core/commands.py): what this person may do in this Space's state.
function spaceState() { const s = state.space && state.space.state; return s === "cancelled" ? "ended" : s; }
function table(name) { return state.commands.find((c) => c.name === name); }
function allowed(c) {
  if (!c || (state.role === "guest" && !c.guest_ok)) return false;
  return (RANK[state.role] ?? 0) >= NEEDS[c.least_role] && c.states.includes(spaceState());
}
function can(name) { return allowed(table(name)); }
function moderator() { return ["host", "cohost"].includes(state.role); }
function isHost() { return state.space && state.space.host_id === state.me; }
// A scheduled Space's page waits (no media) and moves into the room when the host starts it; an
// ended one only says so. Media starts once per live stretch, whichever frame showed the state first.
function waiting() {
  const s = spaceState();
  if (s === "live") return false;
  if (s === "scheduled") {
    const at = state.space.scheduled_for ? new Date(state.space.scheduled_for).toLocaleString() : "";
    info(`This Space has not started yet${at ? ` (it is planned for ${at})` : ""}; you will be moved in when it starts.`);
  } else info(state.space.state === "cancelled" ? "This Space was cancelled." : "This Space has ended.");
  return true;
}
async function enter() {
  if (waiting()) {  // an offer made before the welcome was refused (not live): none stays
    state.booted = false;
    if (spaceState() === "ended") teardown(); else if (early) { early.then((pc) => pc.close()); early = null; }
    if (state.pc) state.pc.close(); state.pc = null;
    return;
  }
  if (state.booted) { state.booted = false; state.entered = true; if (!onStage()) return; return startMedia(true); }
  if (state.pc || state.hls || state.entered) return;
  state.entered = true; say(""); await startMedia(onStage());
}

function send(msg) { if (state.ws && state.ws.readyState === 1) state.ws.send(JSON.stringify(msg)); }
function command(name, args = {}) {
  const id = `c${++state.n}`;
  send({ type: "command", id, name, args });
  return new Promise((resolve) => { state.pending[id] = resolve; });
}

async function run(cmd, args = {}, confirm = null) {
  if (confirm) {
    if (!await ask($, confirm)) return null;
    if (confirm.block && $("confirm-block").checked) args = { ...args, block: true };
  }
  const reply = await command(cmd, args); result(reply); return reply;
}

// What a moderator can do to one person, where they are (stage, queue, audience).
function personActs(id, where) {
  const s = state.space; const who = name(id); const acts = [];
  if (!moderator() || id === state.me || id === s.host_id) return acts;
  const act = (key, label, aria, cmd, args = {}, extra = {}) => {
    if (can(cmd)) acts.push({ key, label, aria, run: () => run(cmd, { person: id, ...args }, extra.confirm), danger: extra.danger });
  };
  const cohost = s.cohosts.includes(id);
  if (where === "queue") { act("approve", "Approve", `Approve ${who}`, "approve"); act("deny", "Deny", `Deny ${who}`, "deny"); }
  if (where === "stage") {
    const muted = s.muted.includes(id);
    act("mute", muted ? "Unmute" : "Mute", `${muted ? "Unmute" : "Mute"} ${who}`, muted ? "unmute" : "mute");
    if (isHost() && !cohost) act("cohost", "Make co-host", `Make ${who} a co-host`, "promote", { role: "cohost" });
    if (!cohost || isHost()) act("demote", "To audience", `Move ${who} to the audience`, "demote");
  }
  if (where === "audience") {
    if (!s.invited.includes(id)) act("invite", "Invite to speak", `Invite ${who} to speak`, "invite");
    act("promote", "Make speaker", `Make ${who} a speaker`, "promote", { role: "speaker" });
  }
  if (!cohost || isHost()) {
    act("remove", "Remove", `Remove ${who}`, "remove", {}, { danger: true, confirm: { text: `Remove ${who} from this Space?`, block: true, yes: "Remove" } });
  }
  return acts;
}

function render() {
  const s = state.space; if (!s) return;
  document.title = `${s.title} · Spacebridge`;
  setText($("title"), s.title);
  setText($("host"), `Hosted by ${s.host_name}`);
  setText($("count"), `${s.listener_count} listening`);
  const roles = [[s.host_id, "Host"], ...s.cohosts.map((a) => [a, "Co-host"]), ...s.speakers.map((a) => [a, "Speaker"])];
  const roleOf = Object.fromEntries(roles);
  keyed($("stage"), roles.map(([id]) => id), () => {
    const li = document.createElement("li");
    li.innerHTML = `<div class="avatar" aria-hidden="true"></div><div class="who"></div><div class="role"></div><div class="acts"></div>`;
    return li;
  }, (li, id) => {
    const muted = s.muted.includes(id); const away = id in state.away;
    const role = roleOf[id] + (muted ? " · muted" : "") + (away ? " · away" : "") + (subscriber(id) ? " · subscriber" : "");
    setText(li.querySelector(".avatar"), (name(id)[0] || "?").toUpperCase());
    setText(li.querySelector(".who"), name(id));
    setText(li.querySelector(".role"), role);
    setAttr(li, "aria-label", `${name(id)}, ${role.replace(/ · /g, ", ")}`);
    li.classList.toggle("away", away);
    buttons(li.querySelector(".acts"), personActs(id, "stage"));
  });
  paintLevels();
  const row = (id, where) => (li) => {
    setText(li.querySelector(".who"), name(id) + (subscriber(id) ? " · subscriber" : ""));
    buttons(li.querySelector(".acts"), personActs(id, where));
  };
  const person = () => { const li = document.createElement("li"); li.innerHTML = `<span class="who"></span><span class="acts"></span>`; return li; };
  $("queue-box").hidden = !(s.queue.length && moderator());
  keyed($("queue"), moderator() ? s.queue : [], person, (li, id) => row(id, "queue")(li));
  const onstage = new Set([...Object.keys(roleOf), ...s.queue, state.me]);
  const audience = moderator() ? Object.keys(state.seen).filter((id) => !onstage.has(id)) : [];
  $("audience-box").hidden = !audience.length;
  keyed($("audience"), audience, person, (li, id) => row(id, "audience")(li));
  $("pins-box").hidden = !s.pins.length;
  keyed($("pins"), s.pins.map((p) => p.id), () => {
    const li = document.createElement("li"); li.innerHTML = `<span class="what"></span><span class="acts"></span>`; return li;
  }, (li, pid) => {
    const p = s.pins.find((x) => x.id === pid); const what = li.querySelector(".what");
    if (what.dataset.drawn !== `${p.title}|${p.url}`) {
      what.dataset.drawn = `${p.title}|${p.url}`; what.replaceChildren();
      if (p.url) { const a = document.createElement("a"); a.href = p.url; a.rel = "noopener noreferrer"; a.target = "_blank"; a.textContent = p.title; what.append(a); }
      else what.textContent = p.title;
    }
    buttons(li.querySelector(".acts"), can("unpin") ? [{ key: "unpin", label: "Unpin", aria: `Unpin ${p.title}`, run: () => run("unpin", { pin_id: pid }) }] : []);
  });
  $("captions-box").hidden = !s.captions_enabled;
  const hand = $("hand"); const raised = s.queue.includes(state.me);
  hand.hidden = onStage() || !can("hand");
  setAttr(hand, "aria-pressed", String(raised));
  setText(hand, raised ? "✋ Lower hand" : "✋ Raise hand");
  const mutedMe = s.muted.includes(state.me);
  $("mic").hidden = !onStage() || spaceState() !== "live";
  setAttr($("mic"), "aria-pressed", String(mutedMe));
  setText($("mic"), mutedMe ? "🎙 Unmute" : "🎙 Mute");
  $("end").hidden = !can("end") || state.left;
  $("comment-form").hidden = !can("comment");
  $("reactions").hidden = !can("react");
  $("signin").hidden = state.role !== "guest";
  setText($("badges"), Object.values(s.badges || {}).join(" · "));
  presence();
  tools();
  $("app").setAttribute("aria-busy", "false");
}

// Audio levels (five a second; each the loudest of the last ~0.8 s, so the ring holds through a pause
// between words and clears soon after silence) touch only the speaking class.
function paintLevels() {
  for (const li of $("stage").children) li.classList.toggle("speaking", (state.levels[li.dataset.key] ?? -90) > -45);
}

// The host's absence (a lost connection: the Space waits for them) and return, shown until they are back.
function presence() {
  const s = state.space; const box = $("presence"); const until = state.away[s.host_id];
  box.hidden = !until || s.host_id === state.me;
  if (until) {
    const at = new Date(until);
    setText(box, `${name(s.host_id)} (the host) is away; the Space stays live${Number.isNaN(at.getTime()) ? "" : ` until ${at.toLocaleTimeString()}`} while they come back.`);
  }
}

// The room's tools from the table, for this role and this state, only those that apply now.
const OWN = ["hand", "share", "ticket", "end", "react", "comment", "link", "unfollow", "refund", "cancel", "reschedule"];
function tools() {
  const s = state.space; const rec = !!(s.badges && s.badges.recording); const acts = [];
  const add = (cmd, label, args = {}, extra = {}) => {
    if (can(cmd)) acts.push({ key: extra.key || cmd, label, run: extra.run || (() => run(cmd, args, extra.confirm)), pressed: extra.pressed });
  };
  if (state.invited && !onStage()) add("accept_invite", "🎤 Accept invitation");
  add("start", "▶️ Start");
  if (!isHost()) add("step_down", "⬇️ Step down");
  add("pin", "📌 Pin", {}, { run: () => { $("pin-form").hidden = false; $("pin-title").focus(); } });
  add("captions", "💬 Captions", { enabled: !s.captions_enabled }, { pressed: !!s.captions_enabled });
  add("record", rec ? "⏹ Stop recording" : "⏺ Record", { action: rec ? "stop" : "start" });
  if (rec) add("clip", "✂️ Clip 30 s");
  if (onStage()) add("optout", "🙊 Leave my voice out");
  add("recordings", "📼 Recordings");
  if (s.cohosts.length + s.speakers.length > 0) add("mute_all", "🔇 Mute all");
  if (s.queue.length) add("clear_queue", "🧹 Clear hands");
  if (s.subscriber_priority || s.queue.some(subscriber)) add("subscriber_priority", "⭐ Subscribers first", { on: !s.subscriber_priority }, { pressed: !!s.subscriber_priority });
  if (!isHost()) add("follow", `➕ Follow ${s.host_name}`);
  add("remind", "⏰ Remind me");
  const known = new Set([...OWN, ...acts.map((a) => a.key), "accept_invite", "start", "step_down", "pin", "unpin", "captions", "record", "clip", "optout",
    "recordings", "mute_all", "clear_queue", "follow", "remind", "approve", "deny", "invite", "promote", "demote", "mute", "unmute", "remove", "subscriber_priority"]);
  for (const c of state.commands) {  // a plugin's own buttons, drawn as the table labels them
    if (!known.has(c.name) && c.button && allowed(c)) add(c.name, c.icon ? `${c.icon} ${c.button}` : c.button);
  }
  buttons($("tools"), acts);
  $("tools-box").hidden = !acts.length;
  if (!can("pin")) $("pin-form").hidden = true;
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

// A table command's reply: an error in red; a plugin's text and maybe a link (a clip, a replay) as information.
function result(reply) {
  if (!reply || reply.type === "error") { show(reply); return; }
  const r = (reply.result && typeof reply.result === "object") ? reply.result : {};
  info(r.text || "");
  if (r.url) { const a = document.createElement("a"); a.href = r.url; a.target = "_blank"; a.rel = "noopener"; a.textContent = ` ${r.url}`; $("status").append(a); }
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

function caption(line) { appendLine($("captions"), "p", name(line.speaker_id), line.text, 6); }

function comment(c) {
  const box = $("comments"); appendLine(box, "li", c.display_name || name(c.account_id), c.text, 50);
  box.scrollTop = box.scrollHeight;
  if (c.account_id && c.display_name) state.names[c.account_id] = state.names[c.account_id] || c.display_name;
  if (c.account_id) state.seen[c.account_id] = true;
}

// the whole Space again, over the socket (it answers "space"): works for unlisted Spaces and long stays alike
function refresh() { send({ type: "sync" }); }

// The host's paying subscribers among the people shown (space.subscribers), badged on every list.
function subscriber(id) { return (state.space.subscribers || []).includes(id); }

function fromSnapshot(s) {  // who is away / here as the server knows it: a late joiner saw no events
  if (s.away) state.away = { ...s.away };  // id -> ISO time the grace ends, like participant.away's until
  if (Array.isArray(s.present)) state.seen = Object.fromEntries(s.present.map((id) => [id, true]));
}

function onEvent(e) {
  const s = state.space;
  switch (e.type) {
    case "reaction.sent": floatUp($("floaters"), e.emoji); break;
    case "participant.joined": case "participant.left":
      s.listener_count = e.listener_count;
      if (e.type === "participant.joined" && e.account_id) state.seen[e.account_id] = true;
      if (e.type === "participant.left" && e.reason !== "disconnected") delete state.seen[e.account_id];
      render(); break;
    case "caption.line": caption(e); break;
    case "comment.posted": comment(e); render(); break;
    case "space.notice": notice(e); break;
    case "participant.away":  // lost their connection; the seat (or the whole Space, for the host) waits
      if (e.role !== "listener") state.away[e.account_id] = e.until || true;
      if (e.role !== "listener" && e.role !== "host") notice({ text: `${name(e.account_id)} lost their connection; their seat is kept for a while.` });
      render(); break;
    case "participant.back":
      if (e.role !== "listener" && e.account_id in state.away) {
        delete state.away[e.account_id];
        notice({ text: e.role === "host" ? `${name(e.account_id)} (the host) is back.` : `${name(e.account_id)} is back.` });
      }
      render(); break;
    case "space.badge": s.badges = s.badges || {}; if (e.text) s.badges[e.source] = e.text; else delete s.badges[e.source]; render(); break;
    case "space.ended": info("This Space has ended."); s.state = "ended"; teardown(); render(); break;
    case "space.started": s.state = "live"; render(); enter(); refresh(); break;
    default: refresh();
  }
  if (e.type === "role.changed" && e.account_id === state.me) { state.role = e.role === "host" ? "host" : e.role; state.invited = false; }
  if (e.type === "speaker.invited" && e.account_id === state.me) state.invited = true;  // the space frame that follows redraws
}

// ---- HLS listening (room_hls.js) ----
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
  await playHls(audio, url, ttl, me, send, say);
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
  pc.ontrack = (ev) => { if (pc === state.pc) listen(pc); };
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

// The <audio> element plays the connection's incoming track from the moment its offer goes out, not
// from the answer: its output is already running when the first packet lands (the server sends it the
// moment SRTP is ready). Bound once per connection; ontrack only rebinds if the track changed.
function listen(pc) {
  const el = $("audio");
  const tracks = pc.getReceivers().map((r) => r.track).filter((t) => t && t.kind === "audio");
  if (!tracks.length || (el.srcObject && tracks.every((t) => el.srcObject.getTracks().includes(t)))) return;
  el.srcObject = new MediaStream(tracks); el.play().catch(() => say("Press any button to start the audio."));
}

// Most people join to listen: their offer is made while the socket connects and says hello, so it
// can go out the moment the welcome arrives (join-to-audio is what people notice).
let early = token && !wantHls && !boot ? preparePc(false) : null;

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
  listen(pc);
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
  for (const id of ["hand", "mic", "leave", "end"]) $(id).disabled = true;
}

// The boot script's listener connection becomes the room's first (its offer went out as m1).
function adopt(pc) {
  state.pc = pc; state.gen = 1; state.offer = "m1"; state.booted = true;
  pc.onconnectionstatechange = () => { if (pc === state.pc && pc.connectionState === "failed" && state.ws && state.ws.readyState === 1) startMedia(onStage()); };
  pc.ontrack = () => { if (pc === state.pc) listen(pc); };
  listen(pc);
}

async function connect() {
  const first = boot && !state.used ? boot : null;
  state.used = true;
  if (first) {
    const pc = await first.ready;
    if (first.error) { say(ERRORS[first.error.code] || first.error.message); return; }
    token = first.token; if (first.minted) state.mintedAt = Date.now();
    if (pc && pc.connectionState !== "closed") adopt(pc);
  } else if (!token || tokenLeftS(token) < 5) {
    try { token = await sessionToken(); state.mintedAt = Date.now(); }
    catch (err) { say(ERRORS[err.code] || err.message); return; }
  }
  const ws = first ? first.ws : new WebSocket(`${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/ws/${spaceId}`);
  state.ws = ws;
  if (!first) ws.onopen = () => { state.retries = 0; send({ type: "hello", token }); };
  ws.onmessage = async (m) => {
    const msg = JSON.parse(m.data);
    if (msg.id && state.pending[msg.id]) { state.pending[msg.id](msg); delete state.pending[msg.id]; }
    switch (msg.type) {
      case "welcome":
        state.me = msg.you.account_id; state.role = msg.you.role; state.space = msg.space; fromSnapshot(msg.space); state.commands = msg.commands || []; reactions();
        state.invited = (msg.space.invited || []).includes(state.me);  // a reload keeps a pending invitation
        Object.assign(state.names, msg.space.names || {}); say("");
        $("captions").replaceChildren(); $("comments").replaceChildren();  // a reconnect sends them again
        for (const line of msg.captions || []) caption(line);
        for (const c of msg.comments || []) comment(c);
        render(); state.entered = false; await enter(); break;
      case "answer":  // only the answer to our latest offer (we may have offered again meanwhile)
        if (state.pc && msg.id === state.offer) await state.pc.setRemoteDescription({ type: "answer", sdp: msg.sdp }).catch(() => startMedia(onStage()));
        break;
      case "renegotiate": state.role = msg.role; await startMedia(msg.publish); refresh(); break;
      case "reconnect_media": if (!state.hls) await startMedia(onStage()); break;
      case "hls":
        if (msg.reason === "renewed") { if (state.hls) { state.hls.base = new URL(msg.url, location.href); state.hls.renewAt = Date.now() + (msg.expires_in_s || 60) * 500; } break; }
        await startHls(msg.url, msg.expires_in_s); break;
      case "space": state.space = msg.space; fromSnapshot(msg.space); Object.assign(state.names, msg.space.names || {}); state.invited = (msg.space.invited || []).includes(state.me); render(); enter(); break;
      case "event": onEvent(msg.event); break;
      case "levels": state.levels = msg.levels; paintLevels(); break;  // never a redraw: clicks and focus stay
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
    state.levels = {}; paintLevels();  // no more levels come on this socket: nobody is shown speaking
    state.booted = false;  // an offer made on this socket is gone with it
    if (state.renewToken) { state.renewToken = false; if (state.pc) state.pc.close(); state.pc = null; connect(); return; }
    if (ev.code === 4000) { info("This Space has ended."); teardown(); return; }
    if (state.left) return;  // the Leave button said what happened and offers Rejoin
    // 4001/4002: refused (its error frame said why). 1000: we left. Anything else is the network or a
    // server going away: come back, with growing pauses, as long as the page is open.
    if (ev.code === 4001 || ev.code === 4002 || ev.code === 1000) { if (!$("status").textContent) say("Disconnected."); teardown(); return; }
    // 1012 service restart, 1001 going away, 1006 dropped, 1011 server error, 1013 too slow (try again
    // later), 1009 a frame too big: the Space goes on, so come back (jittered, so a restarted server
    // is not hit by every page in the same instant)
    if (state.pc) state.pc.close(); state.pc = null;
    const wait = Math.min(10000, 500 * 2 ** state.retries++) * (0.5 + Math.random());
    info(ev.code === 1012 ? "The server is restarting; reconnecting…" : `Connection lost; reconnecting in ${Math.round(wait / 1000) || 1} s…`);
    clearTimeout(state.timer); state.timer = setTimeout(connect, wait);
  };
  if (first) { for (const m of first.frames.splice(0)) ws.onmessage(m); if (first.closed) ws.onclose(first.closed); }
}

function setup() {
  $("signin-link").href = `/signin?next=/s/${encodeURIComponent(spaceId)}`;
  $("hand").onclick = () => command("hand").then(show);  // the table's one raise/lower toggle
  $("mic").onclick = () => command(state.space.muted.includes(state.me) ? "unmute" : "mute").then(show);
  $("share").onclick = async () => {
    const url = `${location.origin}${location.pathname}`;
    try { if (navigator.share) await navigator.share({ title: state.space?.title, url }); else { await navigator.clipboard.writeText(url); info("Link copied."); } }
    catch { info(url); }
  };
  $("comment-form").onsubmit = (ev) => {
    ev.preventDefault();
    const input = $("comment-text"); const text = input.value.trim(); if (!text) return;
    command("comment", { text }).then((r) => { show(r); if (r.type === "ok") input.value = ""; });
  };
  $("pin-form").onsubmit = async (ev) => {
    ev.preventDefault();
    const title = $("pin-title").value.trim(); const url = $("pin-url").value.trim(); if (!title) return;
    const r = await run("pin", url ? { title, url } : { title });
    if (r && r.type === "ok") { $("pin-form").reset(); $("pin-form").hidden = true; }
  };
  $("pin-cancel").onclick = () => { $("pin-form").reset(); $("pin-form").hidden = true; };
  // End is the host's one way to close the Space for everyone, after a confirmation.
  $("end").onclick = async () => {
    const r = await run("end", {}, { text: "End this Space for everyone? Listeners and speakers are sent out and it cannot be restarted.", yes: "End Space" });
    if (r && r.type === "ok") { info("You ended the Space."); teardown(); }
  };
  // Leave is an explicit act for speakers and listeners (a speaker steps down). The host's Leave only
  // steps out (a disconnect): the Space stays live for the host's grace period and Rejoin comes back;
  // only End ends it. Closing the tab is a disconnect for everyone.
  $("leave").onclick = () => {
    state.left = true; clearTimeout(state.timer);
    const ws = state.ws;
    if (isHost()) { if (ws) ws.close(1000); info("You stepped out; the Space stays live for a few minutes while you are away. Rejoin to come back, or End it."); }
    else { send({ type: "leave" }); if (ws) setTimeout(() => ws.close(1000), 2000); info("You left the Space."); }
    teardown(); $("leave").hidden = true; $("rejoin").hidden = false; $("end").hidden = true; $("rejoin").focus();
  };
  $("rejoin").onclick = () => {
    state.left = false; state.entered = false; state.retries = 0;
    for (const id of ["hand", "mic", "leave", "end"]) $(id).disabled = false;
    $("leave").hidden = false; $("rejoin").hidden = true; say("");
    connect();
  };
  connect();
}
setup();
