"""A loopback TCP proxy that can take its target away, as a database server going down and coming back.

``down()`` resets every connection it carries and refuses new ones (the
listener stays bound but connections are closed as soon as they arrive,
as a host whose server process is stopped answers with a reset); ``up()``
forwards again. The product under test is pointed at the proxy's port.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
from types import TracebackType

__all__ = ["TcpProxy"]


def _reset(sock: socket.socket) -> None:
    """Close with RST (SO_LINGER 0), as a peer whose process died.

    ``shutdown`` first: a pump thread blocked in ``recv`` on this socket
    holds it open, so ``close`` alone would neither wake that thread nor
    end the connection (no RST, no FIN), and the peer would wait forever
    for an answer that never comes: a hang the real outage does not cause.
    """
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    sock.close()


class TcpProxy:
    def __init__(self, target_host: str, target_port: int) -> None:
        self._target = (target_host, target_port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._available = True
        self._lock = threading.Lock()
        self._pairs: set[tuple[socket.socket, socket.socket]] = set()
        self._closed = False
        self._accepting = threading.Thread(target=self._accept, name="tcp-proxy", daemon=True)
        self._accepting.start()

    def __enter__(self) -> TcpProxy:
        return self

    def __exit__(
        self, _type: type[BaseException] | None, _value: BaseException | None, _tb: TracebackType | None
    ) -> None:
        self.close()

    def down(self) -> None:
        with self._lock:
            self._available = False
            pairs, self._pairs = self._pairs, set()
        for client, upstream in pairs:
            _reset(client)
            _reset(upstream)

    def up(self) -> None:
        with self._lock:
            self._available = True

    def close(self) -> None:
        self._closed = True
        self.down()
        self._listener.close()
        self._accepting.join(5)

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                available = self._available
            if not available:
                _reset(client)
                continue
            try:
                upstream = socket.create_connection(self._target, timeout=5)
            except OSError:
                _reset(client)
                continue
            upstream.settimeout(None)
            pair = (client, upstream)
            with self._lock:
                self._pairs.add(pair)
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink, pair), daemon=True).start()

    def _pump(
        self, source: socket.socket, sink: socket.socket, pair: tuple[socket.socket, socket.socket]
    ) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            with self._lock:
                carried = pair in self._pairs
                self._pairs.discard(pair)
            if carried:
                for sock in pair:
                    with contextlib.suppress(OSError):
                        sock.shutdown(socket.SHUT_RDWR)
                    sock.close()
