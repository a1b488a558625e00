"""Tracks the server makes itself: the viewers' voices mixed into one, for the sender.

The sender holds one peer connection with one audio track coming back, so
every specialist's voice has to be in that one track: ``VoiceMix`` reads
each viewer's remote audio, resamples it to 48 kHz stereo, and every 20 ms
adds up what each voice has buffered. A voice that falls silent (or
stalls) adds silence; one that runs ahead is cut back to ``max_delay`` so
the delay never grows during a long exam.
"""

from __future__ import annotations

import asyncio
import fractions
import logging
from collections.abc import Hashable

import numpy as np
from aiortc.mediastreams import AUDIO_PTIME, MediaStreamError, MediaStreamTrack
from av import AudioFrame, AudioResampler

__all__ = ["VoiceMix"]

logger = logging.getLogger(__name__)

SAMPLE_RATE = 48000
CHANNELS = 2
SAMPLES_PER_FRAME = int(SAMPLE_RATE * AUDIO_PTIME)  # 960: one 20 ms Opus frame
_BYTES_PER_FRAME = SAMPLES_PER_FRAME * CHANNELS * 2  # s16
_TIME_BASE = fractions.Fraction(1, SAMPLE_RATE)


class _Voice:
    """One viewer's audio, decoded and resampled into a byte buffer the mix drains."""

    def __init__(self, track: MediaStreamTrack, limit: int, name: str) -> None:
        self.buffer = bytearray()
        self.limit = limit
        self.resampler = AudioResampler(format="s16", layout="stereo", rate=SAMPLE_RATE)
        self.task = asyncio.get_running_loop().create_task(self._run(track), name=name)

    async def _run(self, track: MediaStreamTrack) -> None:
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            if not isinstance(frame, AudioFrame):
                continue
            for resampled in self.resampler.resample(frame):
                self.buffer += resampled.to_ndarray().tobytes()
            if len(self.buffer) > self.limit:
                del self.buffer[: len(self.buffer) - self.limit]

    def take(self) -> np.ndarray | None:
        """The next 20 ms of this voice (int32, to add up without overflow), or None if it has none."""
        if len(self.buffer) < _BYTES_PER_FRAME:
            return None
        chunk = np.frombuffer(bytes(self.buffer[:_BYTES_PER_FRAME]), dtype=np.int16).astype(np.int32)
        del self.buffer[:_BYTES_PER_FRAME]
        return chunk


class VoiceMix(MediaStreamTrack):
    """An audio track paced at 20 ms frames: the sum of the voices added to it (silence with none).

    Parameters
    ----------
    name
        For task names and log lines (the session id).
    max_delay
        Seconds of audio a voice may have buffered before its oldest samples are dropped.
    """

    kind = "audio"

    def __init__(self, *, name: str, max_delay: float = 0.2) -> None:
        if max_delay < AUDIO_PTIME:
            raise ValueError(f"max_delay must be at least {AUDIO_PTIME} s, not {max_delay}")
        super().__init__()
        self.name = name
        self._limit = int(max_delay / AUDIO_PTIME) * _BYTES_PER_FRAME
        self._voices: dict[Hashable, _Voice] = {}
        self._start: float | None = None
        self._pts = 0

    def __len__(self) -> int:
        return len(self._voices)

    def add(self, key: Hashable, track: MediaStreamTrack) -> None:
        """Mix ``track`` in (replacing the voice ``key`` had before)."""
        self.remove(key)
        if self.readyState == "live":
            self._voices[key] = _Voice(track, self._limit, f"live {self.name} voice {key}")

    def remove(self, key: Hashable) -> None:
        voice = self._voices.pop(key, None)
        if voice is not None:
            voice.task.cancel()

    async def recv(self) -> AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        loop = asyncio.get_running_loop()
        if self._start is None:
            self._start = loop.time()
        else:
            self._pts += SAMPLES_PER_FRAME
            wait = self._start + self._pts / SAMPLE_RATE - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            if self.readyState != "live":
                raise MediaStreamError
        mixed = np.zeros(SAMPLES_PER_FRAME * CHANNELS, dtype=np.int32)
        for voice in self._voices.values():
            chunk = voice.take()
            if chunk is not None:
                mixed += chunk
        samples = np.clip(mixed, -32768, 32767).astype(np.int16).reshape(1, -1)
        frame = AudioFrame.from_ndarray(samples, format="s16", layout="stereo")
        frame.sample_rate = SAMPLE_RATE
        frame.pts = self._pts
        frame.time_base = _TIME_BASE
        return frame

    def stop(self) -> None:
        for key in list(self._voices):
            self.remove(key)
        super().stop()
