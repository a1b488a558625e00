"""The study.stored rule: at once for a quiet study, then at most one per window, the last one always sent."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from teleconsult.events import Event
from teleconsult.notifications import StudyCoalescer

T0 = datetime(2026, 11, 24, 8, 0, tzinfo=UTC)


def _stored(study: str, series: str = "1.2.3", organisation: str = "TOWN01", at: float = 0.0) -> Event:
    return Event(
        type="instance.stored",
        data={
            "study_instance_uid": study,
            "series_instance_uid": series,
            "source_organisation": organisation,
            "calling_ae_title": "TOWNUS",
        },
        time=T0 + timedelta(seconds=at),
    )


def test_the_first_instance_is_announced_at_once() -> None:
    coalescer = StudyCoalescer(window=2.0)
    announced = coalescer.add(_stored("1.1"), now=100.0)
    assert announced is not None
    assert announced.type == "study.stored"
    assert announced.data == {
        "study_instance_uid": "1.1",
        "source_organisation": "TOWN01",
        "instances": 1,
        "series_instance_uids": ["1.2.3"],
        "calling_ae_title": "TOWNUS",
    }
    assert announced.time == T0
    assert coalescer.next_due() == 102.0


def test_more_instances_within_the_window_are_announced_together_at_its_end() -> None:
    coalescer = StudyCoalescer(window=2.0)
    assert coalescer.add(_stored("1.1"), now=100.0) is not None
    for i, now in enumerate((100.1, 100.5, 101.9)):
        assert coalescer.add(_stored("1.1", series=f"1.2.{i % 2}", at=now - 100), now=now) is None
    assert coalescer.due(101.99) == []
    (batch,) = coalescer.due(102.0)
    assert batch.data["instances"] == 3
    assert batch.data["series_instance_uids"] == ["1.2.0", "1.2.1"]
    assert batch.time == T0 + timedelta(seconds=1.9)  # the last instance's time
    # A new window started with that announcement; nothing arrived in it: the study is forgotten.
    assert coalescer.next_due() == 102.0 + 2.0
    assert coalescer.due(104.0) == []
    assert len(coalescer) == 0
    assert coalescer.add(_stored("1.1"), now=104.5) is not None


def test_a_long_transfer_gets_one_announcement_per_window() -> None:
    coalescer = StudyCoalescer(window=1.0)
    announced = []
    now = 0.0
    for _ in range(100):  # one instance every 50 ms for 5 s
        event = coalescer.add(_stored("1.1"), now=now)
        if event is not None:
            announced.append(event)
        announced.extend(coalescer.due(now))
        now += 0.05
    announced.extend(coalescer.due(now + 10))
    assert len(announced) in (5, 6)
    assert sum(e.data["instances"] for e in announced) == 100
    assert announced[0].data["instances"] == 1


def test_studies_and_organisations_are_kept_apart() -> None:
    coalescer = StudyCoalescer(window=2.0)
    assert coalescer.add(_stored("1.1"), now=0) is not None
    assert coalescer.add(_stored("1.2"), now=0.1) is not None
    assert coalescer.add(_stored("1.1", organisation="TOWN02"), now=0.2) is not None
    assert coalescer.add(_stored("1.1"), now=0.3) is None
    assert [e.data["study_instance_uid"] for e in coalescer.due(5)] == ["1.1"]


def test_window_zero_announces_every_instance() -> None:
    coalescer = StudyCoalescer(window=0)
    assert all(coalescer.add(_stored("1.1"), now=t / 10) is not None for t in range(5))
    assert coalescer.next_due() is None


def test_instances_without_a_study_are_ignored_and_a_negative_window_refused() -> None:
    assert StudyCoalescer().add(Event(type="instance.stored", data={}), now=0) is None
    with pytest.raises(ValueError, match="window"):
        StudyCoalescer(window=-1)
