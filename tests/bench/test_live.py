"""bench/live's frame stamp survives aiortc's own VP8 encoder and decoder, and is read back exactly.

The benchmark itself (``python -m bench.live``) starts a server and runs for
minutes; this checks only the part everything else rests on: a stamp read
wrongly would give a wrong latency, one not read would look like a lost frame.
"""

from __future__ import annotations

import asyncio

import pytest
from aiortc.codecs.vpx import Vp8Decoder, Vp8Encoder, vp8_depayload
from aiortc.jitterbuffer import JitterFrame

from bench.live.stamp import StampTrack, read_stamp
from bench.live.viewers import codec_of


@pytest.mark.parametrize(("width", "height"), [(640, 480), (1280, 720)])
def test_stamp_survives_vp8_at_the_starting_bit_rate(width: int, height: int) -> None:
    async def frames() -> list[int | None]:
        track = StampTrack(width, height, fps=1000)  # no pacing to speak of
        encoder, decoder = Vp8Encoder(), Vp8Decoder()  # 500 kbps: aiortc's starting rate
        seen: list[int | None] = []
        for _ in range(12):
            payloads, timestamp = encoder.encode(await track.recv())
            data = b"".join(vp8_depayload(payload) for payload in payloads)
            seen.extend(read_stamp(frame) for frame in decoder.decode(JitterFrame(data, timestamp)))
        track.stop()
        assert len(track.sent) == 12
        return seen

    assert asyncio.run(frames()) == list(range(12))


def test_codec_of_reads_the_first_payload_type_of_the_video_line() -> None:
    sdp = "\r\n".join(
        [
            "v=0",
            "m=audio 9 UDP/TLS/RTP/SAVPF 111",
            "a=rtpmap:111 opus/48000/2",
            "m=video 9 UDP/TLS/RTP/SAVPF 102 97 98",
            "a=rtpmap:97 VP8/90000",
            "a=rtpmap:102 H264/90000",
        ]
    )
    assert codec_of(sdp) == "H264"
