"""multipart/related bodies (RFC 2387) in both directions, streamed.

Writing (WADO-RS): parts are produced lazily, stored files read in blocks of
at most 2 MiB (``FILE_BLOCK_SIZE``), so a study of large images never sits
in memory. Reading (STOW-RS): python-multipart's low-level
``MultipartParser`` (the one Starlette uses, indifferent to the multipart
subtype) scans the request stream; each part goes to its own
spooled temporary file (in memory up to 1 MiB, then under the data
directory's ``tmp/``, unlinked from birth), and the body size is counted as
it arrives so a client that lies about Content-Length is stopped too.
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import anyio.to_thread
from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser

from teleconsult.api.dicomweb.errors import InvalidRequestError, PayloadTooLargeError
from teleconsult.storage.files import raise_if_disk_full

__all__ = [
    "CHUNK_SIZE",
    "FILE_BLOCK_SIZE",
    "OutgoingPart",
    "ReceivedPart",
    "file_chunks",
    "multipart_length",
    "new_boundary",
    "read_multipart",
    "write_multipart",
]

CHUNK_SIZE = 1 << 20
FILE_BLOCK_SIZE = 2 << 20
_SPOOL_IN_MEMORY = 1 << 20
_PARSE_BATCH = 1 << 20


def new_boundary() -> str:
    return uuid.uuid4().hex


def file_chunks(
    path: Path, offset: int = 0, length: int | None = None, *, block_size: int = CHUNK_SIZE
) -> Iterator[bytes]:
    """``length`` bytes of ``path`` from ``offset`` (to the end without it), in ``block_size`` pieces."""
    with open(path, "rb", buffering=0) as f:
        if offset:
            f.seek(offset)
        left = length
        while left is None or left > 0:
            block = f.read(block_size if left is None else min(block_size, left))
            if not block:
                break
            if left is not None:
                left -= len(block)
            yield block


@dataclass(frozen=True, slots=True)
class OutgoingPart:
    """One part to send: its Content-Type, its body (produced only when sent) and its length if known."""

    content_type: str
    body: Callable[[], Iterable[bytes]]
    length: int | None = None
    location: str | None = None


def _part_header(boundary: str, part: OutgoingPart) -> bytes:
    lines = [f"--{boundary}", f"Content-Type: {part.content_type}"]
    if part.length is not None:
        lines.append(f"Content-Length: {part.length}")
    if part.location is not None:
        lines.append(f"Content-Location: {part.location}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("ascii")


def write_multipart(parts: Iterable[OutgoingPart], boundary: str) -> Iterator[bytes]:
    """The body of a multipart/related message, part by part.

    The CRLF ending a part goes out with the next delimiter: each small
    piece is one more write (and thread hop) on the way to the socket.
    """
    separator = b""
    for part in parts:
        yield separator + _part_header(boundary, part)
        yield from part.body()
        separator = b"\r\n"
    yield separator + f"--{boundary}--\r\n".encode("ascii")


async def read_ahead(blocks: Iterator[bytes]) -> AsyncIterator[bytes]:
    """``blocks`` produced on a worker thread, the next one read while the current one is sent.

    Starlette's own iteration of a plain iterator reads a block, sends it,
    and only then reads the next: reading the file and writing the socket
    take turns. Here they overlap, which for a large instance is most of
    the reading time saved. The iterator is advanced by one thread at a
    time and closed (its file with it) however the response ends.
    """
    done = object()

    def advance() -> Any:
        return next(blocks, done)

    pending = asyncio.ensure_future(anyio.to_thread.run_sync(advance))
    try:
        while True:
            block = await pending
            if block is done:
                return
            pending = asyncio.ensure_future(anyio.to_thread.run_sync(advance))
            yield block
    finally:
        if not pending.done():
            # The client went away mid-body: let the read in flight finish before closing.
            with contextlib.suppress(BaseException):
                await asyncio.shield(pending)
        close = getattr(blocks, "close", None)
        if close is not None:
            close()


def multipart_length(parts: Iterable[OutgoingPart], boundary: str) -> int | None:
    """The exact body length when every part's length is known (lets clients show progress)."""
    total = len(f"--{boundary}--\r\n")
    for part in parts:
        if part.length is None:
            return None
        total += len(_part_header(boundary, part)) + part.length + 2
    return total


@dataclass
class ReceivedPart:
    """One part of a received body: its headers (lower-case names) and its content, spooled."""

    headers: dict[str, str] = field(default_factory=dict)
    file: IO[bytes] | None = None
    size: int = 0

    def read(self) -> bytes:
        assert self.file is not None
        self.file.seek(0)
        return self.file.read()

    def close(self) -> None:
        if self.file is not None:
            self.file.close()


class _Collector:
    """python-multipart callbacks gathering parts into spooled files."""

    def __init__(self, spool_dir: Path) -> None:
        self.spool_dir = spool_dir
        self.parts: list[ReceivedPart] = []
        self.complete = False
        self._field = bytearray()
        self._value = bytearray()

    @property
    def current(self) -> ReceivedPart:
        return self.parts[-1]

    def on_part_begin(self) -> None:
        self.parts.append(ReceivedPart())

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._field += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end]

    def on_header_end(self) -> None:
        name = self._field.decode("latin-1").strip().lower()
        self.current.headers[name] = self._value.decode("latin-1").strip()
        self._field.clear()
        self._value.clear()

    def on_headers_finished(self) -> None:
        self.current.file = tempfile.SpooledTemporaryFile(  # noqa: SIM115 - closed by the caller
            max_size=_SPOOL_IN_MEMORY, dir=self.spool_dir
        )

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        part = self.current
        assert part.file is not None
        part.file.write(data[start:end])
        part.size += end - start

    def on_end(self) -> None:
        self.complete = True

    def callbacks(self) -> dict[str, Callable[..., None]]:
        return {
            "on_part_begin": self.on_part_begin,
            "on_header_field": self.on_header_field,
            "on_header_value": self.on_header_value,
            "on_header_end": self.on_header_end,
            "on_headers_finished": self.on_headers_finished,
            "on_part_data": self.on_part_data,
            "on_end": self.on_end,
        }

    def close(self) -> None:
        for part in self.parts:
            part.close()


async def read_multipart(
    stream: AsyncIterator[bytes], boundary: str, *, max_bytes: int, spool_dir: Path
) -> list[ReceivedPart]:
    """Every part of a multipart body, or an error with nothing kept.

    Raises
    ------
    PayloadTooLargeError
        More than ``max_bytes`` arrived (413); reading stops there.
    InvalidRequestError
        The body is not a well-formed multipart message with this boundary,
        ends before its closing delimiter, or holds no part (400).
    StorageFullError
        A part larger than what is kept in memory found no room on the disk (507).
    """
    if not boundary or len(boundary) > 70:
        raise InvalidRequestError("the multipart Content-Type needs a boundary parameter of 1-70 characters")
    collector = _Collector(spool_dir)
    parser = MultipartParser(boundary.encode("latin-1"), collector.callbacks())  # type: ignore[arg-type]
    received = 0
    pending = bytearray()
    try:
        async for chunk in stream:
            received += len(chunk)
            if received > max_bytes:
                raise PayloadTooLargeError(
                    f"the request body is larger than the limit of {max_bytes} bytes "
                    "(TELECONSULT_HTTP_MAX_UPLOAD_BYTES); send fewer instances per request"
                )
            pending += chunk
            if len(pending) >= _PARSE_BATCH:
                # Parsing and spooling touch the disk: off the event loop, in batches.
                await asyncio.to_thread(parser.write, bytes(pending))
                pending.clear()
        if pending:
            await asyncio.to_thread(parser.write, bytes(pending))
        parser.finalize()
    except MultipartParseError as exc:
        collector.close()
        raise InvalidRequestError(f"the multipart body is malformed: {exc}") from exc
    except OSError as exc:
        collector.close()
        raise_if_disk_full(exc, f"no space left in {spool_dir} to receive the upload")
        raise
    except BaseException:
        collector.close()
        raise
    if not collector.complete:
        collector.close()
        raise InvalidRequestError(
            f"the multipart body ends before its closing boundary --{boundary}-- (truncated upload?)"
        )
    if not collector.parts:
        raise InvalidRequestError("the multipart body holds no part")
    return collector.parts
