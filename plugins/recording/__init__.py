"""Recording with consent: the host records, every speaker is told and may opt out (their voice is
left out of the file), everyone sees the indicator; the result is an Ogg/Opus file of the mix plus
a timeline of reactions, pins, captions and stage changes, played back in sync on a replay page.
Any listener can clip the last 30 s into a link. Files are kept ``retention_days`` (default 30).

Layout in the plugin's store: ``rec:ID`` and ``clip:ID`` (metadata), ``active:SPACE`` (the
recording in progress), ``optout:SPACE:ACCOUNT``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import shutil
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from core import events as ev
from core.errors import Conflict, DomainError, NotFound
from plugins.api import Invocation, Option, PluginContext, Reply
from plugins.recording.recorder import Recorder, write_clip

STATIC = Path(__file__).parent / "static"
BADGE = "🔴 Recording"
BEAT_S = 2.0  # a recorder says it is alive this often (and picks up stops and opt-outs made elsewhere)
STALE_S = 10.0  # a recorder silent this long is taken to be gone
TIMELINE_EVENTS = ("reaction.sent", "pin.added", "pin.removed", "caption.line", "role.changed", "speaker.muted",
                   "comment.posted")


class RecordingConfig(BaseModel):
    """``[plugins.recording]`` in the config file."""

    model_config = ConfigDict(extra="forbid")
    retention_days: float = Field(30, gt=0, le=3650)
    clip_seconds: int = Field(30, ge=5, le=300)
    bitrate: int = Field(64_000, ge=16_000, le=256_000)
    cleanup_every_s: float = Field(3600, ge=1, le=86_400)


@dataclass
class _Active:
    rec_id: str
    space_id: str
    recorder: Recorder
    excluded: set[str]
    timeline: list[dict[str, Any]] = field(default_factory=list)
    task: asyncio.Task[None] | None = None
    keeper: asyncio.Task[None] | None = None
    done: asyncio.Event = field(default_factory=asyncio.Event)


class RecordingPlugin:
    name = "recording"
    version = "1.0.0"

    def __init__(self) -> None:
        self.ctx: PluginContext | None = None
        self.config = RecordingConfig()
        self.active: dict[str, _Active] = {}

    # ---- life ----------------------------------------------------------------------------------------
    async def setup(self, ctx: PluginContext) -> None:
        self.ctx = ctx
        self.config = RecordingConfig.model_validate(ctx.config)
        ctx.data_dir.mkdir(parents=True, exist_ok=True)
        ctx.subscribe(self.on_event, "space.ended", "role.changed", "participant.joined", *TIMELINE_EVENTS)
        ctx.command("record", "Start or stop recording this Space (host, co-hosts)", self.cmd_record,
                    options=[Option("action", "start or stop", "text", required=True, choices=("start", "stop"))],
                    min_role="moderator")
        ctx.command("optout", "Leave your voice out of this Space's recording (or opt back in)", self.cmd_optout,
                    options=[Option("out", "on (leave me out, the default) or off", "flag")],
                    button="Leave my voice out")
        ctx.command("clip", "Clip the last 30 seconds into a link", self.cmd_clip, button="Clip 30 s")
        ctx.command("recordings", "Replays of this Space", self.cmd_recordings)
        ctx.route("GET", "/r/replay.js", self.replay_script)  # before /r/{rec_id}: pages run no inline script
        ctx.route("GET", "/r/{rec_id}", self.replay_page)
        ctx.route("GET", "/r/{rec_id}/audio.ogg", self.replay_audio)
        ctx.route("GET", "/r/{rec_id}/timeline.json", self.replay_timeline)
        ctx.route("GET", "/c/{clip_id}", self.clip_page)
        ctx.route("GET", "/c/{clip_id}/audio.ogg", self.clip_audio)
        ctx.route("GET", "/c/{clip_id}/timeline.json", self.clip_timeline)
        ctx.every(self.config.cleanup_every_s, self.cleanup, "retention cleanup")
        await self._recover(starting=True)
        if ctx.several_processes:  # a recorder whose process died is taken over by another one
            ctx.every(STALE_S, self._recover, "taking over interrupted recordings")

    async def teardown(self) -> None:
        for space_id in list(self.active):
            await self._finish(space_id, "the platform stopped")

    async def _recover(self, *, starting: bool = False) -> None:
        """A recording cut short by a restart is closed (playable up to the cut); if its Space is
        still live it goes on in a new part, as the host asked for a recording. With several
        processes, only recordings whose recorder stopped saying it is alive are taken over."""
        assert self.ctx is not None
        for entry in await self.ctx.store.scan("active:"):
            space_id = entry.key.split(":", 1)[1]
            if space_id in self.active:
                continue
            if (self.ctx.several_processes or not starting) and self._fresh(entry.value):
                continue  # alive in another process (one process alone, starting, has no recorders)
            if not await self.ctx.store.delete(entry.key):
                continue  # another process took this one over first
            rec = await self.ctx.store.get(f"rec:{entry.value['rec_id']}")
            if rec is not None and rec.get("state") == "recording":
                rec.update(state="done", note="interrupted by a restart", ended_at=self.ctx.queries.now().isoformat())
                await self.ctx.store.put(f"rec:{rec['id']}", rec)
            try:
                view = await self.ctx.queries.space(space_id)
            except NotFound:
                continue
            if view.space.state.value == "live":
                await self._start(space_id, by=str(entry.value.get("by", "")), resumed=True)
            else:
                await self.ctx.actions.set_badge(space_id, None)

    # ---- recording -------------------------------------------------------------------------------------
    async def _excluded(self, space_id: str) -> set[str]:
        assert self.ctx is not None
        prefix = f"optout:{space_id}:"
        return {e.key[len(prefix):] for e in await self.ctx.store.scan(prefix, limit=10_000)}

    def _fresh(self, entry: dict[str, Any] | None) -> bool:
        """An ``active:`` entry whose recorder (in some process) said it is alive lately."""
        assert self.ctx is not None
        if entry is None or "beat" not in entry:
            return False
        age = (self.ctx.queries.now() - datetime.fromisoformat(str(entry["beat"]))).total_seconds()
        return bool(age < STALE_S)

    async def _start(self, space_id: str, *, by: str, resumed: bool = False) -> str:
        assert self.ctx is not None
        if space_id in self.active or self._fresh(await self.ctx.store.get(f"active:{space_id}")):
            raise Conflict("recording.already", space_id=space_id)
        view = await self.ctx.queries.space(space_id)
        if view.space.state.value != "live":
            raise Conflict("recording.not_live", space_id=space_id)
        rec_id = secrets.token_urlsafe(12)
        path = self.ctx.data_dir / rec_id / "audio.ogg"
        now = self.ctx.queries.now()
        recorder = Recorder(path, clip_ticks=self.config.clip_seconds * 50, bitrate=self.config.bitrate)
        act = _Active(rec_id, space_id, recorder, await self._excluded(space_id))
        self.active[space_id] = act
        await self.ctx.store.put_many([
            (f"rec:{rec_id}", {"id": rec_id, "space_id": space_id, "title": view.space.title, "by": by,
                               "started_at": now.isoformat(), "state": "recording", "duration_s": 0,
                               "expires_at": (now + timedelta(days=self.config.retention_days)).isoformat()}),
            (f"active:{space_id}", {"rec_id": rec_id, "by": by, "beat": now.isoformat()}),
        ])
        act.task = self.ctx.spawn(self._run(act), f"recording {rec_id}")
        act.keeper = self.ctx.spawn(self._keep(act), f"recording {rec_id} heartbeat")
        await self.ctx.actions.set_badge(space_id, BADGE)
        again = " again after a restart" if resumed else ""
        await self.ctx.actions.notice(space_id, f"🔴 This Space is being recorded{again}. Speakers can leave their "
                                                f"voice out with /optout.", kind="recording")
        for a in view.space.stage:
            await self._tell_speaker(space_id, a)
        return rec_id

    async def _tell_speaker(self, space_id: str, account_id: str) -> None:
        assert self.ctx is not None
        act = self.active.get(space_id)
        if act is None:
            return
        state = "left out of" if account_id in act.excluded else "in"
        await self.ctx.actions.notice(space_id, f"This Space is being recorded and your voice is {state} it. "
                                                "Use /optout to change that.", account_id=account_id,
                                      kind="recording")

    async def _run(self, act: _Active) -> None:
        assert self.ctx is not None
        try:
            async for tick in self.ctx.ticks(act.space_id):
                act.recorder.add(tick, act.excluded)
        finally:
            act.done.set()

    async def _keep(self, act: _Active) -> None:
        """With several processes, the recording's commands may be handled anywhere: the recorder says
        it is alive (so no other process takes it over), notices a stop made elsewhere (the entry is
        gone) and opt-outs made elsewhere."""
        assert self.ctx is not None
        while True:
            await asyncio.sleep(BEAT_S)
            entry = await self.ctx.store.get(f"active:{act.space_id}")
            if entry is None or entry.get("rec_id") != act.rec_id:
                async def finish() -> None:
                    await self._finish(act.space_id, "stopped by the host")

                self.ctx.spawn(finish(), "finishing a recording")
                return
            entry["beat"] = self.ctx.queries.now().isoformat()
            await self.ctx.store.put(f"active:{act.space_id}", entry)
            act.excluded = await self._excluded(act.space_id)

    async def _finish(self, space_id: str, why: str) -> str | None:
        assert self.ctx is not None
        act = self.active.pop(space_id, None)
        if act is None:
            return None
        current = asyncio.current_task()
        for task in (act.task, act.keeper):
            if task is not None and task is not current:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        duration = await asyncio.to_thread(act.recorder.close)
        folder = self.ctx.data_dir / act.rec_id
        rec = await self.ctx.store.get(f"rec:{act.rec_id}") or {}
        names = await self._names(act.timeline)
        timeline = {"recording": act.rec_id, "space_id": space_id, "title": rec.get("title", ""),
                    "started_at": rec.get("started_at"), "duration_s": round(duration, 2), "names": names,
                    "events": act.timeline}
        await asyncio.to_thread((folder / "timeline.json").write_text, json.dumps(timeline, ensure_ascii=False))
        rec.update(state="done", duration_s=round(duration, 2), ended_at=self.ctx.queries.now().isoformat(),
                   note=why)
        await self.ctx.store.put(f"rec:{act.rec_id}", rec)
        await self.ctx.store.delete(f"active:{space_id}")
        with contextlib.suppress(NotFound):
            await self.ctx.actions.set_badge(space_id, None)
            view = await self.ctx.queries.space(space_id)
            if view.space.state.value == "live":
                await self.ctx.actions.notice(space_id, f"⏹ Recording stopped. Replay: {self.replay_url(act.rec_id)}",
                                              kind="recording")
        return act.rec_id

    async def _names(self, events: list[dict[str, Any]]) -> dict[str, str]:
        assert self.ctx is not None
        ids = {str(e.get("account_id") or e.get("speaker_id")) for e in events
               if e.get("account_id") or e.get("speaker_id")}
        return {a: await self.ctx.queries.display_name(a) for a in ids}

    def replay_url(self, rec_id: str) -> str:
        assert self.ctx is not None
        return self.ctx.url(f"/r/{rec_id}")

    # ---- events --------------------------------------------------------------------------------------
    async def on_event(self, e: ev.Event) -> None:
        space_id = getattr(e, "space_id", "")
        act = self.active.get(space_id)
        if isinstance(e, ev.SpaceEnded):
            await self._finish(space_id, "the Space ended")
            return
        if act is None:
            return
        if isinstance(e, ev.RoleChanged) and e.role != "listener" and e.previous == "listener":
            await self._tell_speaker(space_id, e.account_id)
        if e.name not in TIMELINE_EVENTS:
            return
        item: dict[str, Any] = {"type": e.name}
        if isinstance(e, ev.CaptionLine):
            item.update(t=act.recorder.offset(e.start_s), end=act.recorder.offset(e.end_s), speaker_id=e.speaker_id,
                        text=e.text)
            if e.speaker_id in act.excluded:
                return  # what an opted-out speaker said stays out of the recording's captions too
        else:
            item["t"] = act.recorder.offset()
            data = e.to_dict()
            for k in ("account_id", "emoji", "title", "url", "pin_id", "role", "previous", "muted", "by", "text"):
                if k in data:
                    item[k] = data[k]
        act.timeline.append(item)

    # ---- commands --------------------------------------------------------------------------------------
    async def cmd_record(self, inv: Invocation) -> Reply:
        if inv.args["action"] == "start":
            rec_id = await self._start(inv.space.id, by=inv.actor.account_id)
            return Reply("🔴 Recording. Everyone sees the indicator; speakers were told they can opt out.",
                         self.replay_url(rec_id))
        done = await self._finish(inv.space.id, "stopped by the host")
        if done is not None:
            return Reply("⏹ Recording saved. Replay:", self.replay_url(done))
        assert self.ctx is not None
        entry = await self.ctx.store.get(f"active:{inv.space.id}")
        if not self._fresh(entry) or not await self.ctx.store.delete(f"active:{inv.space.id}"):
            raise Conflict("recording.not_recording", space_id=inv.space.id)
        assert entry is not None  # recording in another process: it sees the entry gone and saves
        return Reply("⏹ Recording stopped; the replay is ready in a few seconds:", self.replay_url(entry["rec_id"]))

    async def cmd_optout(self, inv: Invocation) -> Reply:
        assert self.ctx is not None
        out = bool(inv.args.get("out", True))
        key = f"optout:{inv.space.id}:{inv.actor.account_id}"
        act = self.active.get(inv.space.id)
        if out:
            await self.ctx.store.put(key, {"at": self.ctx.queries.now().isoformat()})
            if act is not None:
                act.excluded.add(inv.actor.account_id)
            return Reply("Your voice is left out of this Space's recording and clips.")
        await self.ctx.store.delete(key)
        if act is not None:
            act.excluded.discard(inv.actor.account_id)
        return Reply("Your voice is included in this Space's recording again.")

    async def cmd_clip(self, inv: Invocation) -> Reply:
        assert self.ctx is not None
        act = self.active.get(inv.space.id)
        if act is None and self._fresh(await self.ctx.store.get(f"active:{inv.space.id}")):
            raise Conflict("recording.elsewhere", space_id=inv.space.id)
        if act is None or act.recorder.start_seq is None:
            raise Conflict("recording.no_clip", space_id=inv.space.id)
        frames = list(act.recorder.recent)
        end = act.recorder.offset()
        clip_id = secrets.token_urlsafe(12)
        seconds = await asyncio.to_thread(write_clip, self.ctx.data_dir / "clips" / f"{clip_id}.ogg", frames,
                                          self.config.bitrate)
        now = self.ctx.queries.now()
        await self.ctx.store.put(f"clip:{clip_id}", {
            "id": clip_id, "rec_id": act.rec_id, "space_id": inv.space.id, "by": inv.actor.account_id,
            "start_s": round(end - seconds, 2), "duration_s": round(seconds, 2), "created_at": now.isoformat(),
            "events": [dict(e, t=round(e["t"] - (end - seconds), 2)) for e in act.timeline
                       if end - seconds <= e["t"] <= end],
            "expires_at": (now + timedelta(days=self.config.retention_days)).isoformat()})
        return Reply(f"🎬 Clip of the last {round(seconds)} s:", self.ctx.url(f"/c/{clip_id}"))

    async def cmd_recordings(self, inv: Invocation) -> Reply:
        assert self.ctx is not None
        recs = [e.value for e in await self.ctx.store.scan("rec:", limit=10_000)
                if e.value.get("space_id") == inv.space.id]
        if not recs:
            return Reply("This Space has no recordings.")
        recs.sort(key=lambda r: r.get("started_at", ""))
        return Reply("\n".join(f"{r['started_at'][:16]} · {r.get('duration_s', 0):.0f} s · "
                               f"{'recording now' if r['state'] == 'recording' else self.replay_url(r['id'])}"
                               for r in recs))

    # ---- retention -------------------------------------------------------------------------------------
    async def cleanup(self, now: datetime | None = None) -> int:
        """Delete recordings and clips past their retention; returns how many went."""
        assert self.ctx is not None
        now = now or self.ctx.queries.now()
        gone = 0
        for prefix in ("rec:", "clip:"):
            for e in await self.ctx.store.scan(prefix, limit=10_000):
                v = e.value
                if v.get("state") == "recording" or datetime.fromisoformat(v["expires_at"]) > now:
                    continue
                if prefix == "rec:":
                    await asyncio.to_thread(shutil.rmtree, self.ctx.data_dir / v["id"], True)
                else:
                    with contextlib.suppress(FileNotFoundError):
                        await asyncio.to_thread((self.ctx.data_dir / "clips" / f"{v['id']}.ogg").unlink)
                await self.ctx.store.delete(e.key)
                gone += 1
        if gone:
            self.ctx.log.info("retention: deleted %d recordings and clips", gone)
        return gone

    # ---- the replay page -------------------------------------------------------------------------------
    async def _meta(self, kind: str, item_id: str) -> dict[str, Any]:
        assert self.ctx is not None
        meta = await self.ctx.store.get(f"{kind}:{item_id}") if len(item_id) < 40 else None
        if meta is None or (kind == "rec" and meta.get("state") != "done"):
            raise web.HTTPNotFound(text="There is no such recording (it may have expired).")
        return meta

    async def _open(self, request: web.Request, kind: str, item_id: str) -> dict[str, Any]:
        """A finished recording or clip that this request's person may hear. A Space for subscribers
        keeps its replays and clips for them (``Queries.may_hear_replay``): anyone else is sent to
        the Space's page, which says which tier opens them (a file answers 403)."""
        assert self.ctx is not None
        meta = await self._meta(kind, item_id)
        space_id = str(meta.get("space_id") or "")
        try:
            allowed = await self.ctx.queries.may_hear_replay(space_id, await self.ctx.viewer(request))
        except DomainError:
            allowed = True  # the Space itself is gone: its recording stays as it was
        if allowed:
            return meta
        if request.path.endswith((".ogg", ".json")):
            raise web.HTTPForbidden(text="This replay is for the host's subscribers: subscribe to hear it.")
        raise web.HTTPSeeOther(f"/s/{space_id}")

    async def replay_script(self, request: web.Request) -> web.StreamResponse:
        return web.FileResponse(STATIC / "replay.js", headers={"Cache-Control": "no-cache"})

    async def replay_page(self, request: web.Request) -> web.StreamResponse:
        await self._open(request, "rec", request.match_info["rec_id"])
        return web.FileResponse(STATIC / "replay.html", headers={"Cache-Control": "no-store"})

    async def replay_audio(self, request: web.Request) -> web.StreamResponse:
        assert self.ctx is not None
        meta = await self._open(request, "rec", request.match_info["rec_id"])
        return web.FileResponse(self.ctx.data_dir / meta["id"] / "audio.ogg", headers={"Content-Type": "audio/ogg"})

    async def replay_timeline(self, request: web.Request) -> web.StreamResponse:
        assert self.ctx is not None
        meta = await self._open(request, "rec", request.match_info["rec_id"])
        return web.FileResponse(self.ctx.data_dir / meta["id"] / "timeline.json",
                                headers={"Content-Type": "application/json"})

    async def clip_page(self, request: web.Request) -> web.StreamResponse:
        await self._open(request, "clip", request.match_info["clip_id"])
        return web.FileResponse(STATIC / "replay.html", headers={"Cache-Control": "no-store"})

    async def clip_audio(self, request: web.Request) -> web.StreamResponse:
        assert self.ctx is not None
        meta = await self._open(request, "clip", request.match_info["clip_id"])
        return web.FileResponse(self.ctx.data_dir / "clips" / f"{meta['id']}.ogg",
                                headers={"Content-Type": "audio/ogg"})

    async def clip_timeline(self, request: web.Request) -> web.StreamResponse:
        assert self.ctx is not None
        meta = await self._open(request, "clip", request.match_info["clip_id"])
        rec = await self.ctx.store.get(f"rec:{meta['rec_id']}") or {}
        names = await self._names(meta["events"])
        return web.json_response({"clip": meta["id"], "space_id": meta["space_id"], "title": rec.get("title", ""),
                                  "duration_s": meta["duration_s"], "names": names, "events": meta["events"]})
