"""``python -m bench.live``: glass-to-glass latency, frame rate and server CPU of a live exam.

For each picture size, a bare aiortc sender -> receiver pair (the baseline:
same track, size, rate and codec, no server between them), then a real
``teleconsult serve`` live session with 1, 2, 4 ... viewers: the sender (an
aiortc peer with a track whose frames carry their sequence number in
their pixels) offers as the session's sender over the signalling
WebSocket, the viewers (aiortc peers in a separate process) as viewers.
Every decoded frame's latency is the time from the sender handing it to
its encoder to the viewer's ``recv()`` returning it. After ``--warmup``
seconds, ``--seconds`` are measured: p50/p95/max latency, the frame rate
each viewer received, and the CPU of the server, of this process (the
sender) and of the viewers' process. Prints both side by side with the
targets' verdict; exits non-zero only when something failed, not when a
target is missed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from bench.live import viewers as viewers_process
from bench.live.serve import (
    SONOGRAPHER,
    Installation,
    live_serve,
    machine_busy_seconds,
    process_cpu_seconds,
    specialist,
    thread_cpu_seconds,
)
from bench.live.stamp import StampTrack, check_size
from bench.live.viewers import codec_of, prefer_codec
from bench.notify.__main__ import _revision
from bench.notify.measure import percentile

TARGET_P95_MS = 150.0
TARGET_FPS = 28.0
TARGET_CPU_PER_VIEWER = 10.0  # % of one core
NOISY_OTHER = 25.0  # % of one core used by other processes during a window
_TIMEOUT = 60.0


def _sizes(text: str) -> list[tuple[int, int]]:
    sizes = []
    for item in text.split(","):
        try:
            width, height = (int(part) for part in item.lower().split("x"))
            check_size(width, height)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(f"size {item!r}: {exc}") from None
        sizes.append((width, height))
    return sizes


def _counts(text: str) -> list[int]:
    try:
        counts = sorted({int(item) for item in text.split(",")})
    except ValueError:
        raise argparse.ArgumentTypeError(f"viewers {text!r}: a comma-separated list of numbers") from None
    if not counts or counts[0] < 1:
        raise argparse.ArgumentTypeError("viewers: each count must be at least 1")
    return counts


def _setting(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name.startswith("TELECONSULT_"):
        raise argparse.ArgumentTypeError(f"{text!r}: give TELECONSULT_NAME=VALUE")
    return name, value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.live", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--sizes", type=_sizes, default=_sizes("640x480,1280x720"), help="WxH,... (default 640x480,1280x720)"
    )
    parser.add_argument("--viewers", type=_counts, default=[1, 2, 4], help="viewer counts (default 1,2,4)")
    parser.add_argument("--seconds", type=float, default=20.0, help="measured seconds per case (default 20)")
    parser.add_argument(
        "--warmup", type=float, default=3.0, help="seconds skipped after connecting (default 3)"
    )
    parser.add_argument("--fps", type=float, default=30.0, help="frames per second sent (default 30)")
    parser.add_argument(
        "--codec", choices=["vp8", "h264"], default="vp8", help="video codec offered (default vp8)"
    )
    parser.add_argument(
        "--no-recording",
        action="store_true",
        help="TELECONSULT_LIVE_RECORDING=false (default: as shipped, every session recorded to MP4)",
    )
    parser.add_argument(
        "--env",
        action="append",
        default=[],
        type=_setting,
        metavar="TELECONSULT_NAME=VALUE",
        help="a setting for the server (repeatable), e.g. TELECONSULT_LIVE_VIDEO_BITRATE=0",
    )
    parser.add_argument(
        "--quiet-threshold",
        type=float,
        default=25.0,
        help="before each case, wait until the machine's busy CPU is at most this %% of one core (25)",
    )
    parser.add_argument(
        "--quiet-timeout",
        type=float,
        default=60.0,
        help="longest wait for that, in seconds; 0 = never wait (60); a case then starts anyway",
    )
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    parser.add_argument("--work-dir", type=Path, help="where the data directory goes (default: temp)")
    return parser


# -- the viewers' process -----------------------------------------------------------------------


class _Viewers:
    """The process holding the receivers (``bench.live.viewers``), driven over a pipe."""

    def __init__(self) -> None:
        context = multiprocessing.get_context("spawn")
        self._conn, child = context.Pipe()
        self.process = context.Process(target=viewers_process.run, args=(child,), name="bench-live-viewers")
        self.process.start()
        child.close()

    @property
    def pid(self) -> int:
        assert self.process.pid is not None
        return self.process.pid

    async def call(self, command: str, body: Any, expect: str) -> dict[str, Any]:
        self._conn.send((command, body))
        if not await asyncio.to_thread(self._conn.poll, _TIMEOUT):
            raise RuntimeError(f"the viewers' process did not answer {command!r} in {_TIMEOUT:.0f} s")
        kind, answer = self._conn.recv()
        if kind != expect:
            raise RuntimeError(f"the viewers' process answered {command!r} with {kind}: {answer}")
        result: dict[str, Any] = answer
        return result

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._conn.send(("exit", None))
        self.process.join(timeout=30)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()
        self._conn.close()


# -- one case -------------------------------------------------------------------------------------


@dataclass
class Case:
    """The figures of one measurement: a size, and the baseline (viewers 0) or a number of viewers."""

    width: int
    height: int
    viewers: int  # 0: the baseline (bare aiortc sender -> receiver)
    codec: str
    seconds: float
    frames: int  # stamped frames received in the window, all viewers
    unreadable: int  # frames whose stamp did not check (whole run, all viewers)
    p50_ms: float
    p95_ms: float
    max_ms: float
    fps_min: float  # the slowest viewer's received frame rate
    fps_sent: float
    server_cpu: float | None  # % of one core
    server_loop_cpu: float | None  # of which the event loop's thread (the main thread)
    sender_cpu: float  # this process
    viewers_cpu: float  # the viewers' process
    other_cpu: float  # the rest of the machine
    busy_before: float = 0.0  # the machine's busy CPU just before the case (someone else's work)
    recorded: bool | None = None  # the session was recorded to a file (the server says); None: baseline

    @property
    def size(self) -> str:
        return f"{self.width}x{self.height}"


@dataclass
class _Cpu:
    at: float
    server: float
    loop: float
    own: float
    viewers: float
    machine: float

    @classmethod
    def now(cls, server_pid: int | None, viewers_pid: int) -> _Cpu:
        return cls(
            time.monotonic(),
            process_cpu_seconds(server_pid) if server_pid is not None else 0.0,
            thread_cpu_seconds(server_pid, server_pid) if server_pid is not None else 0.0,
            process_cpu_seconds(os.getpid(), children=False),
            process_cpu_seconds(viewers_pid, children=False),
            machine_busy_seconds(),
        )


async def _measure(
    viewers: _Viewers,
    track: StampTrack,
    *,
    count: int,
    codec: str,
    server_pid: int | None,
    warmup: float,
    seconds: float,
) -> Case:
    """Wait out the warm-up, measure a window, stop the viewers and work out the figures."""
    await asyncio.sleep(warmup)
    before = _Cpu.now(server_pid, viewers.pid)
    await asyncio.sleep(seconds)
    after = _Cpu.now(server_pid, viewers.pid)
    received = await viewers.call("stop", None, "arrivals")
    start, end = before.at, after.at
    span = end - start
    latencies: list[float] = []
    rates: list[float] = []
    for arrivals in received["viewers"]:
        window = [(seq, at) for seq, at in arrivals if start <= at < end]
        rates.append(len(window) / span)
        latencies.extend((at - track.sent[seq]) * 1000 for seq, at in window if seq in track.sent)
    if len(rates) != count or min(rates) == 0 or not latencies:
        raise RuntimeError(f"{count} viewer(s) expected, frame rates received: {rates}")

    def share(used: float) -> float:
        return 100 * used / span

    ours = (after.server - before.server) + (after.own - before.own) + (after.viewers - before.viewers)
    served = server_pid is not None
    return Case(
        width=track.width,
        height=track.height,
        viewers=count if served else 0,
        codec=codec,
        seconds=span,
        frames=len(latencies),
        unreadable=sum(received["unreadable"]),
        p50_ms=percentile(latencies, 50),
        p95_ms=percentile(latencies, 95),
        max_ms=max(latencies),
        fps_min=min(rates),
        fps_sent=sum(1 for at in track.sent.values() if start <= at < end) / span,
        server_cpu=share(after.server - before.server) if served else None,
        server_loop_cpu=share(after.loop - before.loop) if served else None,
        sender_cpu=share(after.own - before.own),
        viewers_cpu=share(after.viewers - before.viewers),
        other_cpu=share(max(0.0, (after.machine - before.machine) - ours)),
    )


def _sending_peer(track: StampTrack, codec: str) -> RTCPeerConnection:
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))  # host candidates only: loopback
    prefer_codec(pc.addTransceiver(track, direction="sendonly"), codec)
    return pc


async def baseline(viewers: _Viewers, size: tuple[int, int], args: argparse.Namespace) -> Case:
    """A bare aiortc sender -> receiver pair, the receiver in the viewers' process."""
    track = StampTrack(*size, args.fps)
    pc = _sending_peer(track, args.codec)
    try:
        await pc.setLocalDescription(await pc.createOffer())
        answer = await viewers.call("direct", {"offer": pc.localDescription.sdp}, "answer")
        await pc.setRemoteDescription(RTCSessionDescription(sdp=answer["sdp"], type="answer"))
        return await _measure(
            viewers,
            track,
            count=1,
            codec=answer["codecs"][0],
            server_pid=None,
            warmup=args.warmup,
            seconds=args.seconds,
        )
    finally:
        await pc.close()
        track.stop()


async def _expect(ws: ClientConnection, kind: str) -> dict[str, Any]:
    message: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), _TIMEOUT))
    if message.get("type") != kind:
        raise RuntimeError(f"the server answered {message!r} instead of {kind!r}")
    return message


async def through_teleconsult(
    viewers: _Viewers, installation: Installation, size: tuple[int, int], count: int, args: argparse.Namespace
) -> Case:
    """A new live session: the sender, then ``count`` viewers; measured, then ended."""
    session = await asyncio.to_thread(installation.start_session)
    url = installation.signal_url(session)
    track = StampTrack(*size, args.fps)
    pc = _sending_peer(track, args.codec)
    ws: ClientConnection | None = None
    try:
        ws = await connect(url, open_timeout=_TIMEOUT)
        await ws.send(json.dumps({"type": "auth", "token": installation.token(SONOGRAPHER)}))
        await _expect(ws, "ready")
        await pc.setLocalDescription(await pc.createOffer())
        await ws.send(json.dumps({"type": "offer", "sdp": pc.localDescription.sdp, "role": "sender"}))
        answer = await _expect(ws, "answer")
        await pc.setRemoteDescription(RTCSessionDescription(sdp=answer["sdp"], type="answer"))
        tokens = [installation.token(specialist(i)) for i in range(1, count + 1)]
        ready = await viewers.call(
            "teleconsult", {"url": url, "tokens": tokens, "codec": args.codec}, "ready"
        )
        codecs = sorted({codec_of(answer["sdp"]), *ready["codecs"]})
        case = await _measure(
            viewers,
            track,
            count=count,
            codec="/".join(codecs),
            server_pid=installation.pid,
            warmup=args.warmup,
            seconds=args.seconds,
        )
        case.recorded = session.get("recorded")  # absent before recordings existed
        return case
    finally:
        if ws is not None:
            with contextlib.suppress(ConnectionClosed):  # the server may have closed it first
                await ws.send(json.dumps({"type": "bye"}))
                await ws.close()
        await pc.close()
        track.stop()
        await asyncio.to_thread(installation.end_session, session["id"])


async def _wait_quiet(args: argparse.Namespace) -> float:
    """Wait (up to ``--quiet-timeout``) until the machine is quiet; its busy % of one core at the end.

    Between cases the server, the sender and the viewers are idle, so what
    keeps the machine busy then is someone else's work.
    """
    deadline = time.monotonic() + args.quiet_timeout
    while True:
        before, at = machine_busy_seconds(), time.monotonic()
        await asyncio.sleep(1.0)
        busy = 100 * (machine_busy_seconds() - before) / (time.monotonic() - at)
        if busy <= args.quiet_threshold or time.monotonic() >= deadline:
            return busy


async def _idle_cpu(pid: int, seconds: float = 2.0) -> float:
    before = process_cpu_seconds(pid)
    await asyncio.sleep(seconds)
    return 100 * (process_cpu_seconds(pid) - before) / seconds


# -- the report ---------------------------------------------------------------------------------


def _verdict(case: Case, per_viewer: float | None) -> str:
    missed = []
    if case.p95_ms >= TARGET_P95_MS:
        missed.append("p95")
    if case.fps_min < TARGET_FPS:
        missed.append("fps")
    if per_viewer is not None and per_viewer >= TARGET_CPU_PER_VIEWER:
        missed.append("cpu/viewer")
    return "ok" if not missed else "BELOW " + ",".join(missed)


def _per_viewer(case: Case, cases: list[Case]) -> float | None:
    """Server CPU per added viewer: (cpu_n - cpu_1) / (n - 1), against the same size's one-viewer case."""
    one = next((c for c in cases if c.size == case.size and c.viewers == 1), None)
    if case.viewers <= 1 or one is None or case.server_cpu is None or one.server_cpu is None:
        return None
    return (case.server_cpu - one.server_cpu) / (case.viewers - 1)


def _recorded(case: Case) -> str:
    return {None: "-", True: "yes", False: "no"}[case.recorded]


def _fmt(value: float | None, width: int, digits: int = 1) -> str:
    return f"{'-':>{width}}" if value is None else f"{value:>{width}.{digits}f}"


def report(cases: list[Case], header: list[str]) -> None:
    for line in header:
        print(line)
    print()
    print(
        "glass-to-glass: sender's track hands the frame to its encoder -> viewer's recv() returns it decoded"
    )
    print(
        f"targets: p95 < {TARGET_P95_MS:g} ms, >= {TARGET_FPS:g} fps received (slowest viewer), "
        f"server CPU per added viewer < {TARGET_CPU_PER_VIEWER:g} % of one core"
    )
    print()
    print(
        f"{'size':<9} {'viewers':>7} {'p50 ms':>7} {'p95 ms':>7} {'max ms':>7} {'fps min':>7} "
        f"{'server %':>8} {'+/viewer':>8} | {'base p50':>8} {'base p95':>8} {'base fps':>8} "
        f"{'p95 x':>6} | verdict"
    )
    for case in cases:
        if case.viewers == 0:
            continue
        base = next((c for c in cases if c.size == case.size and c.viewers == 0), None)
        per_viewer = _per_viewer(case, cases)
        ratio = case.p95_ms / base.p95_ms if base else None
        print(
            f"{case.size:<9} {case.viewers:>7} {case.p50_ms:>7.1f} {case.p95_ms:>7.1f} {case.max_ms:>7.1f} "
            f"{case.fps_min:>7.1f} {_fmt(case.server_cpu, 8)} {_fmt(per_viewer, 8)} | "
            f"{_fmt(base.p50_ms if base else None, 8)} {_fmt(base.p95_ms if base else None, 8)} "
            f"{_fmt(base.fps_min if base else None, 8)} {_fmt(ratio, 6, 2)} | {_verdict(case, per_viewer)}"
        )
    print()
    print("where the CPU went (% of one core over each window) and what was received")
    print(
        f"{'size':<9} {'viewers':>8} {'codec':>9} {'sent fps':>8} {'server':>7} {'loop':>6} {'sender':>7} "
        f"{'viewers':>8} {'others':>7} {'before':>7} {'frames':>7} {'unread':>6} {'rec':>3}"
    )
    for case in cases:
        name = "baseline" if case.viewers == 0 else str(case.viewers)
        noisy = "  NOISY" if case.other_cpu > NOISY_OTHER else ""
        print(
            f"{case.size:<9} {name:>8} {case.codec:>9} {case.fps_sent:>8.1f} {_fmt(case.server_cpu, 7)} "
            f"{_fmt(case.server_loop_cpu, 6)} "
            f"{case.sender_cpu:>7.1f} {case.viewers_cpu:>8.1f} {case.other_cpu:>7.1f} "
            f"{case.busy_before:>7.1f} {case.frames:>7} {case.unreadable:>6} {_recorded(case):>3}{noisy}"
        )
    print(
        "(server: teleconsult serve, all threads; loop: its event loop's thread (signalling, RTP, SRTP, "
        "relay), the rest being aiortc's decoder and encoder threads; "
        "sender: this process, the sender's encoder; viewers: the receivers' process, one decoder each; "
        f"others: the rest of the machine, NOISY over {NOISY_OTHER:g} %; before: the whole machine's "
        "busy CPU just before the case, when only others were working; rec: the session was recorded "
        "to a file, TELECONSULT_LIVE_RECORDING)"
    )


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


def _load() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


async def _run(args: argparse.Namespace, work: Path, cases: list[Case], header: list[str]) -> None:
    viewers = _Viewers()
    try:
        with live_serve(
            work, specialists=max(args.viewers), recording=not args.no_recording, settings=dict(args.env)
        ) as installation:
            users = [SONOGRAPHER, *(specialist(i) for i in range(1, max(args.viewers) + 1))]
            await asyncio.to_thread(lambda: [installation.token(user) for user in users])  # argon2: once
            idle = await _idle_cpu(installation.pid)
            header.append(
                f"server        teleconsult serve pid {installation.pid}, idle CPU {idle:.1f} % of a core"
            )
            for size in args.sizes:
                busy = await _wait_quiet(args)
                cases.append(await baseline(viewers, size, args))
                cases[-1].busy_before = busy
                print(f"  {size[0]}x{size[1]} baseline: p95 {cases[-1].p95_ms:.1f} ms", file=sys.stderr)
                for count in args.viewers:
                    busy = await _wait_quiet(args)
                    cases.append(await through_teleconsult(viewers, installation, size, count, args))
                    cases[-1].busy_before = busy
                    print(
                        f"  {size[0]}x{size[1]} {count} viewer(s): p95 {cases[-1].p95_ms:.1f} ms, "
                        f"{cases[-1].fps_min:.1f} fps",
                        file=sys.stderr,
                    )
    finally:
        viewers.close()


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    load_before = _load()
    header = [
        f"date          {datetime.now(UTC):%Y-%m-%d %H:%M UTC}",
        f"machine       {len(os.sched_getaffinity(0))} CPUs ({_cpu_model()}), Linux {platform.release()}, "
        f"Python {platform.python_version()}",
        f"teleconsult   {_revision()}",
        f"run           {args.fps:g} fps, {args.codec} offered, {args.warmup:g} s warm-up, "
        f"{args.seconds:g} s measured per case, "
        f"{'recording off (--no-recording)' if args.no_recording else 'recording as shipped'}",
    ]
    if args.env:
        header.append("settings      " + " ".join(f"{name}={value}" for name, value in args.env))
    cases: list[Case] = []
    try:
        with tempfile.TemporaryDirectory(prefix="bench-live-", dir=args.work_dir) as work:
            asyncio.run(_run(args, Path(work), cases, header))
    except (RuntimeError, OSError, TimeoutError, subprocess.CalledProcessError) as exc:
        print(f"bench.live failed: {exc}", file=sys.stderr)
        if cases:
            report(cases, header)
        return 1
    header.append(f"load average  {load_before} before the run, {_load()} after")
    report(cases, header)
    if args.json is not None:
        figures = [
            {**asdict(case), "size": case.size, "server_cpu_per_added_viewer": _per_viewer(case, cases)}
            for case in cases
        ]
        args.json.write_text(json.dumps({"header": header, "cases": figures}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
