"""How often an association's DUL thread looks at its socket: often while it works alone, rarely otherwise.

pynetdicom's DUL reactor sleeps ``_run_loop_delay`` (1 ms) after every loop
that found nothing to do. A request that arrives while it sleeps, and a
response the association thread hands it, wait for the sleep to end: over
one association, where each C-STORE waits for the previous response, that
is most of a millisecond per instance (200 ECGs over one association, medians
of five runs on a 2-CPU machine: 5.2 ms an instance at 1 ms, 4.6 ms at 0.2 ms).

Polling every 0.2 ms costs CPU, though: an idle association's reactor then
takes about 8 % of a core more, and with several busy associations in one
process the waits overlap with the others' work while the polling takes CPU
from it. A large data set (a DR, a cine loop) takes tens of milliseconds to store,
next to which a millisecond of polling does not count, while polling at
0.2 ms through those milliseconds competes with the store for the GIL (8 MB
DRs over one association: 0.79x the bare receiver at 1 ms, 0.70x at 0.2 ms).
So the short interval goes to an association only while it is the one
association of this process that has had a DIMSE message in the last second
and its last message carried no data set over 1 MB; everything else is
polled at pynetdicom's own interval.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from pynetdicom import evt
from pynetdicom.events import Event

__all__ = ["ACTIVE_POLL_INTERVAL", "IDLE_AFTER", "ReactorPacing"]

logger = logging.getLogger(__name__)

# Seconds the DUL reactor sleeps between looks while its association works alone.
ACTIVE_POLL_INTERVAL = 0.0002
# Seconds without a DIMSE message after which an association no longer counts as busy.
IDLE_AFTER = 1.0
# A message carrying a larger data set leaves its association at pynetdicom's interval.
LARGE_DATA_SET = 1 << 20
# pynetdicom 3's attribute; without it (another version) pacing does nothing.
_DELAY_ATTRIBUTE = "_run_loop_delay"


class ReactorPacing:
    """Notification handlers that shorten the polling interval of a process's one busy association.

    A pacing thread runs only while some association is busy, so a gateway
    with no traffic has no extra thread.
    """

    def __init__(self) -> None:
        self._active_interval = ACTIVE_POLL_INTERVAL
        self._idle_after = IDLE_AFTER
        # dul -> (monotonic time of its last message, pynetdicom's own interval, last message large)
        self._busy: dict[Any, tuple[float, float, bool]] = {}
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._warned = False

    def handlers(self) -> list[tuple[Any, Any]]:
        return [(evt.EVT_DIMSE_RECV, self._message), (evt.EVT_CONN_CLOSE, self._closed)]

    def _message(self, event: Event) -> None:
        dul = event.assoc.dul
        now = time.monotonic()
        large = _data_set_size(event.message) > LARGE_DATA_SET
        with self._lock:
            known = self._busy.get(dul)
            if known is not None:
                self._busy[dul] = (now, known[1], large)
                if large != known[2]:
                    self._pace()
                return
            own_interval = getattr(dul, _DELAY_ATTRIBUTE, None)
            if not isinstance(own_interval, float | int):
                if not self._warned:
                    self._warned = True
                    logger.warning("pynetdicom's DUL has no %s; polling left as it is", _DELAY_ATTRIBUTE)
                return
            self._busy[dul] = (now, float(own_interval), large)
            self._pace()
            if self._thread is None:
                self._thread = threading.Thread(target=self._expire, name="dicom-reactor-pacing", daemon=True)
                self._thread.start()

    def _closed(self, event: Event) -> None:
        dul = event.assoc.dul
        with self._lock:
            known = self._busy.pop(dul, None)
            if known is not None:
                setattr(dul, _DELAY_ATTRIBUTE, known[1])
                self._pace()

    def _pace(self) -> None:
        """Short interval for a lone busy association of small messages, the own interval otherwise."""
        alone = len(self._busy) == 1
        for dul, (_, own, large) in self._busy.items():
            setattr(dul, _DELAY_ATTRIBUTE, min(own, self._active_interval) if alone and not large else own)

    def _expire(self) -> None:
        """Drop associations quiet for ``IDLE_AFTER``; end when none is busy."""
        while True:
            time.sleep(self._idle_after / 4)
            now = time.monotonic()
            with self._lock:
                quiet = [dul for dul, (last, _, _) in self._busy.items() if now - last >= self._idle_after]
                for dul in quiet:
                    setattr(dul, _DELAY_ATTRIBUTE, self._busy.pop(dul)[1])
                if quiet:
                    self._pace()
                if not self._busy:
                    self._thread = None
                    return


def _data_set_size(message: Any) -> int:
    """Bytes of the data set a DIMSE message carries (0 if none), without copying it."""
    data_set = getattr(message, "data_set", None)
    getbuffer = getattr(data_set, "getbuffer", None)
    if getbuffer is None:
        return 0
    with getbuffer() as view:
        return int(view.nbytes)
