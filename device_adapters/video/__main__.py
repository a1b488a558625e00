"""``python -m device_adapters.video``: send a capture card (or a video file) to a consult's live exam.

Example, on the township PC next to the ultrasound machine::

    python -m device_adapters.video --server http://county.example:8000 \\
        --username sono1 --password-file ~/.teleconsult-password --consult <consult id> --source 0

It signs in, starts the consult's live session (or joins the running one)
as its sender, and keeps sending until the session ends or Ctrl-C,
reconnecting after a network loss. The password is read from a file (not
the command line, which other users of the PC can list).
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
from device_adapters.video.sender import LiveServer, run_sender

__all__ = ["main"]


def _source(value: str) -> int | str:
    return int(value) if value.isdigit() else value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m device_adapters.video",
        description="Send a capture card or a video file to a teleconsult live exam, as its sender.",
    )
    parser.add_argument("--server", required=True, help="teleconsult's base URL, e.g. http://127.0.0.1:8000")
    parser.add_argument("--username", required=True, help="a user of the consult's requesting side")
    parser.add_argument("--password-file", required=True, type=Path, help="file holding the password")
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--consult", help="consult id: start its live session, or join the running one")
    target.add_argument("--session", help="live session id")
    parser.add_argument("--source", type=_source, default=0, help="capture device index or video file (0)")
    parser.add_argument("--fps", type=float, default=None, help="frames per second (default: the source's)")
    parser.add_argument("--loop", action="store_true", help="play a video file again at its end")
    return parser


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
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return asyncio.run(_run(args))
    except (CaptureError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
