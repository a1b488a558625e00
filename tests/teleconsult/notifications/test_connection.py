"""A connection's queue: a client stuck on a full socket is cut off; a busy loop is not its fault."""

from __future__ import annotations

import asyncio
import json

from teleconsult.domain.consults import ConsultViewer
from teleconsult.domain.identity import Principal, Role
from teleconsult.notifications import Connection
from teleconsult.notifications.protocol import unauthenticated

PRINCIPAL = Principal("sono1", Role.SONOGRAPHER, "TOWN01", frozenset({"TOWN01"}))
VIEWER = ConsultViewer("sono1", Role.SONOGRAPHER, "TOWN01", frozenset({"TOWN01"}))


class _Socket:
    """Records what the pump sends; ``blocked`` holds every send until released."""

    def __init__(self) -> None:
        self.sent: list[str] = []
        self.closed: tuple[int, str] | None = None
        self.blocked = asyncio.Event()
        self.blocked.set()

    async def send_text(self, text: str) -> None:
        await self.blocked.wait()
        self.sent.append(text)

    async def close(self, code: int, reason: str) -> None:
        self.closed = (code, reason)


def _connection(queue_size: int = 4, close_grace: float = 5.0) -> Connection:
    return Connection(
        PRINCIPAL,
        VIEWER,
        expires_at=0,
        queue_size=queue_size,
        close_grace=close_grace,
        loop=asyncio.get_running_loop(),
    )


def test_a_client_stuck_on_its_socket_is_closed_with_4013() -> None:
    async def scenario() -> tuple[_Socket, Connection, object]:
        socket, connection = _Socket(), _connection()
        socket.blocked.clear()  # the client reads nothing: the first send never completes
        pump = connection.start(socket.send_text, socket.close)
        connection.offer("e0")
        await asyncio.sleep(0)  # the pump takes e0 and waits on the socket
        for i in range(1, 6):
            connection.offer(f"e{i}")
        assert connection.closing is not None
        socket.blocked.set()  # the client reads again: it gets e0, the error and the close
        return socket, connection, await asyncio.wait_for(pump, 5)

    socket, connection, result = asyncio.run(scenario())
    assert result is connection.closing
    assert connection.closing is not None
    assert connection.closing.slug == "slow-consumer"
    assert socket.sent[0] == "e0"
    assert json.loads(socket.sent[1])["problem"]["code"] == "slow-consumer"
    assert socket.closed is not None
    assert socket.closed[0] == 4013
    assert connection.delivered == 1


def test_a_burst_waiting_for_the_loop_is_delivered_whole() -> None:
    async def scenario() -> tuple[_Socket, Connection]:
        socket, connection = _Socket(), _connection(queue_size=4)
        connection.start(socket.send_text, socket.close)
        for i in range(20):  # five times the queue size, handed over before the pump runs
            connection.offer(f"e{i}")
        await asyncio.sleep(0.05)
        return socket, connection

    socket, connection = asyncio.run(scenario())
    assert connection.closing is None
    assert socket.sent == [f"e{i}" for i in range(20)]


def test_even_a_busy_loop_has_a_limit() -> None:
    async def scenario() -> Connection:
        connection = _connection(queue_size=4)
        for i in range(4 * 8 + 1):
            connection.offer(f"e{i}")
        return connection

    connection = asyncio.run(scenario())
    assert connection.closing is not None
    assert connection.closing.slug == "slow-consumer"


def test_a_socket_that_cannot_take_its_close_is_dropped_after_the_grace() -> None:
    async def scenario() -> tuple[_Socket, Connection, object]:
        socket, connection = _Socket(), _connection(close_grace=0.2)
        socket.blocked.clear()  # and never released
        pump = connection.start(socket.send_text, socket.close)
        connection.offer("e0")
        await asyncio.sleep(0)
        connection.close(unauthenticated("the access token expired; sign in again and reconnect"))
        return socket, connection, await asyncio.wait_for(pump, 5)

    socket, connection, result = asyncio.run(scenario())
    assert result is connection.closing
    assert socket.sent == []
    assert socket.closed is None
