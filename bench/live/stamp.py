"""Frames that carry their sequence number in their pixels, and the reading of it after a codec.

The sender's track draws, on a moving speckle picture (an ultrasound sector
with some probe motion, so that the encoder has real work at every frame),
a strip of 24 blocks of 32x32 pixels at the top left: 16 bits of the frame's
sequence number and 8 check bits (CRC-32 of those two bytes, low byte), white
(Y 235) for 1 and black (Y 16) for 0, with neutral chroma. The blocks sit on
VP8's and H.264's 16-pixel macroblock grid, so a lossy encode at any usable
bit rate keeps each block's centre on its side of mid-grey; the reader
averages the central 16x16 of each block and thresholds at 128. A strip whose
check bits do not match reads as None (counted, never guessed).

The track notes ``time.monotonic()`` as it hands each frame out (that is,
to the encoder: "the glass"), keyed by sequence number; the receiver notes
``time.monotonic()`` when its ``recv()`` returns the decoded frame. On Linux
``CLOCK_MONOTONIC`` is one clock for every process of the machine, so the
two may be in different processes.
"""

from __future__ import annotations

import asyncio
import fractions
import math
import time
import zlib

import numpy as np
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from av import VideoFrame

__all__ = ["BLOCK", "STAMP_BITS", "StampTrack", "draw_stamp", "read_stamp", "speckle"]

BLOCK = 32  # pixels per side of one bit's block (a multiple of the 16-pixel macroblock)
_ORIGIN = 16  # the strip's top-left corner, on the macroblock grid, off the picture's very edge
SEQ_BITS = 16
CHECK_BITS = 8
STAMP_BITS = SEQ_BITS + CHECK_BITS
_BLACK, _WHITE = 16, 235  # video-range luma
_CLOCK = 90000
_TIME_BASE = fractions.Fraction(1, _CLOCK)


def _bits(seq: int) -> list[int]:
    seq &= (1 << SEQ_BITS) - 1
    check = zlib.crc32(seq.to_bytes(2, "big")) & 0xFF
    value = (seq << CHECK_BITS) | check
    return [(value >> (STAMP_BITS - 1 - i)) & 1 for i in range(STAMP_BITS)]


def _layout(width: int) -> tuple[int, int]:
    """(columns, rows) of blocks: as many per row as fit the picture's width."""
    columns = min(STAMP_BITS, (width - 2 * _ORIGIN) // BLOCK)
    if columns < 1:
        raise ValueError(f"a picture {width} pixels wide has no room for the stamp")
    return columns, math.ceil(STAMP_BITS / columns)


def check_size(width: int, height: int) -> None:
    """ValueError unless a ``width`` x ``height`` picture can carry the stamp (and is codec-friendly)."""
    if width % 16 or height % 16:
        raise ValueError(f"size {width}x{height}: width and height must be multiples of 16")
    _columns, rows = _layout(width)
    if _ORIGIN + rows * BLOCK > height:
        raise ValueError(f"size {width}x{height}: too small for the stamp")


def draw_stamp(luma: np.ndarray, chroma_u: np.ndarray, chroma_v: np.ndarray, seq: int) -> None:
    """Write ``seq``'s stamp into the planes of a yuv420p picture (in place)."""
    columns, _rows = _layout(luma.shape[1])
    for i, bit in enumerate(_bits(seq)):
        y = _ORIGIN + (i // columns) * BLOCK
        x = _ORIGIN + (i % columns) * BLOCK
        luma[y : y + BLOCK, x : x + BLOCK] = _WHITE if bit else _BLACK
        chroma_u[y // 2 : (y + BLOCK) // 2, x // 2 : (x + BLOCK) // 2] = 128
        chroma_v[y // 2 : (y + BLOCK) // 2, x // 2 : (x + BLOCK) // 2] = 128


def read_stamp(frame: VideoFrame) -> int | None:
    """The sequence number stamped into a decoded frame (mod 2**16), or None if it does not check."""
    plane = frame.planes[0]
    luma = np.frombuffer(plane, dtype=np.uint8).reshape(-1, plane.line_size)
    columns, _rows = _layout(frame.width)
    margin = BLOCK // 4
    value = 0
    for i in range(STAMP_BITS):
        y = _ORIGIN + (i // columns) * BLOCK + margin
        x = _ORIGIN + (i % columns) * BLOCK + margin
        centre = luma[y : y + BLOCK - 2 * margin, x : x + BLOCK - 2 * margin]
        value = (value << 1) | int(centre.mean() > 128)
    seq = value >> CHECK_BITS
    if value & 0xFF != zlib.crc32(seq.to_bytes(2, "big")) & 0xFF:
        return None
    return seq


def speckle(width: int, height: int, pad: int, seed: int = 7) -> np.ndarray:
    """A speckle texture (pad pixels larger on each side) inside a sector, dark outside: luma, uint8."""
    rng = np.random.default_rng(seed)
    h, w = height + 2 * pad, width + 2 * pad
    grain = rng.rayleigh(40.0, size=(h // 2 + 1, w // 2 + 1))
    grain = np.repeat(np.repeat(grain, 2, axis=0), 2, axis=1)[:h, :w]
    smooth = (grain + np.roll(grain, 1, 0) + np.roll(grain, 1, 1) + np.roll(grain, (1, 1), (0, 1))) / 4
    yy, xx = np.mgrid[0:h, 0:w]
    apex_x, apex_y = w / 2, -0.1 * h
    angle = np.abs(np.arctan2(xx - apex_x, yy - apex_y))
    depth = np.hypot(xx - apex_x, yy - apex_y) / h
    inside = (angle < 0.6) & (depth > 0.2) & (depth < 1.05)
    gain = np.clip(1.4 - depth, 0.3, 1.2)
    picture = np.where(inside, smooth * gain, 0.0) + 16
    return np.clip(picture, 16, 235).astype(np.uint8)


class StampTrack(MediaStreamTrack):
    """Video at exactly ``fps``, each frame stamped with its sequence number; ``sent[seq]`` is its time.

    Frames are produced on the schedule ``start + seq / fps`` (a late one is
    produced at once, never skipped, and timed when it is produced). The
    picture moves along a slow circle over a speckle texture, like a probe
    held by hand, so every frame differs from the last.
    """

    kind = "video"

    def __init__(self, width: int, height: int, fps: float) -> None:
        check_size(width, height)
        if fps <= 0:
            raise ValueError(f"fps must be positive, not {fps}")
        super().__init__()
        self.width, self.height, self.fps = width, height, fps
        self.sent: dict[int, float] = {}
        self._pad = 24
        self._texture = speckle(width, height, self._pad)
        self._seq = 0
        self._start: float | None = None

    async def recv(self) -> VideoFrame:
        if self.readyState != "live":
            raise MediaStreamError
        now = time.monotonic()
        if self._start is None:
            self._start = now
        wait = self._start + self._seq / self.fps - now
        if wait > 0:
            await asyncio.sleep(wait)
        if self.readyState != "live":
            raise MediaStreamError
        seq = self._seq
        frame = VideoFrame.from_ndarray(self._picture(seq), format="yuv420p")
        frame.pts = round(seq * _CLOCK / self.fps)
        frame.time_base = _TIME_BASE
        self._seq += 1
        self.sent[seq & ((1 << SEQ_BITS) - 1)] = time.monotonic()
        return frame

    def _picture(self, seq: int) -> np.ndarray:
        w, h, pad = self.width, self.height, self._pad
        phase = 2 * math.pi * seq / (4 * self.fps)  # one circle every 4 seconds
        dx = round(pad + (pad - 1) * math.cos(phase))
        dy = round(pad + (pad - 1) * math.sin(phase))
        picture = np.empty((h * 3 // 2, w), dtype=np.uint8)
        luma = picture[:h]
        luma[:] = self._texture[dy : dy + h, dx : dx + w]
        chroma = picture[h:].reshape(h // 2, w)  # U then V, each (h/2) x (w/2), packed row by row
        chroma[:] = 128
        u = picture[h : h + h // 4].reshape(h // 2, w // 2)
        v = picture[h + h // 4 :].reshape(h // 2, w // 2)
        draw_stamp(luma, u, v, seq)
        return picture
