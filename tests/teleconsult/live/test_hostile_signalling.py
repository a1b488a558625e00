"""Hostile messages on a live session's signalling WebSocket, through the real server.

A signed-in participant sends, on one socket, a seeded stream of mutated
messages: real aiortc offers cut, flipped, with lines dropped or repeated
and numbers made absurd; candidates of every malformed kind; wrong types;
binary frames; messages over the size limit; deep JSON. Each is followed
by a ``ping``: what comes back before the ``pong`` must be an ``answer`` or
an ``error`` problem (a candidate that was taken is not acknowledged), on
the same socket, which stays open; none may end it (1011, or no close at
all) or hang. Afterwards the same session still carries a
sender's picture to a viewer: nothing the fuzzer did broke the session.
"""

from __future__ import annotations

import asyncio
import json
import random
from typing import Any

from websockets.asyncio.client import ClientConnection

from tests.teleconsult.live.conftest import (
    RED,
    WAIT,
    Served,
    frame_where,
    join,
    looks_like,
    new_peer,
    open_socket,
)

SEED = 20261125
ROUNDS = 160
PING = json.dumps({"type": "ping"})


async def _real_offer() -> str:
    pc = new_peer()
    pc.addTransceiver("video", direction="recvonly")
    pc.addTransceiver("audio", direction="recvonly")
    pc.createDataChannel("annotations")
    await pc.setLocalDescription(await pc.createOffer())
    sdp = str(pc.localDescription.sdp)
    await pc.close()
    return sdp


def _mutated_sdp(sdp: str, rng: random.Random) -> str:
    lines = sdp.split("\r\n")
    how = rng.randrange(7)
    if how == 0:  # cut anywhere
        return sdp[: rng.randrange(1, len(sdp))]
    if how == 1:  # a line dropped
        del lines[rng.randrange(len(lines))]
    elif how == 2:  # a line repeated many times
        line = lines[rng.randrange(len(lines))]
        lines[rng.randrange(len(lines)) : 0] = [line] * rng.randrange(2, 200)
    elif how == 3:  # numbers made absurd
        lines = [
            "".join(
                str(rng.choice([0, -1, 2**31, 2**64, 10**30])) if ch.isdigit() and rng.random() < 0.2 else ch
                for ch in line
            )
            for line in lines
        ]
    elif how == 4:  # bytes flipped
        data = bytearray(sdp.encode())
        for _ in range(rng.randrange(1, 40)):
            data[rng.randrange(len(data))] = rng.randrange(32, 127)
        return data.decode("ascii", "replace")
    elif how == 5:  # lines shuffled
        rng.shuffle(lines)
    else:  # an m-line with nothing after it, or with a protocol nobody speaks
        lines.append(rng.choice(["m=video", "m=video 9 UDP/TLS/RTP/SAVPF", "m=application 9 TCP/MSRP *"]))
    return "\r\n".join(lines)


def _hostile(offer: str, rng: random.Random) -> str | bytes:
    """One message: mostly mutated offers, and every other kind of nonsense now and then."""
    kind = rng.randrange(12)
    if kind < 5:
        role = rng.choice(["viewer", "sender"])
        return json.dumps({"type": "offer", "sdp": _mutated_sdp(offer, rng), "role": role})
    if kind == 5:
        candidate = rng.choice(
            [
                "candidate:1 1 UDP 2122252543 999.1.1.1 5000 typ host",
                "candidate:x",
                "candidate:1 1 UDP notanumber 127.0.0.1 5000 typ host",
                "a=candidate:1 1 TCP 1 127.0.0.1 -5 typ relay raddr 0.0.0.0 rport 0",
                "candidate:" + "9" * 2000,
            ]
        )
        fields: dict[str, Any] = rng.choice(
            [{"sdpMid": "0"}, {"sdpMLineIndex": 0}, {}, {"sdpMLineIndex": 1024}]
        )
        return json.dumps({"type": "candidate", "candidate": candidate, **fields})
    if kind == 6:
        return rng.randbytes(rng.randrange(1, 4096))  # binary frame
    if kind == 7:
        return json.dumps(
            {"type": "offer", "sdp": "v=0\r\n" + "a=x\r\n" * 30_000, "role": "viewer"}
        )  # > 128 KB
    if kind == 8:
        return "[" * 5000 + "]" * 5000  # deep JSON
    if kind == 9:
        return json.dumps({"type": rng.choice(["answer", "OFFER", "", "bye " * 30, None, 7])})
    if kind == 10:
        return json.dumps({"type": "offer", "sdp": offer, "role": rng.choice(["admin", "", None, 1])})
    return json.dumps({"type": "candidate", "candidate": None, "sdpMid": "x" * 100})


async def _replies_until_pong(ws: ClientConnection) -> list[dict[str, Any]]:
    replies = []
    while (reply := json.loads(await asyncio.wait_for(ws.recv(), WAIT))) != {"type": "pong"}:
        replies.append(reply)
    return replies


def test_hostile_signalling_is_refused_and_the_session_survives(served: Served) -> None:
    async def scenario() -> dict[str, int]:
        session_id = (
            await served.acall("POST", "sono1", "/api/live-sessions", {"consult_id": served.consult_id})
        ).json()["id"]
        offer = await _real_offer()
        rng = random.Random(SEED)
        seen: dict[str, int] = {}
        ws = await open_socket(served, "specialist", session_id)
        for round_ in range(ROUNDS):
            await ws.send(_hostile(offer, rng))
            await ws.send(PING)  # candidates taken are not acknowledged: the pong says all was read
            for reply in await _replies_until_pong(ws):
                assert reply["type"] in ("answer", "error"), (round_, reply)
                code = "answer" if reply["type"] == "answer" else reply["problem"]["code"]
                if reply["type"] == "error":
                    assert reply["problem"]["status"] < 500 or code == "session-full", (round_, reply)
                seen[code] = seen.get(code, 0) + 1
        await ws.close()

        # The session is whole: a sender's picture reaches a viewer.
        sender = await join(served, "sono1", session_id, "sender")
        viewer = await join(served, "specialist2", session_id, "viewer")
        await frame_where(await viewer.track("video"), looks_like(RED))
        for participant in (sender, viewer):
            await participant.close()
        await served.acall("POST", "sono1", f"/api/live-sessions/{session_id}/end")
        return seen

    seen = asyncio.run(scenario())
    # The stream really was hostile: most of it refused, for several reasons.
    assert sum(count for code, count in seen.items() if code != "answer") > ROUNDS // 2, seen
    assert len(seen) >= 3, seen
