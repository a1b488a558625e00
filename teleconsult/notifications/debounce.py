"""``instance.stored`` → ``study.stored``: one event per study, not one per instance.

A device sends a study as tens to thousands of instances within seconds; a
browser wants to hear "study X has (new) images", not every instance. The
rule, per study and source organisation:

- the first instance of a quiet study is announced **at once** (leading
  edge), so the first image reaches the specialist without delay;
- instances arriving within ``window`` seconds after an announcement are
  counted and announced together when the window ends (trailing edge), then
  a new window starts; so a study being received produces at most one event
  per window, and the last one always follows its last instance;
- a study with no new instance for one whole window is forgotten: its next
  instance is announced at once again.

Pure and clock-driven (``now`` is passed in), so the rule is tested without
waiting; the hub's dispatcher thread owns one instance.
"""

from __future__ import annotations

import heapq
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from teleconsult.events import Event
from teleconsult.notifications.protocol import PublicEventType

__all__ = ["DEFAULT_WINDOW_SECONDS", "StudyCoalescer"]

DEFAULT_WINDOW_SECONDS = 2.0

_Key = tuple[str, str]  # (study instance UID, source organisation)


@dataclass(slots=True)
class _Held:
    """Instances stored since the study's last announcement."""

    count: int = 0
    series: set[str] = field(default_factory=set)
    calling_ae_title: str = ""
    time: datetime | None = None

    def add(self, data: dict[str, Any], time: datetime) -> None:
        self.count += 1
        if data.get("series_instance_uid"):
            self.series.add(str(data["series_instance_uid"]))
        self.calling_ae_title = str(data.get("calling_ae_title") or "")
        self.time = time


class StudyCoalescer:
    def __init__(self, window: float = DEFAULT_WINDOW_SECONDS) -> None:
        if window < 0:
            raise ValueError(f"window must be 0 or more seconds, not {window}")
        self.window = window
        self._held: dict[_Key, _Held] = {}
        # One entry per remembered study: when its window ends.
        self._ends: list[tuple[float, _Key]] = []

    def __len__(self) -> int:
        """Studies remembered (announced within the last window)."""
        return len(self._held)

    def add(self, event: Event, now: float) -> Event | None:
        """The ``study.stored`` to send now for this ``instance.stored``, or None while it is held."""
        data = event.data
        uid = data.get("study_instance_uid")
        if not uid:
            return None
        key = (str(uid), str(data.get("source_organisation") or ""))
        held = self._held.get(key)
        if held is not None and self.window > 0:
            held.add(data, event.time)
            return None
        fresh = _Held()
        fresh.add(data, event.time)
        if self.window > 0:
            self._held[key] = _Held()
            heapq.heappush(self._ends, (now + self.window, key))
        return _announce(key, fresh)

    def next_due(self) -> float | None:
        """When ``due`` next has something to do (a window ends)."""
        return self._ends[0][0] if self._ends else None

    def due(self, now: float) -> list[Event]:
        """Announcements of studies whose window has ended with instances held; quiet ones forgotten."""
        out: list[Event] = []
        while self._ends and self._ends[0][0] <= now:
            _, key = heapq.heappop(self._ends)
            held = self._held.pop(key)
            if held.count:
                out.append(_announce(key, held))
                self._held[key] = _Held()
                heapq.heappush(self._ends, (now + self.window, key))
        return out


def _announce(key: _Key, held: _Held) -> Event:
    assert held.time is not None
    return Event(
        type=PublicEventType.STUDY_STORED,
        id=uuid.uuid4().hex,
        time=held.time,
        data={
            "study_instance_uid": key[0],
            "source_organisation": key[1],
            "instances": held.count,
            "series_instance_uids": sorted(held.series),
            "calling_ae_title": held.calling_ae_title,
        },
    )
