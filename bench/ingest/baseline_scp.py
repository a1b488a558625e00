"""A bare pynetdicom C-STORE SCP: the floor teleconsult is measured against.

It does what any durable receiver must do and nothing more: take the encoded
data set pynetdicom already holds, write it to a temporary file, fsync it and
rename it into place before answering Success. No parsing, no index, no
events. Its settings mirror teleconsult's gateway (same storage SOP classes,
uncompressed transfer syntaxes, 256 KiB maximum PDU, TCP_NODELAY on accepted
sockets) so that the ratio between the two is the cost of teleconsult's own
work. The directory is not fsynced after the rename, as the benchmark's brief
specifies for this baseline.

Standalone on purpose (only pynetdicom and the standard library): the
benchmark runs it as a subprocess with ``python baseline_scp.py``.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import socket
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, AllStoragePresentationContexts, evt
from pynetdicom.events import Event

MAXIMUM_PDU_SIZE = 262144  # teleconsult's default TELECONSULT_DICOM_MAX_PDU
_SAFE_UID = re.compile(r"^[0-9.]{1,64}$")


def _set_no_delay(event: Event) -> None:
    """pynetdicom leaves Nagle on; small responses would wait ~40 ms for a delayed ACK."""
    event.assoc.dul.socket.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def _handle_store(event: Event, output: Path, tmp: Path) -> int:
    """Write the data set durably under its SOP Instance UID; always 0x0000 (Success).

    Naming files by UID makes a resent instance replace itself, so the number
    of files is the number of distinct instances received.
    """
    data = event.encoded_dataset()
    uid = str(event.request.AffectedSOPInstanceUID or "").rstrip("\x00 ")
    name = uid if _SAFE_UID.match(uid) else uuid.uuid4().hex
    temp = tmp / f"{uuid.uuid4().hex}.part"
    with open(temp, "xb") as out:
        out.write(data)
        out.flush()
        os.fsync(out.fileno())
    os.replace(temp, output / f"{name}.dcm")
    return 0x0000


def build_ae(ae_title: str) -> AE:
    ae = AE(ae_title=ae_title)
    ae.maximum_pdu_size = MAXIMUM_PDU_SIZE
    ae.maximum_associations = 32
    for context in AllStoragePresentationContexts:
        ae.add_supported_context(context.abstract_syntax, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
    return ae


def serve(host: str, port: int, output: Path, ae_title: str) -> None:
    """Serve until SIGTERM or SIGINT, then shut the server down cleanly.

    Both signals are blocked before any server thread exists, so every thread
    inherits the mask and the main thread alone takes them with ``sigwait``:
    a signal the kernel would otherwise hand to an association thread can
    never leave the main thread waiting.
    """
    tmp = output.parent / f"{output.name}.tmp"
    output.mkdir(parents=True, exist_ok=True)
    tmp.mkdir(parents=True, exist_ok=True)
    handlers: list[Any] = [
        (evt.EVT_CONN_OPEN, _set_no_delay),
        (evt.EVT_C_STORE, _handle_store, [output, tmp]),
    ]
    stop_signals = {signal.SIGTERM, signal.SIGINT}
    signal.pthread_sigmask(signal.SIG_BLOCK, stop_signals)
    server = build_ae(ae_title).start_server((host, port), block=False, evt_handlers=handlers)
    try:
        signal.sigwait(stop_signals)
    finally:
        server.shutdown()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--output", type=Path, required=True, help="directory for received files")
    parser.add_argument("--ae-title", default="BASELINE")
    args = parser.parse_args(argv)
    serve(args.host, args.port, args.output, args.ae_title)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
