"""A raw-socket DICOM peer that sends PDUs out of order and mutated (PS3.8 9.3, state table 9-10).

pynetdicom as a requestor only ever sends what the state machine allows, so
the gateway's handling of the rest is untested by ordinary peers. Here each
connection plays one script: either a walk of the state table (a P-DATA-TF
before any A-ASSOCIATE-RQ, an A-RELEASE-RP nobody asked for, a second
A-ASSOCIATE-RQ on an established association, a half PDU and then silence
...) or a valid PDU with one random mutation (PDU type, length field, item
type or length, truncation, byte flips). After its PDUs the peer reads
until the server closes the connection, and records what came back
(A-ABORT, A-ASSOCIATE-RJ, nothing) and how long it took.

The expectation, per connection: the server answers or closes it before
``deadline`` seconds (its network timeout plus a margin: a half PDU is only
ended by that timeout) and never dies. After the run a normal association
(C-ECHO) must still work. Everything is seeded: ``script_for(seed)`` names
and rebuilds the connection of any seed a run reports.
"""

from __future__ import annotations

import contextlib
import random
import socket
import struct
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from bench.reliability.server import AE_TITLE, CALLING_AE_TITLE, HOST, Serve

__all__ = [
    "Connection",
    "PduFuzzResult",
    "PduScenarioResult",
    "Script",
    "fuzz",
    "run_pdu_fuzz",
    "script_for",
    "walk_names",
]

VERIFICATION = "1.2.840.10008.1.1"
US_IMAGE = "1.2.840.10008.5.1.4.1.1.6.1"
EXPLICIT_LE = "1.2.840.10008.1.2.1"
IMPLICIT_LE = "1.2.840.10008.1.2"
_APPLICATION_CONTEXT = "1.2.840.10008.3.1.1.1"
_PDU_NAMES = {
    1: "associate-rq",
    2: "associate-ac",
    3: "associate-rj",
    4: "p-data",
    5: "release-rq",
    6: "release-rp",
    7: "abort",
}


# -- PDUs (PS3.8 9.3) ------------------------------------------------------------------------------


def _pdu(pdu_type: int, body: bytes) -> bytes:
    return struct.pack(">BBI", pdu_type, 0, len(body)) + body


def _item(item_type: int, body: bytes) -> bytes:
    return struct.pack(">BBH", item_type, 0, len(body)) + body


def _ae(title: str) -> bytes:
    return title.encode("ascii").ljust(16)[:16]


def associate_rq(
    *,
    called: str = AE_TITLE,
    calling: str = CALLING_AE_TITLE,
    contexts: tuple[tuple[int, str, tuple[str, ...]], ...] = ((1, VERIFICATION, (EXPLICIT_LE, IMPLICIT_LE)),),
    max_pdu: int = 16384,
) -> bytes:
    items = _item(0x10, _APPLICATION_CONTEXT.encode())
    for context_id, abstract, syntaxes in contexts:
        body = struct.pack(">BBBB", context_id, 0, 0, 0) + _item(0x30, abstract.encode())
        body += b"".join(_item(0x40, syntax.encode()) for syntax in syntaxes)
        items += _item(0x20, body)
    user = _item(0x51, struct.pack(">I", max_pdu)) + _item(0x52, b"1.2.826.0.1.3680043.10.1")
    items += _item(0x50, user)
    return _pdu(0x01, struct.pack(">HH", 1, 0) + _ae(called) + _ae(calling) + bytes(32) + items)


def associate_ac() -> bytes:
    return _pdu(0x02, struct.pack(">HH", 1, 0) + _ae(AE_TITLE) + _ae(CALLING_AE_TITLE) + bytes(32))


def associate_rj() -> bytes:
    return _pdu(0x03, bytes([0, 1, 1, 1]))


def release_rq() -> bytes:
    return _pdu(0x05, bytes(4))


def release_rp() -> bytes:
    return _pdu(0x06, bytes(4))


def abort() -> bytes:
    return _pdu(0x07, bytes(4))


def _element(group: int, element: int, value: bytes) -> bytes:
    return struct.pack("<HHI", group, element, len(value)) + value


def c_echo_command(message_id: int = 1) -> bytes:
    """A C-ECHO-RQ command set (implicit VR little endian, as PS3.7 requires)."""
    uid = VERIFICATION.encode() + b"\x00" * (len(VERIFICATION) % 2)
    rest = (
        _element(0x0000, 0x0002, uid)
        + _element(0x0000, 0x0100, struct.pack("<H", 0x0030))
        + _element(0x0000, 0x0110, struct.pack("<H", message_id))
        + _element(0x0000, 0x0800, struct.pack("<H", 0x0101))
    )
    return _element(0x0000, 0x0000, struct.pack("<I", len(rest))) + rest


def p_data(payload: bytes, *, context_id: int = 1, control: int = 0x03) -> bytes:
    """One PDV: ``control`` 0x03 = last fragment of a command, 0x02 = last of a data set."""
    pdv = struct.pack(">IBB", len(payload) + 2, context_id, control) + payload
    return _pdu(0x04, pdv)


# -- scripts -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Script:
    """One connection: whether to associate first, then the PDUs (or raw bytes) to send."""

    name: str
    seed: int
    associate: bool
    pdus: tuple[bytes, ...]
    # after the PDUs, keep the connection open and silent (the server must end it)
    hold: bool = True
    # bytes of a hostile oversized PDU's body streamed after the PDUs (0: none)
    stream_bytes: int = 0


_WALKS: dict[str, tuple[bool, Callable[[], tuple[bytes, ...]]]] = {
    # Sta2, transport open, awaiting A-ASSOCIATE-RQ: anything else is AA-1 (A-ABORT) or AA-2 (close)
    "p_data_before_associate": (False, lambda: (p_data(c_echo_command()),)),
    "associate_ac_before_associate": (False, lambda: (associate_ac(),)),
    "associate_rj_before_associate": (False, lambda: (associate_rj(),)),
    "release_rq_before_associate": (False, lambda: (release_rq(),)),
    "release_rp_before_associate": (False, lambda: (release_rp(),)),
    "abort_before_associate": (False, lambda: (abort(),)),
    "unknown_pdu_type": (False, lambda: (_pdu(0x08, bytes(4)),)),
    "pdu_type_zero": (False, lambda: (_pdu(0x00, bytes(4)),)),
    "silent_connection": (False, lambda: ()),
    "half_header": (False, lambda: (b"\x01\x00\x00",)),
    "header_only": (False, lambda: (struct.pack(">BBI", 1, 0, 200),)),
    "half_associate_rq": (False, lambda: (associate_rq()[:40],)),
    "huge_length_then_silence": (False, lambda: (struct.pack(">BBI", 1, 0, 0xFFFFFFFF),)),
    "associate_rq_wrong_called_ae": (False, lambda: (associate_rq(called="NOT_US"),)),
    "associate_rq_unknown_calling_ae": (False, lambda: (associate_rq(calling="STRANGER"),)),
    "associate_rq_no_contexts": (False, lambda: (associate_rq(contexts=()),)),
    # Sta6, association established: an A-ASSOCIATE-RQ/AC/RJ or A-RELEASE-RP is AA-8 (A-ABORT)
    "second_associate_rq": (True, lambda: (associate_rq(),)),
    "associate_ac_when_established": (True, lambda: (associate_ac(),)),
    "associate_rj_when_established": (True, lambda: (associate_rj(),)),
    "release_rp_unsolicited": (True, lambda: (release_rp(),)),
    "unknown_pdu_when_established": (True, lambda: (_pdu(0x09, bytes(8)),)),
    "p_data_unknown_context": (True, lambda: (p_data(c_echo_command(), context_id=255),)),
    "p_data_even_context": (True, lambda: (p_data(c_echo_command(), context_id=2),)),
    "p_data_data_before_command": (
        True,
        lambda: (p_data(b"\x08\x00\x16\x00\x02\x00\x00\x00ab", control=0x02),),
    ),
    "p_data_garbage_command": (True, lambda: (p_data(bytes(range(64))),)),
    "p_data_empty": (True, lambda: (_pdu(0x04, b""),)),
    "p_data_pdv_longer_than_pdu": (True, lambda: (_pdu(0x04, struct.pack(">IBB", 5000, 1, 3) + b"xx"),)),
    "half_p_data": (True, lambda: (p_data(c_echo_command())[:20],)),
    "release_rq_twice": (True, lambda: (release_rq(), release_rq())),
    "p_data_after_release_rq": (True, lambda: (release_rq(), p_data(c_echo_command()))),
    "abort_then_p_data": (True, lambda: (abort(), p_data(c_echo_command()))),
    "idle_association": (True, lambda: ()),
    "echo_then_release": (True, lambda: (p_data(c_echo_command()), release_rq())),
}


def walk_names() -> list[str]:
    return list(_WALKS)


def _mutated(rng: random.Random) -> tuple[str, bool, bytes]:
    """A valid PDU with one random change: (what was done, associate first, the bytes)."""
    kind = rng.choice(("associate-rq", "p-data", "release-rq", "abort"))
    if kind == "associate-rq":
        contexts = tuple(
            (2 * i + 1, rng.choice((VERIFICATION, US_IMAGE)), (EXPLICIT_LE, IMPLICIT_LE))
            for i in range(rng.choice((1, 2, 128)))
        )
        pdu = bytearray(associate_rq(contexts=contexts, max_pdu=rng.choice((0, 1, 16384, 0xFFFFFFFF))))
    elif kind == "p-data":
        pdu = bytearray(
            p_data(c_echo_command(rng.randrange(65536)), control=rng.choice((3, 3, 1, 0, 2, 0xFF)))
        )
    else:
        pdu = bytearray(release_rq() if kind == "release-rq" else abort())
    how = rng.choice(("type", "length", "truncate", "flip", "item", "append", "reserved"))
    if how == "type":
        pdu[0] = rng.choice((0, 1, 2, 3, 4, 5, 6, 7, 8, 0x7F, 0xFF))
    elif how == "length":
        value = rng.choice((0, 1, len(pdu) - 7, len(pdu) - 5, 0x7FFFFFFF, 0xFFFFFFFF, rng.randrange(1 << 32)))
        struct.pack_into(">I", pdu, 2, max(0, value))
    elif how == "truncate":
        pdu = pdu[: rng.randrange(1, len(pdu))]
    elif how == "flip":
        for _ in range(rng.randint(1, 6)):
            pdu[rng.randrange(len(pdu))] = rng.randrange(256)
    elif how == "item" and len(pdu) > 14:
        # an item header of A-ASSOCIATE-RQ (after the 74-byte fixed part) or the PDV header of a P-DATA
        at = 74 if kind == "associate-rq" else 6
        if rng.random() < 0.5:
            pdu[at] = rng.randrange(256)
        else:
            struct.pack_into(
                ">H" if kind == "associate-rq" else ">I",
                pdu,
                at + (2 if kind == "associate-rq" else 0),
                rng.choice((0, 1, 0xFFFF if kind == "associate-rq" else 0xFFFFFFFF)),
            )
    elif how == "append":
        pdu += rng.randbytes(rng.randrange(1, 64))
    else:
        pdu[1] = rng.randrange(1, 256)
    return f"mutated {kind}: {how}", kind != "associate-rq", bytes(pdu)


def script_for(seed: int, *, walk_share: float = 0.5) -> Script:
    """The connection of ``seed``: a state-table walk or a mutated PDU, 1 to 3 of them."""
    rng = random.Random(f"teleconsult-pdu:{seed}")
    if rng.random() < walk_share:
        name = rng.choice(list(_WALKS))
        associate, pdus = _WALKS[name]
        return Script(name, seed, associate, pdus(), hold=rng.random() < 0.8)
    name, associate, pdu = _mutated(rng)
    pdus = [pdu]
    while rng.random() < 0.3 and len(pdus) < 3:
        pdus.append(_mutated(rng)[2])
    return Script(name, seed, associate, tuple(pdus), hold=rng.random() < 0.8)


def oversized(seed: int, megabytes: int) -> Script:
    """A P-DATA-TF header claiming 4 GiB, then ``megabytes`` MiB of body: does the server buffer it all?"""
    return Script(
        "oversized_p_data", seed, True, (struct.pack(">BBI", 4, 0, 0xFFFFFFFF),), stream_bytes=megabytes << 20
    )


# -- running them ----------------------------------------------------------------------------------------


@dataclass
class Connection:
    script: str
    seed: int
    pdus_sent: int
    answered: tuple[str, ...]  # PDU types the server sent, in order
    end: str  # "closed", "reset", "hang", "refused"
    seconds: float


def _read_pdus(sock: socket.socket, deadline: float) -> tuple[list[str], str]:
    """PDU types received until the server closes the connection (or ``deadline``)."""
    buffer = b""
    seen: list[str] = []
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return seen, "hang"
        sock.settimeout(left)
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            return seen, "hang"
        except ConnectionResetError:
            return seen, "reset"
        except OSError as exc:
            return seen, f"error {type(exc).__name__}"
        if not chunk:
            return seen, "closed"
        buffer += chunk
        while len(buffer) >= 6:
            pdu_type, _, length = struct.unpack_from(">BBI", buffer)
            if len(buffer) < 6 + length:
                break
            seen.append(_PDU_NAMES.get(pdu_type, f"type {pdu_type:#x}"))
            buffer = buffer[6 + length :]


def _send(sock: socket.socket, data: bytes) -> bool:
    try:
        sock.sendall(data)
        return True
    except OSError:
        return False


def run_script(port: int, script: Script, deadline_seconds: float) -> Connection:
    started = time.monotonic()
    deadline = started + deadline_seconds
    try:
        sock = socket.create_connection((HOST, port), timeout=10)
    except OSError as exc:
        return Connection(script.name, script.seed, 0, (), f"refused {type(exc).__name__}", 0.0)
    answered: list[str] = []
    sent = 0
    with sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if script.associate:
            sock.sendall(associate_rq())
            sent += 1
            # the A-ASSOCIATE-AC: read exactly one PDU
            got, end = _read_one(sock, deadline)
            answered += got
            if end or got != ["associate-ac"]:
                return Connection(
                    script.name,
                    script.seed,
                    sent,
                    tuple(answered),
                    end or "not accepted",
                    time.monotonic() - started,
                )
        for pdu in script.pdus:
            if not _send(sock, pdu):
                break
            sent += 1
            time.sleep(0.002)
        if script.stream_bytes:
            block = bytes(1 << 16)
            for _ in range(script.stream_bytes // len(block)):
                if time.monotonic() > deadline or not _send(sock, block):
                    break
        if not script.hold:
            with contextlib.suppress(OSError):  # the server may have closed already
                sock.shutdown(socket.SHUT_WR)
        got, end = _read_pdus(sock, deadline)
        answered += got
    return Connection(script.name, script.seed, sent, tuple(answered), end, time.monotonic() - started)


def _read_one(sock: socket.socket, deadline: float) -> tuple[list[str], str]:
    """One whole PDU's type, or how the connection ended before it came."""
    buffer = b""
    while True:
        if len(buffer) >= 6:
            pdu_type, _, length = struct.unpack_from(">BBI", buffer)
            if len(buffer) >= 6 + length:
                return [_PDU_NAMES.get(pdu_type, f"type {pdu_type:#x}")], ""
        left = deadline - time.monotonic()
        if left <= 0:
            return [], "hang"
        sock.settimeout(left)
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            return [], "hang"
        except OSError as exc:
            return [], f"error {type(exc).__name__}"
        if not chunk:
            return [], "closed"
        buffer += chunk


@dataclass
class PduFuzzResult:
    pdus: int = 0
    connections: list[Connection] = field(default_factory=list)
    ends: Counter[str] = field(default_factory=Counter)
    answers: Counter[str] = field(default_factory=Counter)
    by_script: Counter[str] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)
    slowest: float = 0.0


def fuzz(port: int, *, pdus: int, seed: int, deadline_seconds: float, concurrency: int = 8) -> PduFuzzResult:
    """Connections from ``seed`` on until ``pdus`` PDUs have been sent, ``concurrency`` at a time."""
    result = PduFuzzResult()
    lock = threading.Lock()
    next_seed = [seed]

    def worker() -> None:
        while True:
            with lock:
                if result.pdus >= pdus:
                    return
                current = next_seed[0]
                next_seed[0] += 1
            script = script_for(current)
            try:
                connection = run_script(port, script, deadline_seconds)
            except Exception as exc:  # a harness fault is reported, never a silent thread death
                connection = Connection(script.name, script.seed, 0, (), f"harness {type(exc).__name__}", 0.0)
            with lock:
                result.pdus += max(connection.pdus_sent, 1)
                result.connections.append(connection)
                result.ends[connection.end] += 1
                result.answers[" ".join(connection.answered) or "nothing"] += 1
                result.by_script[connection.script.split(":")[0]] += 1
                result.slowest = max(result.slowest, connection.seconds)
                if connection.end == "hang" or connection.end.startswith(("refused", "harness")):
                    result.failures.append(f"{connection.script} (seed {connection.seed}): {connection.end}")

    threads = [threading.Thread(target=worker, name=f"pdu-fuzz-{i}", daemon=True) for i in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return result


def _echo(port: int) -> str:
    """A C-ECHO on a normal association: its status, or how the association failed."""
    from dicom_gateway.sockets import RequestorAE

    ae = RequestorAE(ae_title=CALLING_AE_TITLE)
    ae.add_requested_context(VERIFICATION, EXPLICIT_LE)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 10
    assoc = ae.associate(HOST, port, ae_title=AE_TITLE)
    if not assoc.is_established:
        return "rejected" if assoc.is_rejected else "association failed"
    try:
        status = assoc.send_c_echo()
        return f"{int(getattr(status, 'Status', -1)):#06x}"
    finally:
        assoc.release()


# -- the scenario -------------------------------------------------------------------------------------


@dataclass
class PduScenarioResult:
    seed: int
    network_timeout: float
    deadline: float
    fuzz: PduFuzzResult = field(default_factory=PduFuzzResult)
    oversized_mib: int = 0
    # the server's RSS before and after one peer streamed ``oversized_mib`` MiB into one PDU
    oversized_rss_mib: tuple[float, float] = (0.0, 0.0)
    oversized: Connection | None = None
    rss_before_mib: float = 0.0
    rss_max_mib: float = 0.0
    rss_after_mib: float = 0.0
    # threads of the server's processes before and once the connections were over: an association
    # whose threads outlive its connection holds a place under the association limit
    threads: tuple[int, int] = (0, 0)
    alive: bool = False
    echo_after: str = ""
    tracebacks: int = 0
    seconds: float = 0.0
    exit_status: int | None = None
    stop_log: str = ""


def run_pdu_fuzz(
    run_dir: Path,
    *,
    pdus: int = 10_000,
    seed: int = 0,
    timeout: float = 5.0,
    concurrency: int = 8,
    oversized_mib: int = 256,
    workers: int = 1,
) -> PduScenarioResult:
    """``pdus`` PDUs over many connections against ``serve`` with ACSE/network timeouts of ``timeout`` s.

    First one peer streams ``oversized_mib`` MiB into a P-DATA-TF that claims
    4 GiB (the server should drop it, not buffer it); then the scripts; then a
    C-ECHO on a normal association.
    """
    from bench.reliability.scenarios import settle
    from bench.reliability.senders import quiet_pynetdicom

    extra = {
        "TELECONSULT_DICOM_ACSE_TIMEOUT": str(timeout),
        "TELECONSULT_DICOM_NETWORK_TIMEOUT": str(timeout),
        "TELECONSULT_DICOM_DIMSE_TIMEOUT": str(timeout),
    }
    deadline = timeout + 5.0
    with Serve(
        run_dir, workers=workers, http=False, max_associations=4 * concurrency, extra_env=extra
    ) as serve:
        result = PduScenarioResult(seed, timeout, deadline, oversized_mib=oversized_mib)
        serve.start()
        baseline = settle(serve)
        result.rss_before_mib = result.rss_max_mib = baseline.rss_mib
        stop = threading.Event()

        def sample() -> None:
            while not stop.wait(0.1):
                try:
                    result.rss_max_mib = max(result.rss_max_mib, serve.stats().rss_mib)
                except Exception:  # the server died: judged below
                    return

        sampler = threading.Thread(target=sample, name="pdu-rss", daemon=True)
        sampler.start()
        started = time.perf_counter()
        try:
            if oversized_mib:
                before = serve.stats().rss_mib
                result.oversized = run_script(serve.dicom_port, oversized(seed, oversized_mib), deadline + 60)
                result.oversized_rss_mib = (before, result.rss_max_mib)
            result.fuzz = fuzz(
                serve.dicom_port, pdus=pdus, seed=seed, deadline_seconds=deadline, concurrency=concurrency
            )
        finally:
            stop.set()
            sampler.join(5)
            result.seconds = time.perf_counter() - started
        result.alive = serve.process is not None and serve.process.poll() is None
        if result.alive:
            after = settle(serve, baseline, timeout=deadline + 10)
            result.rss_after_mib = after.rss_mib
            result.threads = (baseline.threads, after.threads)
            with quiet_pynetdicom():
                result.echo_after = _echo(serve.dicom_port)
        result.exit_status = serve.stop()
        if result.exit_status != 0:
            result.stop_log = serve.log_tail(150)
        result.tracebacks = sum(
            path.read_text(errors="replace").count("Traceback (most recent call last)") for path in serve.logs
        )
    return result
