"""The measuring C-FIND SCU: one pynetdicom association per server, reused for every query.

The same client code asks both servers, so whatever it costs (encoding the
identifier, decoding every response) is paid equally by both. A query's
latency is the time from sending the C-FIND-RQ to receiving the final
(non-pending) response, all pending responses included.
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, evt
from pynetdicom.association import Association
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    StudyRootQueryRetrieveInformationModelFind,
    Verification,
)

from bench.query.queries import Query
from bench.query.servers import CALLING_AE_TITLE, BenchError, Endpoint
from bench.timing import collector_paused

if TYPE_CHECKING:
    from pynetdicom.events import Event

__all__ = ["DEFAULT_TIMEOUT", "FindClient", "FindResult", "find_client", "findscu"]

logger = logging.getLogger(__name__)

_PENDING = (0xFF00, 0xFF01)
# How long the client waits for the next response of a C-FIND (pynetdicom's
# DIMSE timeout) or for a findscu process. Orthanc computes every match before
# its first response: 1.8 s for a name prefix and 5 s for one year on a quiet
# machine (FACTS.md), several times that while neighbours load both cores. A
# 60 s limit once aborted a 30-minute run on a busy machine; a peer killed
# mid-query is noticed by the Orthanc restart check instead.
DEFAULT_TIMEOUT = 600.0


@dataclass(frozen=True, slots=True)
class FindResult:
    """One C-FIND as the client saw it."""

    seconds: float
    uids: frozenset[str]  # the unique key of every pending response
    responses: int
    status: int | None  # the final status; None if the association failed
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == 0x0000 and self.error is None


def _no_delay(event: Event) -> None:
    """EVT_CONN_OPEN: Nagle off, or each response may wait ~40 ms for a delayed ACK (FACTS.md)."""
    sock = getattr(event.assoc.dul.socket, "socket", None)
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class FindClient:
    """A Study Root C-FIND SCU bound to one server; re-associates if the server drops the link."""

    def __init__(
        self,
        endpoint: Endpoint,
        restarted: Callable[[], bool] | None = None,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        self.endpoint = endpoint
        self.timeout = timeout
        # Called before each request: True if the server was restarted (the association is dead).
        self.restarted = restarted
        self.ae = AE(ae_title=CALLING_AE_TITLE)
        self.ae.add_requested_context(
            StudyRootQueryRetrieveInformationModelFind, [ExplicitVRLittleEndian, ImplicitVRLittleEndian]
        )
        self.ae.add_requested_context(Verification, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
        self.ae.acse_timeout = 60
        self.ae.dimse_timeout = timeout
        # The association idles while the other server (or findscu) works: keep it.
        self.ae.network_timeout = 3600
        self.assoc: Association | None = None

    def _associate(self) -> Association:
        if self.restarted is not None and self.restarted():
            self.assoc = None
        if self.assoc is not None and self.assoc.is_established:
            return self.assoc
        assoc = self.ae.associate(
            self.endpoint.host,
            self.endpoint.port,
            ae_title=self.endpoint.ae_title,
            evt_handlers=[(evt.EVT_CONN_OPEN, _no_delay)],
        )
        if not assoc.is_established:
            raise BenchError(f"{self.endpoint.name} refused the association from {CALLING_AE_TITLE}")
        self.assoc = assoc
        return assoc

    def echo(self) -> float:
        """Seconds for one C-ECHO: the floor under every request on this association."""
        assoc = self._associate()
        with collector_paused():
            started = time.perf_counter()
            status = assoc.send_c_echo()
            seconds = time.perf_counter() - started
        if "Status" not in status or status.Status != 0x0000:
            raise BenchError(f"{self.endpoint.name} failed a C-ECHO")
        return seconds

    def find(self, identifier: Dataset, unique_key: str) -> FindResult:
        """Send one C-FIND and read every response; failures are returned, not raised."""
        assoc = self._associate()
        uids: set[str] = set()
        responses = 0
        final: int | None = None
        with collector_paused():
            started = time.perf_counter()
            responses_iter: Any = assoc.send_c_find(identifier, StudyRootQueryRetrieveInformationModelFind)
            for status, response in responses_iter:
                code = int(status.Status) if "Status" in status else None
                if code in _PENDING:
                    responses += 1
                    if response is not None:
                        uids.add(str(response.get(unique_key, "")))
                    continue
                final = code
            seconds = time.perf_counter() - started
        error = None
        if final is None:
            error = (
                f"no response within the {self.timeout:.0f} s DIMSE timeout after {responses} matches; "
                "association aborted"
                if seconds >= self.timeout
                else f"association aborted after {seconds:.1f} s and {responses} matches"
            )
        elif final != 0x0000:
            error = f"status 0x{final:04X}"
        return FindResult(seconds, frozenset(uids), responses, final, error)

    def close(self) -> None:
        if self.assoc is not None and self.assoc.is_established:
            self.assoc.release()
        self.assoc = None
        self.ae.shutdown()


def findscu(endpoint: Endpoint, query: Query, timeout: float = DEFAULT_TIMEOUT) -> tuple[float, int]:
    """(seconds, pending responses) of one query through DCMTK ``findscu``, process start-up included.

    A findscu that runs out of ``timeout`` (or fails) counts -1 responses, so
    it is an incorrect run in the report instead of the end of the benchmark.

    A C++ client decodes a response in microseconds, where pynetdicom takes
    about half a millisecond: on queries with thousands of matches this shows
    what each server costs, not what the client does. ``TCP_NODELAY=1`` as
    FACTS.md says.
    """
    wait = str(int(timeout))  # DIMSE and socket timeouts (findscu's socket default is 60 s)
    command = ["findscu", "-v", "-S", "-td", wait, "-ts", wait]
    command += ["-aet", CALLING_AE_TITLE, "-aec", endpoint.ae_title]
    for keyword, value in query.identifier_keys():
        command += ["-k", f"{keyword}={value}" if value else keyword]
    command += [endpoint.host, str(endpoint.port)]
    env = {**os.environ, "TCP_NODELAY": "1"}
    started = time.perf_counter()
    try:
        result = subprocess.run(
            command, env=env, capture_output=True, text=True, check=False, timeout=timeout + 30
        )
    except subprocess.TimeoutExpired:
        logger.warning("findscu to %s ran out of %.0f s for %s", endpoint.name, timeout, query.keys)
        return time.perf_counter() - started, -1
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        logger.warning(
            "findscu to %s exited with %d for %s: %s",
            endpoint.name,
            result.returncode,
            query.keys,
            " ".join(result.stderr.strip().splitlines()[-1:]),
        )
        return seconds, -1
    return seconds, (result.stdout + result.stderr).count("(Pending)")


@contextmanager
def find_client(
    endpoint: Endpoint, restarted: Callable[[], bool] | None = None, timeout: float = DEFAULT_TIMEOUT
) -> Iterator[FindClient]:
    client = FindClient(endpoint, restarted, timeout)
    try:
        yield client
    finally:
        client.close()
