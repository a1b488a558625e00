"""The relay from gateway worker processes: a worker's events appear on the parent's bus."""

from __future__ import annotations

import multiprocessing
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from teleconsult.events import Event, EventBus
from teleconsult.notifications import UnixDatagramEndpoint, UnixDatagramReceiver
from teleconsult.notifications.relay import decode_event, encode_event


def _worker(endpoint: UnixDatagramEndpoint, count: int) -> None:
    """What a gateway worker does: its own bus, with the relay's sender subscribed."""
    bus = EventBus()
    sender = endpoint.connect()
    bus.subscribe(sender)
    for i in range(count):
        bus.publish(Event(type="instance.stored", data={"study_instance_uid": f"1.2.{i}", "n": i}))
    sender.close()


class _Collected:
    def __init__(self, bus: EventBus) -> None:
        self.events: list[Event] = []
        self._arrived = threading.Condition()
        bus.subscribe(self._add)

    def _add(self, event: Event) -> None:
        with self._arrived:
            self.events.append(event)
            self._arrived.notify_all()

    def wait_for(self, count: int, timeout: float = 20) -> list[Event]:
        with self._arrived:
            assert self._arrived.wait_for(lambda: len(self.events) >= count, timeout), len(self.events)
            return list(self.events)


@pytest.fixture
def parent_bus() -> EventBus:
    return EventBus()


@pytest.fixture
def receiver(parent_bus: EventBus) -> Iterator[UnixDatagramReceiver]:
    relay = UnixDatagramReceiver(parent_bus)
    relay.start()
    yield relay
    relay.stop()


def test_events_keep_type_id_time_and_data() -> None:
    event = Event(
        type="instance.stored",
        data={"study_instance_uid": "1.2.3", "calling_ae_title": "超声", "version": 2},
        time=datetime(2026, 11, 24, 8, 0, 1, 250000, tzinfo=UTC),
    )
    assert decode_event(encode_event(event)) == event
    with pytest.raises(ValueError, match="not an event"):
        decode_event(b"[1, 2]")


def test_a_spawned_workers_events_are_republished_on_the_parent_bus(
    parent_bus: EventBus, receiver: UnixDatagramReceiver
) -> None:
    collected = _Collected(parent_bus)
    context = multiprocessing.get_context("spawn")  # as GatewayWorkers starts them
    workers = [context.Process(target=_worker, args=(receiver.endpoint, 50)) for _ in range(2)]
    for process in workers:
        process.start()
    for process in workers:
        process.join(30)
        assert process.exitcode == 0
    events = collected.wait_for(100)
    assert len(events) == 100
    assert sorted(e.data["n"] for e in events) == sorted(list(range(50)) * 2)
    assert {e.type for e in events} == {"instance.stored"}
    assert receiver.received == 100


def test_a_restarted_worker_reaches_the_same_receiver(
    parent_bus: EventBus, receiver: UnixDatagramReceiver
) -> None:
    collected = _Collected(parent_bus)
    context = multiprocessing.get_context("spawn")
    for _ in range(2):  # one after the other, as the parent restarts a worker that died
        process = context.Process(target=_worker, args=(receiver.endpoint, 3))
        process.start()
        process.join(30)
        assert process.exitcode == 0
    assert len(collected.wait_for(6)) == 6


def test_a_worker_whose_parent_is_gone_drops_events_without_failing() -> None:
    bus = EventBus()
    relay = UnixDatagramReceiver(bus)
    endpoint = relay.endpoint
    relay.stop()  # the parent's socket is gone
    sender = endpoint.connect()
    started = time.monotonic()
    for i in range(3):
        sender(Event(type="instance.stored", data={"study_instance_uid": f"1.{i}"}))
    assert time.monotonic() - started < 1
    assert (sender.sent, sender.failed) == (0, 3)
    sender.close()


def test_stop_ends_the_receiving_thread(parent_bus: EventBus) -> None:
    relay = UnixDatagramReceiver(parent_bus)
    relay.start()
    relay.stop()
    assert not [t for t in threading.enumerate() if t.name == "event-relay"]
