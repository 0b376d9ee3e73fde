// The web room's HLS listening (docs/webrtc-protocol.md, "Listening over HLS"): the room's own encode
// as fMP4 segments, played with Media Source Extensions. Split from room.js so each file stays short.

export function parsePlaylist(text) {
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

// Plays url into audio until me.stop; me.base / me.renewAt are updated by the page when a renewed URL
// arrives. send asks the socket for a renewal; say shows a problem.
export async function playHls(audio, url, ttl, me, send, say) {
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

