"""The scenarios, shared by the benchmark (full counts) and the tests (short versions).

``run_load``: many associations at once (DCMTK ``dcmsend``), each sending its
instances, and the association limit checked while as many are held open;
the server's RSS, threads and descriptors before and after. ``run_limit``:
associations opened one by one and held, until the server refuses (the
limit is per gateway process). ``run_crashes``: senders stream while
``serve`` is SIGKILLed at random moments and restarted on the same data
directory and index.

Each returns what was measured; none judges it (the tests and the table do).
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.reliability.senders import (
    Ack,
    AssociationRejection,
    DcmsendLoad,
    StowSender,
    StreamSender,
    hold_associations,
    join_all,
    quiet_pynetdicom,
    request_association,
    run_threads,
)
from bench.reliability.server import HOST, ORGANISATION, KillReport, Serve, TreeStats
from bench.reliability.verify import Verification, in_flight, verify

__all__ = [
    "STOW_PASSWORD",
    "STOW_USER",
    "CrashResult",
    "LimitResult",
    "LoadResult",
    "add_stow_user",
    "run_crashes",
    "run_limit",
    "run_load",
    "settle",
    "streaming_senders",
]

# 1024 x 2048 8-bit pixels: 2 MiB, eight 256 KB PDUs, a write that takes a while
_LARGE = {"rows": 1024, "columns": 2048}
STOW_USER = "reliability"
STOW_PASSWORD = "reliability-password"


def settle(serve: Serve, target: TreeStats | None = None, timeout: float = 20.0) -> TreeStats:
    """Stats once threads and descriptors are back at ``target``, or have not changed for 2 s.

    Association threads end a moment after their connections close; this
    waits for that (up to ``timeout``) instead of measuring them.
    """
    deadline = time.monotonic() + timeout
    stats = serve.stats()
    steady_since = time.monotonic()
    while time.monotonic() < deadline:
        if target is not None and stats.threads <= target.threads and stats.fds <= target.fds:
            break
        if time.monotonic() - steady_since >= 2.0:
            break
        time.sleep(0.2)
        previous, stats = stats, serve.stats()
        if (stats.threads, stats.fds) != (previous.threads, previous.fds):
            steady_since = time.monotonic()
    return stats


# -- load -----------------------------------------------------------------------------------------


@dataclass
class LoadResult:
    associations: int
    instances: int  # per association
    rounds: int
    processes: int
    sent: int = 0
    acks: list[Ack] = field(default_factory=list)
    refusals: Counter[int] = field(default_factory=Counter)
    sender_errors: list[str] = field(default_factory=list)
    # the association asked for while ``associations`` were open (None: not checked)
    extra_association: str | None = None
    extra_rejection: AssociationRejection | None = None
    before: TreeStats | None = None
    after: TreeStats | None = None
    after_each_round: list[TreeStats] = field(default_factory=list)
    seconds: float = 0.0  # sending the rounds (not the warm-up)
    exit_status: int | None = None
    # the end of the server's log when it did not stop cleanly
    stop_log: str = ""
    verification: Verification | None = None


def _load_round(
    run_dir: Path, port: int, associations: int, instances: int, label: str, result: LoadResult
) -> None:
    senders = [
        DcmsendLoad(port, f"{label}-{i}", instances, run_dir / "outgoing" / f"{label}-{i}")
        for i in range(associations)
    ]
    for sender in senders:
        sender.prepare()
    started = time.perf_counter()
    stuck = join_all(run_threads(senders, label), 600)
    if label != "warmup":
        result.seconds += time.perf_counter() - started
    result.sent += associations * instances
    for sender in senders:
        result.acks.extend(sender.acks)
        result.refusals.update(sender.refusals)
        if sender.error:
            result.sender_errors.append(f"{sender.label}: {sender.error}")
    result.sender_errors.extend(f"{name}: still running" for name in stuck)


def _check_limit(port: int, associations: int, result: LoadResult) -> None:
    held = hold_associations(port, associations)
    try:
        if len(held) < associations:
            result.extra_association = f"not checked: only {len(held)} of {associations} were accepted"
            return
        extra, rejection = request_association(port)
        result.extra_rejection = rejection
        if rejection is not None:
            result.extra_association = rejection.text
        elif extra.is_established:
            result.extra_association = "accepted"
            extra.release()
        else:
            result.extra_association = "failed (aborted or no answer)"
    finally:
        for assoc in held:
            assoc.release()


def run_load(
    run_dir: Path,
    *,
    database_url: str | None = None,
    workers: int = 1,
    associations: int = 32,
    instances: int = 100,
    max_associations: int = 32,
    rounds: int = 1,
    warmup_instances: int = 5,
    check_limit: bool = True,
) -> LoadResult:
    """``associations`` at once x ``instances`` each (DCMTK ``dcmsend``), ``rounds`` times.

    A warm-up round of the same concurrency (``warmup_instances`` each) comes
    first, so connection pools and thread pools reach their working size
    before the baseline is taken: what grows after it is what the load leaves
    behind. With ``check_limit``, ``associations`` associations are then
    opened and held, and one more is asked for.
    """
    with Serve(
        run_dir, database_url=database_url, workers=workers, max_associations=max_associations
    ) as serve:
        result = LoadResult(associations, instances, rounds, serve.processes)
        with quiet_pynetdicom():
            serve.start()
            _load_round(run_dir, serve.dicom_port, associations, warmup_instances, "warmup", result)
            if check_limit:
                _check_limit(serve.dicom_port, associations, result)
            result.before = settle(serve)
            for number in range(rounds):
                _load_round(run_dir, serve.dicom_port, associations, instances, f"load{number}", result)
                result.after_each_round.append(settle(serve, result.before))
        result.after = result.after_each_round[-1]
        result.exit_status = serve.stop()
        if result.exit_status != 0:
            result.stop_log = serve.log_tail(150)
        result.verification = verify(serve, result.acks)
    return result


# -- the association limit, one process or several -------------------------------------------------


@dataclass
class LimitResult:
    processes: int
    max_associations: int
    attempts: int
    accepted: int = 0
    rejections: list[AssociationRejection] = field(default_factory=list)
    # accepted associations before the first refusal
    first_refusal_after: int | None = None
    # neither accepted nor rejected: how each attempt ended
    other_failures: list[str] = field(default_factory=list)


def _how_it_ended(assoc: Any) -> str:
    error = getattr(assoc.dul.socket, "connect_error", None) if assoc.dul.socket is not None else None
    if error is not None:
        return f"connection failed: {error}"
    return "aborted" if assoc.is_aborted else "no answer within the ACSE timeout"


def run_limit(
    run_dir: Path,
    *,
    database_url: str | None = None,
    workers: int = 0,
    max_associations: int = 32,
    attempts: int | None = None,
) -> LimitResult:
    """Open associations one by one and hold them all, until ``attempts`` were made.

    The limit is pynetdicom's ``maximum_associations``, counted by each gateway
    process for itself: with N processes sharing the port up to N x limit are
    open at once, and a new one is refused when the kernel hands it to a
    process already at its limit.
    """
    with Serve(
        run_dir, database_url=database_url, workers=workers, max_associations=max_associations
    ) as serve:
        attempts = attempts if attempts is not None else serve.processes * max_associations + 8
        result = LimitResult(serve.processes, max_associations, attempts)
        held = []
        with quiet_pynetdicom():
            serve.start()
            try:
                for _ in range(attempts):
                    # held idle until the end: our side must not give up on them first
                    assoc, rejection = request_association(serve.dicom_port, timeout=300)
                    if rejection is not None:
                        result.rejections.append(rejection)
                        if result.first_refusal_after is None:
                            result.first_refusal_after = result.accepted
                    elif assoc.is_established:
                        held.append(assoc)
                        result.accepted += 1
                    else:
                        result.other_failures.append(_how_it_ended(assoc))
            finally:
                for assoc in held:
                    assoc.release()
    return result


# -- crashes --------------------------------------------------------------------------------------


@dataclass
class CrashResult:
    kills: int
    senders: int
    stow_senders: int
    processes: int
    seed: int
    large_senders: int = 0
    kill_grace: float = 0.0
    acks: list[Ack] = field(default_factory=list)
    kill_reports: list[KillReport] = field(default_factory=list)
    restart_seconds: list[float] = field(default_factory=list)
    swept: list[int] = field(default_factory=list)
    # per kill: where the unanswered instances were left, and the temporary files left
    in_flight: Counter[str] = field(default_factory=Counter)
    temporary_after_kill: list[int] = field(default_factory=list)
    refusals: Counter[int] = field(default_factory=Counter)
    stow_failures: Counter[str] = field(default_factory=Counter)
    rejections: Counter[str] = field(default_factory=Counter)
    interrupted: int = 0
    resent: int = 0
    associations: int = 0
    stuck_senders: list[str] = field(default_factory=list)
    system_tmp_leftovers: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    exit_status: int | None = None
    stop_log: str = ""
    verification: Verification | None = None

    @property
    def orphans(self) -> list[str]:
        return [orphan for report in self.kill_reports for orphan in report.orphans]


def streaming_senders(
    serve: Serve, label: str, stop: threading.Event, senders: int, large_senders: int, stow_senders: int
) -> tuple[list[StreamSender], list[StowSender]]:
    """C-STORE senders (the first ``large_senders`` with 2 MiB instances) and STOW-RS senders."""
    dicom = [
        StreamSender(serve.dicom_port, f"{label}-{i}", stop, **(_LARGE if i < large_senders else {}))
        for i in range(senders)
    ]
    http = [
        StowSender(f"http://{HOST}:{serve.http_port}", STOW_USER, STOW_PASSWORD, f"stow-{i}", stop)
        for i in range(stow_senders)
    ]
    return dicom, http


def add_stow_user(serve: Serve) -> None:
    """A sonographer of the senders' organisation, written before the first ``serve``."""
    from teleconsult.config import Settings
    from teleconsult.storage.identity import IdentityStore
    from teleconsult.storage.store import InstanceStore

    store = InstanceStore(Settings(data_dir=serve.data_dir, database_url=serve.database_url))
    store.open()
    try:
        identity = IdentityStore(store.index.engine)
        identity.add_organisation(ORGANISATION, "Township 1")
        identity.add_user(STOW_USER, STOW_PASSWORD, "sonographer", ORGANISATION)
    finally:
        store.close()


def run_crashes(
    run_dir: Path,
    *,
    database_url: str | None = None,
    workers: int = 1,
    kills: int = 5,
    senders: int = 4,
    stow_senders: int = 1,
    large_senders: int = 1,
    min_delay: float = 0.3,
    max_delay: float = 2.0,
    seed: int | None = None,
    settle_acks: int = 20,
    kill_grace: float = 5.0,
) -> CrashResult:
    """Senders stream while ``serve`` is SIGKILLed ``kills`` times and restarted each time.

    The first ``large_senders`` DICOM senders send 2 MiB instances, the others
    1.5 KB ones. Each kill comes ``uniform(min_delay, max_delay)`` seconds after the
    incarnation became ready. After the last restart the senders go on until
    ``settle_acks`` more instances are acknowledged, then stop; the server is
    stopped with SIGTERM and the store checked. A process below ``serve``
    still alive ``kill_grace`` seconds after a kill is an orphan: recorded,
    then killed.
    """
    seed = seed if seed is not None else random.randrange(1 << 30)
    rng = random.Random(seed)
    with Serve(run_dir, database_url=database_url, workers=workers) as serve:
        result = CrashResult(kills, senders, stow_senders, serve.processes, seed, large_senders, kill_grace)
        if stow_senders:
            add_stow_user(serve)
        stop = threading.Event()
        dicom, http = streaming_senders(serve, "crash", stop, senders, large_senders, stow_senders)

        def acknowledged() -> int:
            return sum(len(sender.acks) for sender in [*dicom, *http])

        started = time.perf_counter()
        with quiet_pynetdicom():
            serve.start()
            threads = run_threads([*dicom, *http], "crash")
            try:
                for _ in range(kills):
                    time.sleep(rng.uniform(min_delay, max_delay))
                    result.kill_reports.append(serve.kill(grace=kill_grace))
                    acked = {ack.sop_instance_uid for sender in [*dicom, *http] for ack in sender.acks[-2:]}
                    unanswered = [
                        outgoing
                        for sender in [*dicom, *http]
                        if (outgoing := sender.pending) is not None and outgoing.sop_instance_uid not in acked
                    ]
                    states, temporary = in_flight(serve, unanswered)
                    result.in_flight.update(states)
                    result.temporary_after_kill.append(temporary)
                    restart = time.perf_counter()
                    serve.start()
                    result.restart_seconds.append(time.perf_counter() - restart)
                target = acknowledged() + settle_acks
                deadline = time.monotonic() + 60
                while acknowledged() < target and time.monotonic() < deadline:
                    time.sleep(0.05)
            finally:
                stop.set()
                result.stuck_senders = join_all(threads, 60)
        result.seconds = time.perf_counter() - started
        result.exit_status = serve.stop()
        if result.exit_status != 0:
            result.stop_log = serve.log_tail(150)
        for sender in dicom:
            result.acks.extend(sender.acks)
            result.refusals.update(sender.refusals)
            result.rejections.update(sender.rejections)
            result.interrupted += sender.interrupted
            result.resent += sender.resent
            result.associations += sender.associations
        for stow in http:
            result.acks.extend(stow.acks)
            result.stow_failures.update(stow.failures)
        result.swept = serve.swept()
        result.system_tmp_leftovers = serve.system_tmp_leftovers()
        result.verification = verify(serve, result.acks)
    return result
