"""Malformed input through C-STORE and STOW-RS against a real ``teleconsult serve``.

Each route gets its own seeds (``seed .. seed + files - 1`` over C-STORE, the
next ``files`` over STOW-RS), so ``mutate(seed)`` reproduces any mutant a
run names. What is judged afterwards is what the issue asks of hostile
input: the server is alive and healthy, nothing answered 5xx or failed with
an unhandled exception, every answer was a success or a clear refusal (and
the controls were stored, the UIDs that cannot be stored refused), every
instance answered as stored is in the index byte for byte, nothing was
written outside the data directory, and RSS stayed bounded.

C-STORE: pynetdicom sends the mutated data set from a Part 10 file as raw
bytes (``STORE_SEND_CHUNKED_DATASET``: nothing is decoded or re-encoded on
our side), several per association. A mutant pynetdicom refuses to send
(its UID too long for the command, no presentation context for its claimed
SOP class) is skipped and counted.
"""

from __future__ import annotations

import contextlib
import re
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from pydicom import config as pydicom_config
from pynetdicom import _config

from bench.reliability.mutations import (
    DEFLATED,
    ECG_12_LEAD,
    EXPLICIT_BE,
    EXPLICIT_LE,
    IMPLICIT_LE,
    REFUSED,
    STORED,
    US_IMAGE,
    Mutant,
    encode_file_meta,
    mutate,
)
from bench.reliability.scenarios import STOW_PASSWORD, STOW_USER, add_stow_user, settle
from bench.reliability.senders import Ack, join_all, quiet_pynetdicom, run_threads
from bench.reliability.server import AE_TITLE, CALLING_AE_TITLE, HOST, Serve
from bench.reliability.verify import Verification, verify
from dicom_gateway.sockets import RequestorAE

__all__ = ["MalformedResult", "run_malformed"]

_BOUNDARY = "malformed-boundary-2b9c"
_CONTENT_TYPE = f'multipart/related; type="application/dicom"; boundary={_BOUNDARY}'
_REFERENCED = "00081199"
_FAILED = "00081198"
_SOP_INSTANCE = "00081155"
_FAILURE_REASON = "00081197"
# C-STORE 0xC211 is pynetdicom's answer when a handler raised; STOW-RS 0x0110 our "processing failure"
_UNHANDLED = {"c-store": {"0xc211"}, "stow-rs": {"part 0x0110"}}
_TRACEBACK = re.compile(r"^Traceback \(most recent call last\)", re.MULTILINE)


@dataclass
class RouteResult:
    """One route's answers: by outcome, and by (mutation, outcome)."""

    sent: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    outcomes: Counter[str] = field(default_factory=Counter)
    by_mutation: Counter[tuple[str, str]] = field(default_factory=Counter)
    acks: list[Ack] = field(default_factory=list)
    # answers a sound server does not give: a control refused, a bad UID stored, an unhandled error
    unexpected: list[str] = field(default_factory=list)
    http_5xx: int = 0
    requests: int = 0
    errors: list[str] = field(default_factory=list)


@dataclass
class MalformedResult:
    files: int
    seed: int
    processes: int
    cstore: RouteResult = field(default_factory=RouteResult)
    stow: RouteResult = field(default_factory=RouteResult)
    alive: bool = False
    health_checks: int = 0
    health_failures: list[str] = field(default_factory=list)
    rss_before_mib: float = 0.0
    rss_max_mib: float = 0.0
    # the highest RSS in the first and in the second half of the run: memory that is bounded
    # levels off, memory that leaks goes on rising
    rss_halves_mib: tuple[float, float] = (0.0, 0.0)
    rss_samples: list[tuple[float, float]] = field(default_factory=list)
    rss_after_mib: float = 0.0
    # files that appeared outside the data directory (the run directory, the server's TMPDIR, /tmp)
    outside: list[str] = field(default_factory=list)
    tracebacks: int = 0
    stuck_senders: list[str] = field(default_factory=list)
    seconds: float = 0.0
    exit_status: int | None = None
    stop_log: str = ""
    verification: Verification | None = None

    @property
    def acks(self) -> list[Ack]:
        return [*self.cstore.acks, *self.stow.acks]


@contextlib.contextmanager
def _lenient_pydicom() -> Iterator[None]:
    """pydicom's validation off while hostile UIDs pass through pynetdicom (restored afterwards)."""
    settings = pydicom_config.settings
    previous = (
        settings.reading_validation_mode,
        settings.writing_validation_mode,
        _config.STORE_SEND_CHUNKED_DATASET,
    )
    settings.reading_validation_mode = pydicom_config.IGNORE
    settings.writing_validation_mode = pydicom_config.IGNORE
    _config.STORE_SEND_CHUNKED_DATASET = True
    try:
        yield
    finally:
        settings.reading_validation_mode, settings.writing_validation_mode = previous[:2]
        _config.STORE_SEND_CHUNKED_DATASET = previous[2]


def _judge(route: RouteResult, mutant: Mutant, outcome: str, via: str) -> None:
    route.outcomes[outcome] += 1
    route.by_mutation[(mutant.mutation, outcome)] += 1
    stored = outcome in ("0x0000", "stored")
    if stored:
        route.acks.append(Ack(mutant.sop_instance_uid, mutant.sha256, via))
    if mutant.expect == STORED and not stored:
        route.unexpected.append(f"{mutant.label} refused ({outcome})")
    elif mutant.expect == REFUSED and stored:
        route.unexpected.append(f"{mutant.label} stored")
    elif outcome in _UNHANDLED[via]:
        route.unexpected.append(f"{mutant.label} failed unhandled ({outcome})")


# -- C-STORE ---------------------------------------------------------------------------------------


def _cstore_ae(timeout: float) -> RequestorAE:
    ae = RequestorAE(ae_title=CALLING_AE_TITLE)
    for sop_class_uid in (US_IMAGE, ECG_12_LEAD):
        for syntax in (EXPLICIT_LE, IMPLICIT_LE, EXPLICIT_BE, DEFLATED):
            ae.add_requested_context(sop_class_uid, syntax)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout
    return ae


@dataclass
class _CStoreSender:
    port: int
    seeds: list[int]
    spool: Path
    per_association: int
    route: RouteResult
    timeout: float = 30.0

    def run(self) -> None:
        ae = _cstore_ae(self.timeout)
        self.spool.mkdir(parents=True, exist_ok=True)
        assoc = None
        sent_on = 0
        try:
            for seed in self.seeds:
                mutant = mutate(seed)
                if assoc is None or not assoc.is_established or sent_on >= self.per_association:
                    if assoc is not None and assoc.is_established:
                        assoc.release()
                    assoc = ae.associate(HOST, self.port, ae_title=AE_TITLE)
                    sent_on = 0
                    if not assoc.is_established:
                        self.route.errors.append(f"association for {mutant.label} not established")
                        self.route.skipped["no association"] += 1
                        assoc = None
                        continue
                path = self.spool / f"{seed}.dcm"
                meta = encode_file_meta(
                    mutant.sop_class_uid, mutant.sop_instance_uid, mutant.transfer_syntax_uid
                )
                path.write_bytes(b"\x00" * 128 + b"DICM" + meta + mutant.data_set)
                try:
                    status = assoc.send_c_store(path)
                except Exception as exc:  # pynetdicom will not send it: counted, not judged
                    self.route.skipped[f"{type(exc).__name__}"] += 1
                    continue
                finally:
                    path.unlink()
                sent_on += 1
                self.route.sent += 1
                code = getattr(status, "Status", None)
                if code is None:
                    outcome = "aborted" if assoc.is_aborted else "no answer"
                else:
                    outcome = f"{int(code):#06x}"
                _judge(self.route, mutant, outcome, "c-store")
        finally:
            if assoc is not None and assoc.is_established:
                assoc.release()


# -- STOW-RS ---------------------------------------------------------------------------------------


def _token(client: httpx.Client) -> str:
    response = client.post("/api/auth/token", data={"username": STOW_USER, "password": STOW_PASSWORD})
    response.raise_for_status()
    return str(response.json()["access_token"])


def _body(mutants: list[Mutant]) -> bytes:
    parts = [
        f"--{_BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n".encode() + m.part10() for m in mutants
    ]
    return b"\r\n".join(parts) + f"\r\n--{_BOUNDARY}--\r\n".encode()


def _items(body: dict[str, Any], sequence: str) -> list[dict[str, Any]]:
    value = body.get(sequence, {}).get("Value", [])
    return value if isinstance(value, list) else []


def _value(item: dict[str, Any], tag: str) -> Any:
    values = item.get(tag, {}).get("Value") or [None]
    return values[0]


@dataclass
class _StowSender:
    base_url: str
    seeds: list[int]
    per_request: int
    route: RouteResult

    def run(self) -> None:
        with httpx.Client(base_url=self.base_url, timeout=120) as client:
            token = _token(client)
            for first in range(0, len(self.seeds), self.per_request):
                batch = [mutate(seed) for seed in self.seeds[first : first + self.per_request]]
                try:
                    response = client.post(
                        "/dicomweb/studies",
                        content=_body(batch),
                        headers={"Authorization": f"Bearer {token}", "Content-Type": _CONTENT_TYPE},
                    )
                except httpx.HTTPError as exc:
                    self.route.errors.append(f"{batch[0].label}..: {type(exc).__name__}: {exc}")
                    for mutant in batch:
                        _judge(self.route, mutant, f"transport {type(exc).__name__}", "stow-rs")
                    continue
                self.route.requests += 1
                self.route.sent += len(batch)
                self._judge(batch, response)

    def _judge(self, batch: list[Mutant], response: httpx.Response) -> None:
        if response.status_code >= 500:
            self.route.http_5xx += 1
            self.route.errors.append(
                f"{batch[0].label}..: HTTP {response.status_code}: {response.text[:300]}"
            )
        if response.status_code not in (200, 202, 409):
            outcome = f"HTTP {response.status_code}"
            if response.headers.get("content-type", "").startswith("application/problem+json"):
                outcome += f" {response.json().get('code', '?')}"
            for mutant in batch:
                _judge(self.route, mutant, outcome, "stow-rs")
            return
        body = response.json()
        stored = {str(_value(item, _SOP_INSTANCE)) for item in _items(body, _REFERENCED)}
        failed = {
            str(_value(item, _SOP_INSTANCE)): _value(item, _FAILURE_REASON) for item in _items(body, _FAILED)
        }
        claimed = {mutant.sop_instance_uid for mutant in batch}
        for uid in stored - claimed:
            self.route.unexpected.append(f"stored under a UID no part claimed: {uid[:80]!r}")
        for mutant in batch:
            if mutant.sop_instance_uid in stored:
                outcome = "stored"
            elif mutant.sop_instance_uid in failed:
                outcome = f"part {int(failed[mutant.sop_instance_uid] or 0):#06x}"
            else:
                reasons = sorted({f"{int(r or 0):#06x}" for r in failed.values()})
                outcome = f"part {reasons[0] if len(reasons) == 1 else 'unmatched'}"
            _judge(self.route, mutant, outcome, "stow-rs")


# -- what the server does meanwhile --------------------------------------------------------------------


class _Watch:
    """Samples the server's RSS and asks /healthz once a second while the senders run."""

    def __init__(self, serve: Serve, result: MalformedResult) -> None:
        self.serve = serve
        self.result = result
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="malformed-watch", daemon=True)

    def _run(self) -> None:
        next_health = 0.0
        with httpx.Client(base_url=f"http://{HOST}:{self.serve.http_port}", timeout=10) as client:
            while not self.stop.wait(0.2):
                with contextlib.suppress(Exception):
                    rss = self.serve.stats().rss_mib
                    self.result.rss_max_mib = max(self.result.rss_max_mib, rss)
                    self.result.rss_samples.append((time.monotonic(), rss))
                if time.monotonic() >= next_health:
                    next_health = time.monotonic() + 1.0
                    self.check_health(client)

    def check_health(self, client: httpx.Client) -> None:
        self.result.health_checks += 1
        try:
            response = client.get("/healthz")
        except httpx.HTTPError as exc:
            self.result.health_failures.append(f"{type(exc).__name__}: {exc}")
            return
        if response.status_code != 200:
            self.result.health_failures.append(f"HTTP {response.status_code}: {response.text[:200]}")


def _halves(samples: list[tuple[float, float]]) -> tuple[float, float]:
    if not samples:
        return 0.0, 0.0
    middle = (samples[0][0] + samples[-1][0]) / 2
    first = [rss for at, rss in samples if at <= middle]
    second = [rss for at, rss in samples if at > middle] or first
    return max(first), max(second)


def _snapshot(*roots: Path) -> set[str]:
    found = set()
    for root in roots:
        if root.is_dir():
            found.update(str(path) for path in root.rglob("*"))
    return found


def _canaries(seeds: range) -> list[str]:
    """Where the traversal UIDs of ``mutations`` would land, absolutely: none may exist afterwards."""
    return [f"/tmp/canary-{seed}" for seed in seeds if Path(f"/tmp/canary-{seed}").exists()]


def run_malformed(
    run_dir: Path,
    *,
    database_url: str | None = None,
    workers: int = 1,
    files: int = 10_000,
    seed: int = 0,
    per_association: int = 25,
    per_request: int = 4,
    senders: int = 2,
    timeout: float = 30.0,
    extra_env: dict[str, str] | None = None,
    keep_log: Path | None = None,
) -> MalformedResult:
    """``files`` mutants over C-STORE and as many over STOW-RS, ``senders`` threads each, then the checks."""
    with Serve(run_dir, database_url=database_url, workers=workers, extra_env=extra_env) as serve:
        result = MalformedResult(files, seed, serve.processes)
        add_stow_user(serve)
        canary = run_dir / "canary"
        canary.mkdir()
        spool = run_dir.parent / f"{run_dir.name}-spool"
        data_dir = serve.data_dir.resolve()
        with quiet_pynetdicom(), _lenient_pydicom():
            serve.start()
            watched = [run_dir, serve.system_tmp]
            before = {path for path in _snapshot(*watched) if not path.startswith(str(data_dir))}
            result.rss_before_mib = result.rss_max_mib = settle(serve).rss_mib
            cstore_seeds = list(range(seed, seed + files))
            stow_seeds = list(range(seed + files, seed + 2 * files))
            workers_ = [
                _CStoreSender(
                    serve.dicom_port,
                    cstore_seeds[i::senders],
                    spool / str(i),
                    per_association,
                    result.cstore,
                    timeout,
                )
                for i in range(senders)
            ] + [
                _StowSender(
                    f"http://{HOST}:{serve.http_port}", stow_seeds[i::senders], per_request, result.stow
                )
                for i in range(senders)
            ]
            watch = _Watch(serve, result)
            watch.thread.start()
            started = time.perf_counter()
            try:
                result.stuck_senders = join_all(run_threads(workers_, "malformed"), 3600)
            finally:
                result.seconds = time.perf_counter() - started
                watch.stop.set()
                watch.thread.join(15)
                result.rss_halves_mib = _halves(result.rss_samples)
            result.alive = serve.process is not None and serve.process.poll() is None
            if result.alive:
                with httpx.Client(base_url=f"http://{HOST}:{serve.http_port}", timeout=10) as client:
                    watch.check_health(client)
                result.rss_after_mib = settle(serve).rss_mib
            after = {path for path in _snapshot(*watched) if not path.startswith(str(data_dir))}
            new = sorted(path for path in after - before if not re.search(r"/serve-\d+\.log$", path))
            result.outside = new + [str(path) for path in canary.iterdir()]
            result.outside += _canaries(range(seed, seed + 2 * files))
        result.exit_status = serve.stop()
        if result.exit_status != 0:
            result.stop_log = serve.log_tail(150)
        result.tracebacks = sum(
            len(_TRACEBACK.findall(path.read_text(errors="replace"))) for path in serve.logs
        )
        if keep_log is not None:  # the server's log, for a look at what it said
            keep_log.write_bytes(b"".join(path.read_bytes() for path in serve.logs))
        result.verification = verify(serve, result.acks)
        with contextlib.suppress(OSError):
            for path in sorted(spool.rglob("*"), reverse=True):
                path.rmdir() if path.is_dir() else path.unlink()
            spool.rmdir()
    return result


def summary(result: MalformedResult) -> dict[str, Any]:
    """The figures of a run as plain data (for the table and ``--json``)."""
    return {
        route: {
            "sent": outcome.sent,
            "skipped": dict(outcome.skipped),
            "outcomes": dict(outcome.outcomes.most_common()),
            "by_mutation": {f"{m} -> {o}": n for (m, o), n in sorted(outcome.by_mutation.items())},
            "unexpected": outcome.unexpected[:50],
            "http_5xx": outcome.http_5xx,
            "errors": outcome.errors[:20],
        }
        for route, outcome in (("c-store", result.cstore), ("stow-rs", result.stow))
    }
