"""A running gateway on 127.0.0.1, on a free port, stopped after each test."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest
from pynetdicom.transport import ThreadedAssociationServer

from dicom_gateway.ae import start_gateway
from teleconsult.config import Settings
from teleconsult.events import EventBus
from teleconsult.storage.store import InstanceStore


@dataclass
class RunningGateway:
    settings: Settings
    store: InstanceStore
    server: ThreadedAssociationServer

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])


@pytest.fixture
def start(make_settings, bus: EventBus) -> Iterator[Callable[..., RunningGateway]]:  # type: ignore[no-untyped-def]
    started: list[RunningGateway] = []

    def _start(**overrides: object) -> RunningGateway:
        settings = make_settings(**overrides)
        store = InstanceStore(settings, bus)
        store.open()
        server = start_gateway(settings, store, host="127.0.0.1", port=0)
        running = RunningGateway(settings, store, server)
        started.append(running)
        return running

    yield _start
    for running in started:
        running.server.shutdown()
        running.store.close()


@pytest.fixture
def gateway(start: Callable[..., RunningGateway]) -> RunningGateway:
    return start()
