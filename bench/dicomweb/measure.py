"""The measurements: QIDO-RS latency per query kind, WADO-RS throughput against reading the file."""

from __future__ import annotations

import http.client
import os
import socket
import statistics
import struct
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode

import httpx
import numpy as np
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from bench.query.queries import Query
from bench.query.servers import BenchError
from bench.timing import collector_paused

__all__ = [
    "LatencyRow",
    "Throughput",
    "make_dr",
    "measure_qido",
    "measure_transfer",
    "qido_url",
]

MEGABYTE = 1_000_000
_WAIT_SECONDS = 120  # the longest a client waits on the server before the run fails
_DICOM = 'multipart/related; type="application/dicom"'


@dataclass(frozen=True, slots=True)
class LatencyRow:
    kind: str
    label: str
    runs: int
    median_matches: float
    p50_ms: float
    p95_ms: float


@dataclass(frozen=True, slots=True)
class Throughput:
    name: str
    megabytes: float
    runs: int
    median_seconds: float

    @property
    def megabytes_per_second(self) -> float:
        return self.megabytes / self.median_seconds


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))]


def qido_url(query: Query, limit: int | None = None) -> str:
    """The QIDO-RS request a viewer makes for one query of the mix (values percent-encoded)."""
    if query.kind.level == "SERIES":
        return f"/dicomweb/studies/{query.keys['StudyInstanceUID']}/series"
    keys = {**query.keys, "limit": str(limit)} if limit else query.keys
    return "/dicomweb/studies?" + urlencode(keys)


# A viewer's study list asks for one page (OHIF asks for 101 studies): the
# one-year query is also timed that way, as an extra row.
PAGE_SIZE = 100


def _time_kind(
    client: httpx.Client, kind: str, label: str, drawn: list[Query], warmup: int, limit: int | None
) -> LatencyRow:
    for query in drawn[:warmup]:
        client.get(qido_url(query, limit)).raise_for_status()
    times, matches = [], []
    for query in drawn:
        with collector_paused():
            started = time.perf_counter()
            response = client.get(qido_url(query, limit))
            body = response.content
            times.append((time.perf_counter() - started) * 1000)
        response.raise_for_status()
        count = len(response.json()) if body else 0
        expected = min(query.expected, limit) if limit else query.expected
        if count != expected:
            raise BenchError(f"{qido_url(query, limit)} returned {count} matches, the corpus has {expected}")
        matches.append(count)
    return LatencyRow(
        kind, label, len(drawn), statistics.median(matches), percentile(times, 0.5), percentile(times, 0.95)
    )


def measure_qido(client: httpx.Client, queries: dict[str, list[Query]], warmup: int) -> list[LatencyRow]:
    """Each query once (after ``warmup`` unmeasured ones per kind); every answer's count is checked.

    The one-year kind is run a second time as a viewer's first page
    (``limit=PAGE_SIZE``), reported as its own row.
    """
    rows = []
    for kind, drawn in queries.items():
        rows.append(_time_kind(client, kind, drawn[0].kind.label, drawn, warmup, None))
        if kind == "year":
            label = f"one year, first page (limit={PAGE_SIZE})"
            rows.append(_time_kind(client, "year_page", label, drawn, warmup, PAGE_SIZE))
    return rows


def make_dr(rows: int = 2048, columns: int = 2048) -> Dataset:
    """An 8 MB digital radiograph (16-bit, synthetic noise), ready for ``store_instance``."""
    from pydicom.dataset import FileMetaDataset

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = "DX"
    ds.PatientID = "BENCH-DR"
    ds.PatientName = "Bench^DR"
    ds.StudyDate = "19990101"  # outside every corpus year: the query mix never finds it
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = rows, columns
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = np.random.default_rng(1).integers(0, 4096, (rows, columns), dtype="<u2").tobytes()
    return ds


class _RawClient:
    """The target's consumer: ``http.client`` on one keep-alive connection, the body read 1 MiB at a time.

    The same shape as the disk read it is compared with (a loop of 1 MiB
    reads). Each block it returns is allocated and copied once more than
    the disk read's (``_SocketClient`` shows what that costs).

    Its socket blocks (no Python timeout) and the kernel bounds each wait
    instead (``SO_RCVTIMEO``/``SO_SNDTIMEO``): with a Python timeout CPython
    polls the socket before every ``recv``, which cost this client 0.9 ms of
    an 8.4 MB answer (7.25 ms instead of 6.38 ms, same server, same run).
    """

    name = "http.client"

    def __init__(self, base_url: str, headers: dict[str, str]) -> None:
        host, _, port = base_url.removeprefix("http://").partition(":")
        self._conn = http.client.HTTPConnection(host, int(port), timeout=_WAIT_SECONDS)
        self._headers = headers

    def _blocking_socket(self) -> None:
        if self._conn.sock is None:
            self._conn.connect()
        sock = self._conn.sock
        if sock.gettimeout() is not None:
            sock.settimeout(None)
            bound = struct.pack("ll", _WAIT_SECONDS, 0)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, bound)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, bound)

    def receive(self, url: str) -> int:
        self._blocking_socket()
        self._conn.request("GET", url, headers=self._headers)
        response = self._conn.getresponse()
        if response.status != 200:
            raise BenchError(f"WADO-RS answered {response.status}: {response.read()[:300]!r}")
        received = 0
        while block := response.read(1 << 20):
            received += len(block)
        return received

    def close(self) -> None:
        self._conn.close()


class _RequestsClient:
    """``requests`` (urllib3), the HTTP stack of dicomweb-client, streaming 1 MiB chunks."""

    name = "requests (dicomweb-client's stack)"

    def __init__(self, base_url: str, headers: dict[str, str]) -> None:
        import requests

        self._session = requests.Session()
        self._session.headers.update(headers)
        self._base_url = base_url

    def receive(self, url: str) -> int:
        with self._session.get(self._base_url + url, stream=True, timeout=120) as response:
            response.raise_for_status()
            return sum(len(chunk) for chunk in response.iter_content(1 << 20))

    def close(self) -> None:
        self._session.close()


class _HttpxClient:
    """``httpx`` (h11, pure Python), the client of the QIDO-RS measurements, streaming 1 MiB chunks."""

    name = "httpx (h11)"

    def __init__(self, base_url: str, headers: dict[str, str]) -> None:
        self._client = httpx.Client(base_url=base_url, headers=headers, timeout=120)

    def receive(self, url: str) -> int:
        with self._client.stream("GET", url) as response:
            response.raise_for_status()
            return sum(len(chunk) for chunk in response.iter_raw(1 << 20))

    def close(self) -> None:
        self._client.close()


class _SocketClient:
    """A plain socket on one keep-alive connection, the body read into one reused 1 MiB buffer.

    ``http.client`` allocates, zeroes and copies every block it returns
    (``bytearray`` + ``readinto`` + ``tobytes``): measured, up to 2 ms of an
    8.4 MB answer spent in the client. This consumer copies each byte once,
    from the kernel, as a native client does; it shows what the server
    delivers. The target stays measured with ``http.client``.
    """

    name = "socket, one reused buffer"

    def __init__(self, base_url: str, headers: dict[str, str]) -> None:
        host, _, port = base_url.removeprefix("http://").partition(":")
        self._address = (host, int(port))
        self._host = f"{host}:{port}"
        self._headers = headers
        self._sock: socket.socket | None = None
        self._buffer = bytearray(1 << 20)

    def _connected(self) -> socket.socket:
        if self._sock is None:
            sock = socket.create_connection(self._address)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            bound = struct.pack("ll", _WAIT_SECONDS, 0)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, bound)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, bound)
            self._sock = sock
        return self._sock

    def receive(self, url: str) -> int:
        sock = self._connected()
        lines = [
            f"GET {url} HTTP/1.1",
            f"Host: {self._host}",
            *(f"{k}: {v}" for k, v in self._headers.items()),
        ]
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        view = memoryview(self._buffer)
        head = b""
        while b"\r\n\r\n" not in head:
            count = sock.recv_into(view)
            if not count:
                raise BenchError("the server closed the connection before its answer's headers")
            head += bytes(view[:count])
        header, _, body = head.partition(b"\r\n\r\n")
        status = header.split(b"\r\n", 1)[0]
        if b" 200 " not in status + b" ":
            raise BenchError(f"WADO-RS answered {status.decode('latin-1')}")
        fields = dict(line.split(b":", 1) for line in header.split(b"\r\n")[1:] if b":" in line)
        lengths = [value for name, value in fields.items() if name.strip().lower() == b"content-length"]
        if not lengths:
            raise BenchError("WADO-RS answered without Content-Length; this client reads only such answers")
        length = int(lengths[0])
        received = len(body)
        while received < length:
            count = sock.recv_into(view)
            if not count:
                raise BenchError(f"the server closed the connection after {received} of {length} bytes")
            received += count
        return received

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


WADO_CLIENTS = (_RawClient, _RequestsClient, _HttpxClient, _SocketClient)


def _read_file(path: Path, *, cold: bool) -> float:
    """Seconds to read ``path`` in 1 MiB blocks; cold: its pages dropped first (fsync, then DONTNEED)."""
    if cold:
        with open(path, "rb") as f:
            os.fsync(f.fileno())
            os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
    started = time.perf_counter()
    with open(path, "rb") as f:
        while f.read(1 << 20):
            pass
    return time.perf_counter() - started


def measure_transfer(
    base_url: str, token: str, url: str, path: Path, runs: int
) -> tuple[list[Throughput], Throughput, Throughput]:
    """WADO-RS of one instance with each of ``WADO_CLIENTS``, and reading its file warm and cold.

    Runs are interleaved (every client, then the cold and the warm read, then
    the next run), so load from other processes falls on all of them alike;
    the first run of each only warms up. Medians of ``runs``. Each WADO-RS
    answer is received whole (streamed, not parsed) and its size checked.
    """
    headers = {"Authorization": f"Bearer {token}", "Accept": _DICOM}
    size = path.stat().st_size
    clients = [client_class(base_url, headers) for client_class in WADO_CLIENTS]
    wado: list[list[float]] = [[] for _ in clients]
    warm: list[float] = []
    cold: list[float] = []
    received = 0
    try:
        for run in range(runs + 1):
            for client, seconds in zip(clients, wado, strict=True):
                with collector_paused():
                    started = time.perf_counter()
                    received = client.receive(url)
                    elapsed = time.perf_counter() - started
                if received < size:
                    raise BenchError(f"WADO-RS sent {received} bytes, the file has {size}")
                if run:
                    seconds.append(elapsed)
            cold_seconds, warm_seconds = _read_file(path, cold=True), _read_file(path, cold=False)
            if run:
                cold.append(cold_seconds)
                warm.append(warm_seconds)
    finally:
        for client in clients:
            client.close()
    results = [
        Throughput(
            f"WADO-RS retrieve instance, {client.name}", received / MEGABYTE, runs, statistics.median(seconds)
        )
        for client, seconds in zip(clients, wado, strict=True)
    ]
    return (
        results,
        Throughput(
            "read the same file from disk (page cache)", size / MEGABYTE, runs, statistics.median(warm)
        ),
        Throughput("read the same file from disk (cold)", size / MEGABYTE, runs, statistics.median(cold)),
    )
