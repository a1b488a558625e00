"""The ``MediaHub``: every live session of this process, their timers, and their end at shutdown.

One hub per app, made in the live routes' lifespan (``app.state.media``) and
closed when the app stops, so no peer connection, relay or task outlives
it (aiortc's examples keep these in module globals; a test that starts
twenty apps cannot). Sessions are kept in memory: a live exam does not
survive a restart of the process holding its peer connections anyway.
Ended sessions are remembered for a while (``GET`` still answers
``ended`` with the reason) in a bounded list.

A watchdog ends sessions that had no connected sender for
``live_idle_timeout_seconds``, or ran for ``live_max_seconds``, and, with
``live_recording_retention_days`` set, deletes recordings older than that
(``recording.py``) once an hour.

With a ``SessionRegistry`` (several replicas, ``TELECONSULT_REPLICA_URL``)
the hub records each session it starts there, renews their leases from
the watchdog and marks them ended, so other replicas relay to it.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from teleconsult.config import IceServer, Settings
from teleconsult.errors import TeleconsultError
from teleconsult.media.recording import RecordingInfo, delete_recording, expired_recordings
from teleconsult.media.registry import SessionRegistry
from teleconsult.media.sessions import LiveSession
from teleconsult.media.turn import TurnIssuer

if TYPE_CHECKING:
    from teleconsult.domain.consults import Consult
    from teleconsult.domain.identity import Principal

__all__ = ["SYSTEM", "MediaHub", "MediaOptions"]

logger = logging.getLogger(__name__)

SYSTEM = "system"  # who ends a session on a timer or at shutdown
_REMEMBER_ENDED = 256

EndedHook = Callable[[LiveSession], Awaitable[None]]
DeletedHook = Callable[[RecordingInfo], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class MediaOptions:
    """The hub's settings (from ``Settings``; tests shorten the timers)."""

    ice_servers: tuple[IceServer, ...] = ()
    turn: TurnIssuer | None = None  # per-participant TURN credentials (TELECONSULT_TURN_*)
    idle_timeout: float = 300.0
    max_seconds: float = 4 * 3600.0
    max_viewers: int = 8
    video_bitrate: int = 600_000  # the viewers' shared VP8 encoding (0: one encoder per viewer)
    auth_timeout: float = 5.0
    check_interval: float = 1.0
    recordings_dir: Path | None = None  # where recordings are (listed, served, and made when record)
    record: bool = False
    retention_days: float = 0.0  # 0: recordings are kept
    retention_interval: float = 3600.0
    clip_max_seconds: float = 30.0
    # a peer connection not connected this long after its answer is closed (ICE failed)
    ice_timeout: float = 30.0

    @classmethod
    def from_settings(cls, settings: Settings) -> MediaOptions:
        return cls(
            ice_servers=tuple(settings.ice_servers),
            turn=TurnIssuer.from_settings(settings),
            idle_timeout=settings.live_idle_timeout_seconds,
            max_seconds=settings.live_max_seconds,
            max_viewers=settings.live_max_viewers,
            video_bitrate=settings.live_video_bitrate,
            recordings_dir=settings.recordings_dir,
            record=settings.live_recording,
            retention_days=settings.live_recording_retention_days,
            clip_max_seconds=settings.live_clip_max_seconds,
        )


class MediaHub:
    """Live sessions by id, at most one running per consult.

    ``on_ended`` is awaited after a session ends on a timer or at shutdown
    (the live routes audit those; an end asked for over HTTP is audited by
    its request), ``on_deleted`` after a recording was deleted for its age.
    """

    def __init__(
        self,
        options: MediaOptions | None = None,
        *,
        on_ended: EndedHook | None = None,
        on_deleted: DeletedHook | None = None,
        registry: SessionRegistry | None = None,
    ) -> None:
        self.options = options or MediaOptions()
        self.registry = registry
        self._renewed: float | None = None
        self._collecting = False
        self._renew_failing = False
        self.on_ended = on_ended
        self.on_deleted = on_deleted
        self._swept: float | None = None
        self._sessions: dict[str, LiveSession] = {}
        self._ended: OrderedDict[str, LiveSession] = OrderedDict()
        self._watchdog: asyncio.Task[None] | None = None
        self._closed = False
        self.loop: asyncio.AbstractEventLoop | None = None  # the loop its sessions live on (from start)

    # -- lifecycle -------------------------------------------------------------------

    def start(self) -> None:
        if self._watchdog is None:
            self.loop = asyncio.get_running_loop()
            self._watchdog = self.loop.create_task(self._watch(), name="live sessions watchdog")

    async def close(self) -> None:
        """End every session (peers are told the server is going away) and stop the watchdog."""
        self._closed = True
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        for session in list(self._sessions.values()):
            await self._end(session, "the server is shutting down", SYSTEM)

    # -- sessions --------------------------------------------------------------------

    def open(
        self, consult: Consult, principal: Principal, session_id: str | None = None
    ) -> tuple[LiveSession, bool]:
        """The consult's running session, or a new one (True) started by ``principal``.

        ``session_id`` is the id the registry was given for the new session.
        """
        if self._closed:
            raise RuntimeError("the media hub is closed")
        for session in self._sessions.values():
            if session.consult_id == consult.consult_id:
                return session, False
        session = LiveSession(
            session_id or str(uuid.uuid4()),
            consult,
            principal,
            ice_servers=self.options.ice_servers,
            turn=self.options.turn,
            max_viewers=self.options.max_viewers,
            video_bitrate=self.options.video_bitrate,
            recordings=self.options.recordings_dir if self.options.record else None,
            keep_seconds=self.options.clip_max_seconds,
        )
        self._sessions[session.session_id] = session
        logger.info(
            "live %s of consult %s started by %s", session.session_id, consult.consult_id, principal.username
        )
        return session, True

    def get(self, session_id: str) -> LiveSession | None:
        """A running session, or one that ended recently."""
        return self._sessions.get(session_id) or self._ended.get(session_id)

    def running(self) -> list[LiveSession]:
        return list(self._sessions.values())

    def peer_connections(self) -> int:
        return sum(session.peer_connections() for session in self._sessions.values())

    async def end_consult(self, consult_id: str, reason: str) -> int:
        """End the consult's running sessions (it was cancelled or declined); how many ended."""
        ended = 0
        for session in [s for s in self._sessions.values() if s.consult_id == consult_id]:
            ended += await self._end(session, reason, SYSTEM)
        return ended

    async def end(self, session: LiveSession, reason: str, *, by: str) -> bool:
        """End ``session`` (False if it had ended already)."""
        return await self._end(session, reason, by)

    async def _end(self, session: LiveSession, reason: str, by: str) -> bool:
        self._sessions.pop(session.session_id, None)
        self._ended[session.session_id] = session
        while len(self._ended) > _REMEMBER_ENDED:
            self._ended.popitem(last=False)
        ended = await session.end(reason, by=by)
        if ended:
            self._collect_soon()
        if ended and self.registry is not None:
            try:
                await asyncio.to_thread(self.registry.release, session.session_id)
            except Exception:  # its lease lapses instead
                logger.exception("live %s: its end cannot be recorded in the registry", session.session_id)
        if ended and by == SYSTEM and self.on_ended is not None:
            try:
                await self.on_ended(session)
            except Exception:
                logger.exception("live %s: recording its end failed", session.session_id)
        return ended

    def _collect_soon(self) -> None:
        """One full garbage collection shortly after sessions end.

        An ended session's peer connections, tracks and codecs form reference
        cycles that hold their native buffers (decoded frames, encoder state:
        tens of MiB) until a full collection, and Python's thresholds count
        objects, not bytes, so one may not come for a long time while the heap
        grows around them. Sessions end rarely; the collection takes a few
        milliseconds of the loop.
        """
        if self._collecting or self.loop is None:
            return
        self._collecting = True

        def collect() -> None:
            self._collecting = False
            started = time.perf_counter()
            found = gc.collect()
            logger.debug(
                "live: %d unreachable objects collected in %.1f ms",
                found,
                (time.perf_counter() - started) * 1e3,
            )

        self.loop.call_later(1.0, collect)

    # -- timers ------------------------------------------------------------------------

    def _expired(self, session: LiveSession, now: float) -> str | None:
        if now - session.started >= self.options.max_seconds:
            return f"it ran for the longest a session may ({self.options.max_seconds:g} s)"
        if session.sender is None and now - session.idle_since >= self.options.idle_timeout:
            return f"no sender was connected for {self.options.idle_timeout:g} s"
        return None

    async def check(self) -> int:
        """End the sessions whose time is up and close connections that never connected; how many ended."""
        now = asyncio.get_running_loop().time()
        due = [(s, why) for s in self._sessions.values() if (why := self._expired(s, now)) is not None]
        for session, why in due:
            await self._end(session, why, SYSTEM)
        for session in list(self._sessions.values()):
            await session.drop_unconnected(now, self.options.ice_timeout)
        return len(due)

    async def sweep(self) -> list[RecordingInfo]:
        """Delete the recordings older than the retention (none when it is 0); returns them."""
        root, days = self.options.recordings_dir, self.options.retention_days
        if root is None or days <= 0:
            return []
        before = datetime.now(UTC) - timedelta(days=days)
        expired = await asyncio.to_thread(expired_recordings, root, before)
        running = {session.session_id for session in self._sessions.values()}
        deleted = []
        for info in expired:
            if info.session_id in running:
                continue
            try:
                await asyncio.to_thread(delete_recording, root, info)
            except OSError:
                logger.exception("the recording of live %s cannot be deleted", info.session_id)
                continue
            logger.info("live %s: recording deleted (older than %g days)", info.session_id, days)
            deleted.append(info)
            if self.on_deleted is not None:
                try:
                    await self.on_deleted(info)
                except Exception:
                    logger.exception("live %s: recording the deletion failed", info.session_id)
        return deleted

    async def renew(self) -> int:
        """Push the registry leases of the running sessions forward (how many were renewed)."""
        if self.registry is None:
            return 0
        try:
            renewed = await asyncio.to_thread(self.registry.renew, list(self._sessions))
        except TeleconsultError as exc:  # the index is away: say so once, not every 5 s
            if not self._renew_failing:
                logger.warning("live: session leases cannot be renewed (%s); retrying", exc.message)
            self._renew_failing = True
            return 0
        if self._renew_failing:
            logger.info("live: session leases renewed again")
        self._renew_failing = False
        return renewed

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self.options.check_interval)
            try:
                await self.check()
                now = asyncio.get_running_loop().time()
                if self.registry is not None and (
                    self._renewed is None or now - self._renewed >= self.registry.lease.total_seconds() / 3
                ):
                    self._renewed = now
                    await self.renew()
                if self._swept is None or now - self._swept >= self.options.retention_interval:
                    self._swept = now
                    await self.sweep()
            except Exception:
                logger.exception("the live session watchdog failed; it tries again")
