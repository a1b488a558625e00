"""The overdue check in the background: one thread, stopped with the API.

``ConsultService.check_overdue`` does the work (flag once, escalate with a
``consult.overdue`` event); this thread only calls it every
``TELECONSULT_CONSULT_OVERDUE_CHECK_SECONDS``, first at start so that
consults that fell due while the service was down are escalated at once.
"""

from __future__ import annotations

import logging
import threading

from teleconsult.consults.service import ConsultService

__all__ = ["OverdueMonitor"]

logger = logging.getLogger(__name__)


class OverdueMonitor:
    def __init__(self, service: ConsultService, interval: float) -> None:
        if interval <= 0:
            raise ValueError(f"interval must be positive, not {interval}")
        self.service = service
        self.interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="consult-overdue", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def run_once(self) -> int:
        """One check; errors are logged so a database outage does not end the thread."""
        try:
            return len(self.service.check_overdue())
        except Exception:
            logger.exception("the overdue consult check failed; retrying in %.0f s", self.interval)
            return 0

    def _run(self) -> None:
        while True:
            self.run_once()
            if self._stop.wait(self.interval):
                return
