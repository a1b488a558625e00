"""The credentials teleconsult issues, against a real coturn (Debian's ``turnserver``) on loopback.

coturn runs with ``use-auth-secret`` and ``static-auth-secret`` as docker-compose.yml runs it;
aioice (the ICE library under aiortc, which the server's own peer connections use when
TELECONSULT_TURN_FOR_SERVER is set) allocates a relay with what ``TurnIssuer`` issued. coturn
accepts a participant's and the server's credentials, and refuses an expired one and one
signed with another secret. Skipped, saying why, where coturn is not installed (Debian package
``coturn``).
"""

from __future__ import annotations

import asyncio
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from aioice.stun import TransactionFailed
from aioice.turn import create_turn_endpoint
from pydantic import SecretStr

from teleconsult.config import IceServer
from teleconsult.media import TurnIssuer
from tests.conftest import require_tool

pytestmark = pytest.mark.timeout(60)

SECRET = "coturn-test-secret-0123456789abcdef"


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def coturn(tmp_path: Path) -> Iterator[int]:
    """turnserver on 127.0.0.1 (a free port), use-auth-secret; yields its port."""
    binary = require_tool("turnserver")  # Debian's coturn, installed by scripts/test.sh
    port = _free_udp_port()
    process = subprocess.Popen(
        [
            binary, "-n", "--log-file=stdout", "--simple-log", "--no-cli", "--no-tls", "--no-dtls",
            "--listening-ip=127.0.0.1", "--relay-ip=127.0.0.1", f"--listening-port={port}",
            "--use-auth-secret", f"--static-auth-secret={SECRET}", "--realm=teleconsult.test",
            f"--pidfile={tmp_path / 'turnserver.pid'}", f"--db={tmp_path / 'turndb'}",
            "--min-port=49152", "--max-port=65535",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )  # fmt: skip
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(process.stdout or []), daemon=True)
    reader.start()
    deadline = time.monotonic() + 20
    try:
        # its listeners are up once its servers are created (a datagram sent a moment too early is
        # retransmitted by the STUN client)
        while not any("Total General servers" in line for line in lines):
            assert process.poll() is None, "turnserver exited:\n" + "".join(lines[-20:])
            assert time.monotonic() < deadline, "turnserver did not start:\n" + "".join(lines[-20:])
            time.sleep(0.05)
        yield port
    finally:
        process.terminate()
        process.wait(10)
        reader.join(10)
        if process.stdout is not None:
            process.stdout.close()


async def _allocate(port: int, server: IceServer) -> tuple[str, int]:
    """A relay allocated on coturn with ``server``'s credentials; its relayed address."""
    transport, _ = await create_turn_endpoint(
        asyncio.DatagramProtocol, ("127.0.0.1", port), server.username, server.credential
    )
    try:
        relayed: tuple[str, int] = transport.get_extra_info("sockname")
        return relayed
    finally:
        transport.close()


def _issuer(secret: str = SECRET, now: float | None = None, ttl: int = 3600) -> TurnIssuer:
    clock = (lambda: now) if now is not None else time.time
    return TurnIssuer(("turn:127.0.0.1:3478?transport=udp",), SecretStr(secret), ttl_seconds=ttl, clock=clock)


def test_coturn_accepts_what_teleconsult_issues_and_refuses_the_rest(coturn: int) -> None:
    issuer = _issuer()
    session = "3b0d3c4e-8f0a-4d1e-9a51-6c1f5d2e7a90"
    for server in (
        issuer.issue(session, "sono1"),
        issuer.issue(session, "zhang@county"),
        issuer.issue(session),
    ):
        host, port = asyncio.run(_allocate(coturn, server))
        assert host == "127.0.0.1"
        assert port > 0

    expired = _issuer(now=time.time() - 7200).issue(session, "sono1")  # expired an hour ago
    forged = _issuer(secret="not-the-turn-secret-0123456789").issue(session, "sono1")
    for server in (expired, forged):
        with pytest.raises(TransactionFailed, match="401"):
            asyncio.run(_allocate(coturn, server))
