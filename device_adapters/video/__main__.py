"""``python -m device_adapters.video``: a capture card (or a video file) to a live exam, or a clip to a study.

Send, on the township PC next to the ultrasound machine (``send`` may be
left out: that is the original form of the command)::

    python -m device_adapters.video [send] --server http://county.example:8000 \\
        --username sono1 --password-file ~/.teleconsult-password --consult <consult id> --source 0

It signs in, starts the consult's live session (or joins the running one)
as its sender, and keeps sending until the session ends or Ctrl-C,
reconnecting after a network loss.

Record a clip of the next seconds and store it in a study (STOW-RS;
``stow.py``), an Ultrasound Multi-frame Image for an ultrasound study::

    python -m device_adapters.video clip --server http://county.example:8000 \\
        --username sono1 --password-file ~/.teleconsult-password --study <Study Instance UID> \\
        --source 0 --seconds 5

The password is read from a file (not the command line, which other users
of the PC can list). One process owns the capture card: record clips when
no sender runs on the same card (during a live exam, ask for a clip over
the session instead: ``POST /api/live-sessions/{id}/clip``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
from pathlib import Path

from device_adapters.video.capture import CaptureError, CaptureSource
from device_adapters.video.clip import NotEnoughFramesError
from device_adapters.video.sender import LiveServer, run_sender
from device_adapters.video.stow import StowError, record_clip

__all__ = ["main"]


def _source(value: str) -> int | str:
    return int(value) if value.isdigit() else value


def _common(parser: argparse.ArgumentParser, who: str) -> None:
    parser.add_argument("--server", required=True, help="teleconsult's base URL, e.g. http://127.0.0.1:8000")
    parser.add_argument("--username", required=True, help=who)
    parser.add_argument("--password-file", required=True, type=Path, help="file holding the password")


def _source_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--source", type=_source, default=0, help="capture device index or video file (0)")
    parser.add_argument("--fps", type=float, default=None, help="frames per second (default: the source's)")
    parser.add_argument("--loop", action="store_true", help="play a video file again at its end")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m device_adapters.video",
        description="Send a capture card or a video file to a teleconsult live exam, as its sender.",
        epilog="Also: 'python -m device_adapters.video clip --help' stores a clip of the card in a study.",
    )
    _common(parser, "a user of the consult's requesting side")
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--consult", help="consult id: start its live session, or join the running one")
    target.add_argument("--session", help="live session id")
    _source_options(parser)
    return parser


def _clip_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m device_adapters.video clip",
        description=(
            "Record the next seconds of a capture card (or a video file) and store them in a study "
            "as a multi-frame DICOM image (STOW-RS); prints its SOP Instance UID."
        ),
    )
    _common(parser, "a user who may store in the study (the township's)")
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--study", help="Study Instance UID the clip joins")
    target.add_argument("--consult", help="consult id: the clip joins the consult's study")
    parser.add_argument("--seconds", type=float, default=5.0, help="length of the clip (5; at most 120)")
    parser.add_argument(
        "--sop-class",
        choices=("auto", "us", "sc"),
        default="auto",
        help="us: Ultrasound Multi-frame Image; sc: Multi-frame True Color Secondary Capture; "
        "auto (default): us for an ultrasound study, else sc",
    )
    parser.add_argument("--description", default="Capture card clip", help="Series Description")
    _source_options(parser)
    return parser


async def _clip(args: argparse.Namespace) -> int:
    if not 0 < args.seconds <= 120:
        print("error: --seconds must be above 0 and at most 120", file=sys.stderr)
        return 2
    password = args.password_file.read_text(encoding="utf-8").strip()
    server = LiveServer(args.server, args.username, password)
    source = CaptureSource(args.source, fps=args.fps, loop=args.loop)
    try:
        stored = await record_clip(
            server,
            source.subscribe,
            seconds=args.seconds,
            study_instance_uid=args.study,
            consult_id=args.consult,
            kind=args.sop_class,
            series_description=args.description,
        )
    except (StowError, NotEnoughFramesError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        source.close()
    print(stored.sop_instance_uid)
    return 0


async def _run(args: argparse.Namespace) -> int:
    password = args.password_file.read_text(encoding="utf-8").strip()
    server = LiveServer(args.server, args.username, password)
    source = CaptureSource(args.source, fps=args.fps, loop=args.loop)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        # not on Windows, nor when main() runs off the main thread (then Ctrl-C is the caller's)
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signum, stop.set)
    try:
        result = await run_sender(
            server, source.subscribe, consult_id=args.consult, session_id=args.session, stop=stop
        )
    finally:
        source.close()
    print(result.reason, file=sys.stderr)
    return 0 if result.reason in ("stopped", "the session ended", "the session has ended") else 1


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = _run
    if argv[:1] == ["clip"]:
        args, command = _clip_parser().parse_args(argv[1:]), _clip
    else:
        args = _parser().parse_args(argv[1:] if argv[:1] == ["send"] else argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return asyncio.run(command(args))
    except (CaptureError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
