"""One subscribed socket: who it is, a bounded queue of encoded events, and how it ends.

Events are put on the queue by the event loop (the hub hands them over with
``call_soon_threadsafe``) and sent by one pump task, the only writer on the
socket. A client that does not keep up leaves the pump waiting on a full
send buffer while its queue fills; once ``queue_size`` events wait, the next
one closes it with 4013 instead of growing memory or holding anyone else up.
Events that wait only because the loop has not run the pump yet (a burst
handed over in one go) do not count against the client, up to
``_LOOP_SLACK`` times the queue size. If the socket cannot even take the
close (the client stopped reading), the pump is abandoned after
``close_grace`` seconds and the transport is dropped.

``principal``, ``viewer``, ``checked_at`` and ``revoked`` are replaced by the hub's
dispatcher thread when it re-reads the account; everything else belongs to
the loop.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import time
from collections.abc import Awaitable, Callable

from teleconsult.domain.consults import ConsultViewer
from teleconsult.domain.identity import Principal
from teleconsult.notifications.protocol import Closing, error_message, slow_consumer

__all__ = ["Connection"]

logger = logging.getLogger(__name__)

_ids = itertools.count(1)
_LOOP_SLACK = 8

SendText = Callable[[str], Awaitable[None]]
CloseSocket = Callable[[int, str], Awaitable[None]]


class Connection:
    def __init__(
        self,
        principal: Principal,
        viewer: ConsultViewer,
        *,
        expires_at: float,
        queue_size: int,
        close_grace: float,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        if queue_size < 1:
            raise ValueError(f"queue_size must be at least 1, not {queue_size}")
        self.id = next(_ids)
        self.principal = principal
        self.viewer = viewer
        self.checked_at = time.monotonic()
        self.revoked = False  # the dispatcher found the account disabled: closing
        self.expires_at = expires_at  # epoch seconds: the token's exp
        self.loop = loop
        self.close_grace = close_grace
        self.closing: Closing | None = None
        self.delivered = 0
        self.queue_size = queue_size
        self._queue: asyncio.Queue[str | Closing] = asyncio.Queue()
        self._pump: asyncio.Task[Closing | None] | None = None
        self._sending = False  # the pump waits on the socket (only seen while a send is suspended)

    def __repr__(self) -> str:
        return f"<Connection {self.id} {self.principal.username}>"

    @property
    def username(self) -> str:
        return self.principal.username

    # -- the loop's side ---------------------------------------------------------

    def offer(self, text: str) -> None:
        """Queue one encoded message; an overflowing queue closes the connection (4013)."""
        if self.closing is not None:
            return
        queued = self._queue.qsize()
        if queued >= self.queue_size and (self._sending or queued >= self.queue_size * _LOOP_SLACK):
            logger.warning(
                "events socket %d of %s overflowed (%d queued): closing", self.id, self.username, queued
            )
            self.close(slow_consumer(queued))
            return
        self._queue.put_nowait(text)

    def close(self, closing: Closing) -> None:
        """End the connection: queued events are dropped, the client gets ``error`` and the close."""
        if self.closing is not None:
            return
        self.closing = closing
        while not self._queue.empty():
            self._queue.get_nowait()
        self._queue.put_nowait(closing)
        if self._pump is not None:
            self.loop.call_later(self.close_grace, self._abandon)

    def start(self, send_text: SendText, close_socket: CloseSocket) -> asyncio.Task[Closing | None]:
        """Start the pump; the task ends with the server's reason to close, or None if the client left."""
        self._pump = asyncio.ensure_future(self._run(send_text, close_socket))
        if self.closing is not None:
            self.loop.call_later(self.close_grace, self._abandon)
        return self._pump

    async def _run(self, send_text: SendText, close_socket: CloseSocket) -> Closing | None:
        try:
            while True:
                item = await self._queue.get()
                if isinstance(item, Closing):
                    await send_text(json.dumps(error_message(item)))
                    await close_socket(item.code, item.reason)
                    return item
                self._sending = True
                try:
                    await send_text(item)
                finally:
                    self._sending = False
                self.delivered += 1
        except asyncio.CancelledError:
            if self.closing is not None:
                return self.closing  # abandoned: the client stopped reading
            raise
        except Exception as exc:  # the client went away mid-send
            logger.debug("events socket %d of %s: send failed: %r", self.id, self.username, exc)
            return self.closing

    def _abandon(self) -> None:
        if self._pump is not None and not self._pump.done():
            logger.warning(
                "events socket %d of %s did not take its close in %.0f s: dropping it",
                self.id,
                self.username,
                self.close_grace,
            )
            self._pump.cancel()

    def stop(self) -> None:
        """Cancel the pump (the client left); synchronous, so it also runs while the handler is cancelled."""
        if self._pump is not None and not self._pump.done():
            self._pump.cancel()
